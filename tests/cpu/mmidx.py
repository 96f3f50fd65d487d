"""Writes Megatron's indexed dataset (PREFIX.bin / PREFIX.idx, MMIDIDX version 1) for tests, one
sequence per document, as tools/preprocess_data.py writes without sentence splitting. Standard
library only (tests that do not need numpy use it too)."""
import struct

# dtype code -> struct format (backends/executor/indexed_dataset.h)
FORMATS = {1: "B", 2: "b", 3: "h", 4: "i", 5: "q", 6: "d", 7: "f", 8: "H"}


def write_dataset(prefix, docs, dtype_code=8):
    fmt = FORMATS[dtype_code]
    pointers, offset = [], 0
    with open(prefix + ".bin", "wb") as f:
        for d in docs:
            pointers.append(offset)
            f.write(struct.pack(f"<{len(d)}{fmt}", *d))
            offset += len(d) * struct.calcsize(fmt)
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00")
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", dtype_code))
        f.write(struct.pack("<Q", len(docs)))
        f.write(struct.pack("<Q", len(docs) + 1))
        f.write(struct.pack(f"<{len(docs)}i", *[len(d) for d in docs]))
        f.write(struct.pack(f"<{len(docs)}q", *pointers))
        f.write(struct.pack(f"<{len(docs) + 1}q", *range(len(docs) + 1)))
