#!/usr/bin/env python3
"""tandem's sample order equals Megatron-Core's: for small synthetic .bin/.idx datasets, the first
1,000 training samples (token ids) that tandem's data path yields are those of a numpy reference
written from Megatron's published algorithm (megatron_gpt_reference.py), for one dataset with
--split 969,30,1 and seed 1234, a small dataset drawn for many epochs (with and without a separate
final epoch), weighted blends of two and three datasets, a size-weighted blend, another seed and
split, and the validation split. Also: tandem's numpy-compatible generator gives numpy's exact
32-bit outputs and shuffles for several seeds (numpy run here, not hard-coded values).

usage: gpt_sample_order_test.py --driver GPT_DATASET_DRIVER   (skipped, exit 77, without numpy)"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy
except ImportError:
    print("numpy not available: skipped")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import megatron_gpt_reference as ref  # noqa: E402

SEQ = 32
GLOBAL_BATCH = 8
TRAIN_ITERS = 125          # 1,000 training samples
EVAL_INTERVAL, EVAL_ITERS = 50, 4
FIRST = 1000
MODEL = ("--num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length {s} --max-position-embeddings {s} "
         "--vocab-size 65536 --make-vocab-size-divisible-by 64 --micro-batch-size 2 --global-batch-size {g} "
         "--train-iters {t} --eval-interval {ei} --eval-iters {en}").format(s=SEQ, g=GLOBAL_BATCH, t=TRAIN_ITERS,
                                                                            ei=EVAL_INTERVAL, en=EVAL_ITERS)
failures = []


def check(cond, what, detail=""):
    print(("ok: " if cond else "FAILED: ") + what + ("" if cond else "\n" + detail))
    if not cond:
        failures.append(what)


def make_dataset(prefix, docs, lo, hi, first_token, seed):
    """`docs` documents of lo..hi-1 tokens; token ids count up from first_token (mod 65521) so that
    every position of every dataset is distinguishable."""
    rng = numpy.random.default_rng(seed)
    out, t = [], first_token
    for _ in range(docs):
        n = int(rng.integers(lo, hi))
        out.append([(t + i) % 65521 for i in range(n)])
        t += n
    ref.write_mmidx(prefix, out)


def tandem_samples(driver, data_path, split, seed, which="train", count=FIRST):
    cmd = [driver, "samples", str(count), which, "--"] + MODEL.split()
    cmd += ["--data-path"] + data_path + ["--split", split, "--seed", str(seed)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        return None, p.stderr
    return [list(map(int, line.split())) for line in p.stdout.splitlines()], ""


def compare(driver, name, data_path, split, seed, which="train", count=FIRST, expect=None):
    sizes = ref.num_samples_per_split(TRAIN_ITERS, GLOBAL_BATCH, EVAL_INTERVAL, EVAL_ITERS)
    ds = ref.build_split(data_path, split, 0 if which == "train" else 1, sizes, SEQ, seed)
    want = [ds[k].tolist() for k in range(count)]
    if expect:
        expect(ds)
    got, err = tandem_samples(driver, data_path, split, seed, which, count)
    if got is None:
        check(False, name, err)
        return
    first_bad = next((k for k in range(count) if k >= len(got) or got[k] != want[k]), None)
    check(first_bad is None and len(got) == count, f"{name}: first {count} {which} samples equal Megatron's",
          "" if first_bad is None else f"sample {first_bad}: tandem {got[first_bad] if first_bad < len(got) else None}"
                                       f"\n reference {want[first_bad]}")


def generator(driver):
    for seed in (0, 1, 1234, 2 ** 32 - 1):
        raw = subprocess.run([driver, "raw", str(seed), "2000"], stdout=subprocess.PIPE, text=True, check=True)
        want = numpy.random.RandomState(seed)._bit_generator.random_raw(2000).tolist()
        check(list(map(int, raw.stdout.split())) == want, f"seed {seed}: 2,000 MT19937 outputs equal numpy's")
        for n in (1, 2, 17, 1000, 70000):
            got = subprocess.run([driver, "shuffle", str(seed), str(n)], stdout=subprocess.PIPE, text=True, check=True)
            x = numpy.arange(n, dtype=numpy.int64)
            numpy.random.RandomState(seed).shuffle(x)
            check(list(map(int, got.stdout.split())) == x.tolist(),
                  f"seed {seed}: RandomState.shuffle(arange({n})) equals numpy's")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    driver = ap.parse_args().driver
    generator(driver)
    with tempfile.TemporaryDirectory() as tmp:
        big, small, tiny = (os.path.join(tmp, n) for n in ("big", "small", "tiny"))
        other, third = os.path.join(tmp, "other"), os.path.join(tmp, "third")
        make_dataset(big, 1500, 5, 60, 0, 1)        # ~48k tokens: one epoch of 1,000 samples
        make_dataset(small, 60, 5, 60, 100, 2)      # ~1.9k tokens: many epochs
        make_dataset(tiny, 41, 3, 40, 200, 3)
        make_dataset(other, 700, 20, 90, 30000, 4)
        make_dataset(third, 300, 1, 30, 60000, 5)

        def epochs(separate):
            def expect(ds):
                check(ds.num_epochs > 2 and ds.separate_final_epoch == separate,
                      f"reference draws {ds.num_epochs} epochs, separate final epoch {ds.separate_final_epoch}")
            return expect

        def one_epoch(ds):
            check(ds.num_epochs == 1, f"reference draws one epoch ({len(ds)} samples)")

        compare(driver, "one dataset, --split 969,30,1, seed 1234", [big], "969,30,1", 1234, expect=one_epoch)
        compare(driver, "small dataset, many epochs, separate final epoch", [small], "969,30,1", 1234,
                expect=epochs(True))
        compare(driver, "small dataset, many epochs, no separate final epoch", [small], "100,0,0", 1234,
                expect=epochs(False))
        compare(driver, "blend 0.3 / 0.7 of two datasets", ["0.3", big, "0.7", other], "969,30,1", 1234)
        compare(driver, "blend 2 / 5 / 3 of three datasets (one drawn for many epochs)",
                ["2", big, "5", other, "3", small], "98,2,0", 1234)
        compare(driver, "size-weighted blend of two datasets", [big, other], "969,30,1", 1234)
        compare(driver, "one dataset, seed 7, --split 90,8,2", [big], "90,8,2", 7)
        compare(driver, "blend, seed 99", ["0.5", tiny, "0.5", other], "80,20", 99)
        # validation: (125 // 50 + 1) x 4 x 8 = 96 samples
        compare(driver, "validation split of one dataset", [big], "90,8,2", 1234, which="valid", count=96)
        compare(driver, "validation split of a blend", ["0.3", big, "0.7", other], "90,10", 1234, which="valid",
                count=96)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
