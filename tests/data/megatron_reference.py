"""Megatron-LM's preprocessing output, written here from its published algorithm (independent of
tandem's C++): tools/preprocess_data.py's Encoder.encode (one document per JSON line; each
sentence tokenized, empty sentences dropped, EOD appended to the last sequence of a non-empty
document) and megatron/core/datasets/indexed_dataset.py (DType.optimal_dtype, IndexedDatasetBuilder
.add_document, _IndexWriter.write). Standard library only."""
import struct


def bytes_to_unicode():
    """GPT-2's byte-level alphabet (megatron/training/tokenizer/gpt2_tokenization.py bytes_to_unicode):
    printable bytes map to themselves, the others to 256 + n in order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def optimal_dtype_code(vocab_size):
    """DType.optimal_dtype: numpy.uint16 (code 8) below 65,500 entries, else numpy.int32 (code 4)."""
    return 8 if vocab_size < 65500 else 4


def encode_document(sentence_ids, append_eod, eod):
    """Encoder.encode for one key: sentence_ids is [ids of each sentence]. Returns (ids, lengths)."""
    doc_ids, sentence_lens = [], []
    for ids in sentence_ids:
        if len(ids) > 0:
            doc_ids.extend(ids)
            sentence_lens.append(len(ids))
    if len(doc_ids) > 0 and append_eod:
        doc_ids.append(eod)
        sentence_lens[-1] += 1
    return doc_ids, sentence_lens


def write_indexed_dataset(prefix, documents, vocab_size):
    """documents: [(ids, lengths)] in order. Writes PREFIX.bin and PREFIX.idx."""
    code = optimal_dtype_code(vocab_size)
    fmt, itemsize = ("H", 2) if code == 8 else ("i", 4)
    sequence_lengths, document_indices = [], [0]
    with open(prefix + ".bin", "wb") as f:
        for ids, lengths in documents:
            f.write(struct.pack("<%d%s" % (len(ids), fmt), *ids))
            sequence_lengths.extend(lengths)
            document_indices.append(len(sequence_lengths))
    pointers, at = [], 0
    for n in sequence_lengths:
        pointers.append(at)
        at += n * itemsize
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", code))
        f.write(struct.pack("<Q", len(sequence_lengths)))
        f.write(struct.pack("<Q", len(document_indices)))
        f.write(struct.pack("<%di" % len(sequence_lengths), *sequence_lengths))
        f.write(struct.pack("<%dq" % len(pointers), *pointers))
        f.write(struct.pack("<%dq" % len(document_indices), *document_indices))


def sentences_of(obj, key):
    """The sentences of one key of one JSON line, as Encoder.encode takes them."""
    text = obj[key]
    return text if isinstance(text, list) else [text]
