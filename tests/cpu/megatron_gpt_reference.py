"""A numpy reference of Megatron-Core's GPT sample order, written from its published algorithm
(megatron/core/datasets: gpt_dataset.py, helpers.cpp build_sample_idx / build_blending_indices,
blended_megatron_dataset_builder.py, blended_dataset.py, utils.py, blended_megatron_dataset_config.py),
independent of tandem's C++. It uses numpy.random.RandomState and its shuffle exactly as Megatron does,
so it yields the samples Megatron would feed for the same .bin/.idx files and arguments.

Also a tiny writer of Megatron's MMIDIDX (version 1) .bin/.idx files."""
import math
import re
import struct

import numpy

from mmidx import write_dataset

DTYPES = {1: numpy.uint8, 2: numpy.int8, 3: numpy.int16, 4: numpy.int32, 5: numpy.int64, 6: numpy.float64,
          7: numpy.float32, 8: numpy.uint16}


def write_mmidx(prefix, docs, dtype_code=8):
    """One sequence per document, as preprocess_data.py writes without sentence splitting."""
    write_dataset(prefix, docs, dtype_code)


class IndexedDataset:
    def __init__(self, prefix):
        raw = open(prefix + ".idx", "rb").read()
        assert raw[:9] == b"MMIDIDX\x00\x00" and struct.unpack("<Q", raw[9:17])[0] == 1
        self.dtype = numpy.dtype(DTYPES[raw[17]])
        n = struct.unpack("<Q", raw[18:26])[0]
        self.sequence_lengths = numpy.frombuffer(raw, numpy.int32, n, 34)
        self.sequence_pointers = numpy.frombuffer(raw, numpy.int64, n, 34 + 4 * n)
        self.bin = numpy.memmap(prefix + ".bin", dtype=numpy.uint8, mode="r")

    def get(self, idx, offset=0, length=None):
        if length is None:
            length = self.sequence_lengths[idx] - offset
        start = self.sequence_pointers[idx] + offset * self.dtype.itemsize
        return numpy.frombuffer(self.bin, self.dtype, length, start)


def normalize(weights):
    w = numpy.array(weights, dtype=numpy.float64)
    return (w / numpy.sum(w)).tolist()


def split_matrix(split):
    """parse_and_normalize_split + convert_split_vector_to_split_matrix."""
    vector = list(map(float, re.findall(r"[.0-9]+", split)))
    vector = normalize(vector + [0.0] * (3 - len(vector)))
    expansion = [0]
    for v in vector:
        expansion.append(expansion[-1] + v)
    return [(a, b) if b > a else None for a, b in zip(expansion[:-1], expansion[1:])]


def build_sample_idx(sizes, document_index, seq_length, num_epochs, tokens_per_epoch):
    """helpers.cpp build_sample_idx with drop_last_partial_sequence and one extra token."""
    num_samples = (num_epochs * tokens_per_epoch - 1) // seq_length
    sample_idx = numpy.zeros((num_samples + 1, 2), dtype=numpy.int64)
    doc_i, doc_offset = 0, 0
    for k in range(1, num_samples + 1):
        remaining = seq_length + 1
        while remaining != 0:
            doc_length = int(sizes[document_index[doc_i]]) - doc_offset
            remaining -= doc_length
            if remaining <= 0:
                doc_offset += remaining + doc_length - 1
                remaining = 0
            else:
                if doc_i == len(document_index) - 1:
                    assert k == num_samples
                    doc_offset = int(sizes[document_index[doc_i]]) - 1
                    break
                doc_i += 1
                doc_offset = 0
        sample_idx[k] = (doc_i, doc_offset)
    return sample_idx


def build_document_index(documents, num_epochs, rs, separate_final_epoch):
    if not separate_final_epoch or num_epochs == 1:
        document_index = numpy.mgrid[0:num_epochs, 0:len(documents)][1]
        document_index[:] = documents
        document_index = document_index.reshape(-1).astype(numpy.int32)
        rs.shuffle(document_index)
        return document_index
    first = build_document_index(documents, num_epochs - 1, rs, False)
    last = build_document_index(documents, 1, rs, False)
    return numpy.concatenate((first, last))


def build_shuffle_index(num_samples, total_size, rs):
    first = numpy.arange(0, num_samples, 1, dtype=numpy.uint32)
    rs.shuffle(first)
    if num_samples == total_size:
        return first
    last = numpy.arange(num_samples, total_size, 1, dtype=numpy.uint32)
    rs.shuffle(last)
    return numpy.concatenate((first, last))


class GPTDataset:
    def __init__(self, dataset, indices, num_samples, seq_length, seed):
        self.dataset, self.s = dataset, seq_length
        tokens_per_epoch = int(numpy.sum(dataset.sequence_lengths[indices]))
        num_epochs = 1
        if num_samples is not None:
            tokens = tokens_per_epoch
            while tokens < num_samples * seq_length + 1:
                num_epochs += 1
                tokens += tokens_per_epoch
        separate_final_epoch = False
        if num_epochs > 1:
            sans_final = ((num_epochs - 1) * tokens_per_epoch - 1) // seq_length
            from_final = num_samples - sans_final
            per_epoch = (tokens_per_epoch - 1) // seq_length
            assert 0 <= from_final <= per_epoch + 1
            separate_final_epoch = from_final < int(0.80 * per_epoch)
        self.num_epochs, self.separate_final_epoch = num_epochs, separate_final_epoch
        rs = numpy.random.RandomState(seed)
        self.document_index = build_document_index(indices, num_epochs, rs, separate_final_epoch)
        self.sample_index = build_sample_idx(dataset.sequence_lengths, self.document_index, seq_length, num_epochs,
                                             tokens_per_epoch)
        total = self.sample_index.shape[0] - 1
        self.shuffle_index = build_shuffle_index(sans_final if separate_final_epoch else total, total, rs)

    def __len__(self):
        return self.sample_index.shape[0] - 1

    def __getitem__(self, idx):
        idx = self.shuffle_index[idx]
        beg, beg_offset = self.sample_index[idx]
        end, end_offset = self.sample_index[idx + 1]
        if beg == end:
            parts = [self.dataset.get(self.document_index[beg], beg_offset, end_offset - beg_offset + 1)]
        else:
            parts = []
            for i in range(beg, end + 1):
                offset = 0 if i > beg else beg_offset
                length = None if i < end else end_offset + 1
                parts.append(self.dataset.get(self.document_index[i], offset, length))
        out = numpy.concatenate(parts).astype(numpy.int64)
        assert len(out) == self.s + 1
        return out


def build_blending_indices(weights, size):
    dataset_index = numpy.zeros(size, dtype=numpy.int16)
    dataset_sample_index = numpy.zeros(size, dtype=numpy.int64)
    current = [0] * len(weights)
    for k in range(size):
        at = max(float(k), 1.0)
        errors = [weights[i] * at - current[i] for i in range(len(weights))]
        best = 0
        for i in range(1, len(weights)):
            if errors[i] > errors[best]:
                best = i
        dataset_index[k] = best
        dataset_sample_index[k] = current[best]
        current[best] += 1
    return dataset_index, dataset_sample_index


class BlendedDataset:
    def __init__(self, datasets, weights, size):
        self.datasets, self.size = datasets, size
        self.dataset_index, self.dataset_sample_index = build_blending_indices(normalize(weights), size)

    def __len__(self):
        return self.size

    def __getitem__(self, idx):
        return self.datasets[self.dataset_index[idx]][self.dataset_sample_index[idx]]


def get_blend_from_list(words):
    if len(words) % 2 == 1:
        return words, None
    try:
        return words[1::2], [float(w) for w in words[0::2]]
    except ValueError:
        return words, None


def num_samples_per_split(train_iters, global_batch, eval_interval, eval_iters, train_samples=None):
    """pretrain_gpt's get_train_valid_test_num_samples."""
    train = train_samples if train_samples else train_iters * global_batch
    return [train, (train_iters // eval_interval + 1) * eval_iters * global_batch, eval_iters * global_batch]


def build_split(data_path_words, split, split_id, sizes, seq_length, seed, surplus=0.005):
    """BlendedMegatronDatasetBuilder: the dataset Megatron trains (split_id 0) or validates (1) on."""
    prefixes, weights = get_blend_from_list(data_path_words)
    bookend = split_matrix(split)[split_id]
    assert bookend is not None

    def mid_level(prefix, num_samples):
        ds = IndexedDataset(prefix)
        n = ds.sequence_lengths.shape[0]
        beg, end = int(round(bookend[0] * float(n))), int(round(bookend[1] * float(n)))
        return GPTDataset(ds, numpy.arange(beg, end, 1, dtype=numpy.int32), num_samples, seq_length, seed)

    if len(prefixes) == 1 and weights is None:
        return mid_level(prefixes[0], sizes[split_id])
    if weights is not None:
        weights = normalize(weights)
        target = [int(math.ceil(sizes[split_id] * w)) for w in weights]
        built = [int(math.ceil(math.ceil(sizes[split_id] * w) * (1 + surplus))) for w in weights]
        datasets = [mid_level(p, b) for p, b in zip(prefixes, built)]
        return BlendedDataset(datasets, weights, sum(target))
    datasets = [mid_level(p, None) for p in prefixes]
    lengths = [len(d) for d in datasets]
    return BlendedDataset(datasets, lengths, min(sizes[split_id], sum(lengths)))
