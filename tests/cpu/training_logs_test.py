#!/usr/bin/env python3
"""The logs of `tandem train`, read back by code written here from the published formats:

1. metrics JSONL: one record per iteration with the documented keys; a run killed while it saves
   its last checkpoint and resumed with --load leaves a file whose records equal an uninterrupted
   run's, timings aside (the records written after the checkpoint are dropped and written again);
2. TensorBoard: the event file is a sequence of TFRecords whose two masked CRC32C checksums are
   right (CRC32C computed bit by bit from its definition: reflected Castagnoli polynomial
   0x82F63B78), holding tensorflow.Event protobufs (decoded with a varint reader written here):
   "brain.Event:2" first, then Megatron's scalar tags, whose values equal the JSONL's (as float32),
   at the steps --tensorboard-log-interval chooses; only rank 0 writes (one file for two ranks);
3. --plot: a valid PNG (chunk CRCs, 800x500 RGB), not blank, whose blue training curve goes down
   where the loss does;
4. the console prints Megatron's training_log line, its numbers equal to the JSONL's;
5. bad inputs (--tensorboard-log-interval 0, unwritable --metrics / --plot / --tensorboard-dir):
   one line naming the flag, exit code 2, nothing trained.

usage: training_logs_test.py --tandem BIN   (mpirun from $TANDEM_MPIRUN)"""
import argparse
import json
import math
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_equality import MODELS  # noqa: E402

TRAINING = ("--micro-batch-size 1 --global-batch-size 8 --train-iters 8 --lr 1e-3 --min-lr 1e-4 "
            "--lr-decay-style cosine --lr-warmup-iters 2 --seed 1234 --mock-data --hidden-dropout 0 "
            "--attention-dropout 0 --log-interval 1 --eval-interval 3 --eval-iters 1")
FLAGS = (MODELS["llama"] + " " + TRAINING + " --tensor-model-parallel-size 2").split()
TIMING_KEYS = {"iteration_time_ms", "tokens_per_s", "model_tflops_per_rank", "mfu"}
SCHEMA = ["iteration", "consumed_samples", "global_batch_size", "lm_loss", "lr", "grad_norm", "iteration_time_ms",
          "tokens_per_s", "model_tflops_per_rank", "mfu", "mem_peak_bytes", "mem_allocated_bytes", "eval_loss",
          "skipped"]


def check(cond, what, detail=""):
    if not cond:
        sys.exit("FAILED: " + what + (("\n" + detail) if detail else ""))
    print("ok:", what)


def train(tandem, ranks, own, flags, env=None):
    cmd = [tandem, "train", "--backend", "cpu"] + (["--ranks", str(ranks)] if ranks > 1 else []) + own
    cmd += ["--"] + flags
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def must_train(*args, **kwargs):
    proc = train(*args, **kwargs)
    if proc.returncode != 0:
        sys.exit(f"FAILED: training exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def records(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


# ---- CRC32C from its definition: reflected polynomial 0x82F63B78, initial and final xor 0xFFFFFFFF
def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(crc):   # TFRecord: rotate right by 15, add a constant
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---- protobuf wire format: (field, wire type, value) triples
def varint(buf, pos):
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def fields(buf):
    pos, out = 0, []
    while pos < len(buf):
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            n, pos = varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise ValueError(f"wire type {wire}")
        out.append((field, wire, value))
    return out


def read_events(path):
    """[(wall_time, step, file_version or None, [(tag, simple_value)])], checking every CRC."""
    data = open(path, "rb").read()
    pos, events = 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(crc32c(header)) != len_crc:
            raise ValueError(f"length CRC at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if masked(crc32c(body)) != body_crc:
            raise ValueError(f"data CRC at byte {pos}")
        pos += 16 + length
        wall, step, version, values = None, 0, None, []
        for field, wire, value in fields(body):
            if field == 1 and wire == 1:
                (wall,) = struct.unpack("<d", value)
            elif field == 2 and wire == 0:
                step = value
            elif field == 3 and wire == 2:
                version = value.decode()
            elif field == 5 and wire == 2:
                for f, w, v in fields(value):
                    if f == 1 and w == 2:
                        parts = {ff: vv for ff, ww, vv in fields(v)}
                        values.append((parts[1].decode(), struct.unpack("<f", parts[2])[0]))
        events.append((wall, step, version, values))
    return events


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check_tensorboard(tb_dir, recs, tb_interval):
    files = sorted(os.listdir(tb_dir))
    check(len(files) == 1 and files[0].startswith("events.out.tfevents."),
          "one event file for two ranks (rank 0 writes), named events.out.tfevents.*", str(files))
    events = read_events(os.path.join(tb_dir, files[0]))
    check(events[0][2] == "brain.Event:2" and events[0][0] > 1.6e9,
          "both masked CRC32Cs of every record are right; the first event is file_version brain.Event:2")
    scalars = {}
    for _, step, _, values in events[1:]:
        for tag, value in values:
            scalars.setdefault(tag, {})[step] = value
    by_it = {r["iteration"]: r for r in recs}
    logged = [i for i in by_it if i % tb_interval == 0]
    for tag, key in [("lm loss", "lm_loss"), ("learning-rate", "lr"), ("grad-norm", "grad_norm"),
                     ("batch-size", "global_batch_size"), ("mem-max-allocated-bytes", "mem_peak_bytes"),
                     ("mem-allocated-bytes", "mem_allocated_bytes")]:
        got = scalars.get(tag, {})
        check(sorted(got) == logged and all(got[i] == f32(by_it[i][key]) for i in logged),
              f"'{tag}' at steps {logged} equals the JSONL's {key}", f"{got}")
        vs = scalars.get(tag + " vs samples", {}) if tag.startswith(("lm", "learning", "grad", "batch")) else None
        if vs is not None:
            check(sorted(vs) == [by_it[i]["consumed_samples"] for i in logged],
                  f"'{tag} vs samples' is stepped by consumed samples")
    times = scalars.get("iteration-time", {})
    check(sorted(times) == sorted(by_it) and all(times[i] == f32(by_it[i]["iteration_time_ms"] / 1e3) for i in by_it),
          "'iteration-time' (--log-timers-to-tensorboard, --log-interval 1) equals iteration_time_ms / 1000")
    evals = {r["iteration"]: r["eval_loss"] for r in recs if r["eval_loss"] is not None}
    val, ppl = scalars.get("lm loss validation", {}), scalars.get("lm loss validation ppl", {})
    check(sorted(val) == sorted(evals) and all(val[i] == f32(v) for i, v in evals.items()),
          f"'lm loss validation' at iterations {sorted(evals)} equals eval_loss")
    check(all(ppl[i] == f32(math.exp(min(20.0, v))) for i, v in evals.items()) and sorted(ppl) == sorted(evals),
          "'lm loss validation ppl' = exp(eval_loss)")


def read_png(path):
    data = open(path, "rb").read()
    check(data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature")
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) != crc:
            sys.exit(f"FAILED: CRC of PNG chunk {kind} at byte {pos}")
        chunks.append((kind, body))
        pos += 12 + n
    check([k for k, _ in chunks][0] == b"IHDR" and chunks[-1][0] == b"IEND", "PNG chunks in order, CRCs right")
    w, h, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    rows = []
    for y in range(h):
        row = raw[y * (1 + 3 * w):(y + 1) * (1 + 3 * w)]
        if row[0] != 0:
            sys.exit(f"FAILED: row {y} uses PNG filter {row[0]}; this reader expects filter 0")
        rows.append([tuple(row[1 + 3 * x:4 + 3 * x]) for x in range(w)])
    return w, h, depth, colour, rows


def check_plot(path, recs):
    w, h, depth, colour, rows = read_png(path)
    check((w, h, depth, colour) == (800, 500, 8, 2), "the plot is 800x500, 8-bit RGB", str((w, h, depth, colour)))
    ink = sum(1 for row in rows for p in row if p != (255, 255, 255))
    check(ink > 0.01 * w * h, f"the plot is not blank ({ink} non-white pixels)")
    blue = (31, 119, 180)
    columns = [x for x in range(w) if any(rows[y][x] == blue for y in range(h))]
    first, last = columns[0], columns[-1]
    y_first = min(y for y in range(h) if rows[y][first] == blue)
    y_last = min(y for y in range(h) if rows[y][last] == blue)
    falls = recs[-1]["lm_loss"] < recs[0]["lm_loss"]
    check(last - first > w // 2 and (y_last > y_first) == falls,
          f"the training curve spans the plot and goes {'down' if falls else 'up'} as the loss does")
    orange = (255, 127, 14)
    check(any(p == orange for row in rows for p in row), "validation points are drawn")


# Megatron's training_log line (training.py) with the fields tandem has.
CONSOLE = re.compile(r"^ \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] iteration +(\d+)/ +(\d+) \| consumed samples: +(\d+) \| "
                     r"elapsed time per iteration \(ms\): [\d.]+ \| throughput per GPU \(TFLOP/s/GPU\): [\d.]+ \| "
                     r"learning rate: (\S+) \| global batch size: +(\d+) \| lm loss: (\S+) \| loss scale: 1\.0 \| "
                     r"grad norm: (\S+) \| number of skipped iterations: +0 \| number of nan iterations: +0 \|$")


def check_console(stdout, recs):
    lines = [CONSOLE.match(line) for line in stdout.splitlines() if " iteration " in line and "validation" not in line]
    check(len(lines) == len(recs) and all(lines), "one Megatron-format line per iteration (--log-interval 1)",
          stdout)
    for m, r in zip(lines, recs):
        it, total, samples, lr, gbs, loss, norm = m.groups()
        same = (int(it), int(total), int(samples), int(gbs)) == (r["iteration"], 8, r["consumed_samples"], 8)
        close = (f"{r['lr']:.6E}" == lr and f"{r['lm_loss']:.6E}" == loss and f"{r['grad_norm']:.3f}" == norm)
        if not (same and close):
            sys.exit(f"FAILED: console line of iteration {it} disagrees with the JSONL: {m.group(0)}\n{r}")
    print("ok: the console's iteration, samples, learning rate, loss and grad norm equal the JSONL's")


def check_bad_inputs(tandem, tmp):
    small = (MODELS["llama"] + " " + TRAINING).split()
    blocker = os.path.join(tmp, "a-file")
    open(blocker, "w").close()
    cases = [("--tensorboard-log-interval", [], ["--tensorboard-log-interval", "0"]),
             ("--metrics", ["--metrics", os.path.join(tmp, "no", "such", "m.jsonl")], []),
             ("--plot", ["--plot", os.path.join(tmp, "no", "such", "p.png")], []),
             ("--tensorboard-dir", [], ["--tensorboard-dir", os.path.join(blocker, "tb")])]
    for flag, own, extra in cases:
        proc = train(tandem, 1, own, small + extra)
        lines = proc.stderr.strip().splitlines()
        check(proc.returncode == 2 and len(lines) == 1 and flag in lines[0] and "iteration" not in proc.stdout,
              f"bad {flag}: exit 2, one line naming it, nothing trained ({lines[0] if lines else ''})",
              proc.stdout + proc.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tandem", required=True)
    t = ap.parse_args().tandem
    crc_ok = crc32c(b"123456789") == 0xE3069283
    check(crc_ok, "the test's CRC32C gives the published check value 0xE3069283 for '123456789'")
    with tempfile.TemporaryDirectory() as tmp:
        check_bad_inputs(t, tmp)
        ref, tb, plot = (os.path.join(tmp, n) for n in ("ref.jsonl", "tb", "ref.png"))
        tb_flags = ["--tensorboard-dir", tb, "--tensorboard-log-interval", "2", "--log-timers-to-tensorboard",
                    "--log-validation-ppl-to-tensorboard", "--log-memory-to-tensorboard"]
        run = must_train(t, 2, ["--metrics", ref, "--plot", plot], FLAGS + tb_flags)
        want = records(ref)
        check_console(run.stdout, want)
        check([r["iteration"] for r in want] == list(range(1, 9)) and all(list(r) == SCHEMA for r in want),
              "one record per iteration, keys in the documented order")
        check(all(r["mfu"] is None and r["skipped"] is False for r in want) and
              [r["iteration"] for r in want if r["eval_loss"] is not None] == [3, 6],
              "mfu null on the CPU, no skipped iteration, eval_loss on the evaluation iterations only")
        check_tensorboard(tb, want, 2)
        check_plot(plot, want)
        short = (MODELS["llama"] + " " + TRAINING.replace("--train-iters 8", "--train-iters 3")).split()
        must_train(t, 1, [], short + ["--tensorboard-dir", tb])
        check(len(os.listdir(tb)) == 2, "a second run into the same --tensorboard-dir writes a file of its own")

        # Killed while saving iteration 8: records 1..7 are on disk, the checkpoint is iteration 4.
        got, ck = os.path.join(tmp, "resumed.jsonl"), os.path.join(tmp, "ck")
        killed = train(t, 2, ["--metrics", got], FLAGS + ["--save", ck, "--save-interval", "4"],
                       env={"TANDEM_FAULT_KILL_IN_SAVE": "8"})
        check(killed.returncode != 0 and [r["iteration"] for r in records(got)] == list(range(1, 8)),
              "a run killed while saving iteration 8 kept records 1..7 (flushed per line)")
        must_train(t, 2, ["--metrics", got], FLAGS + ["--load", ck])
        resumed = records(got)
        strip = [[{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rs] for rs in (want, resumed)]
        check(strip[0] == strip[1], "resumed from iteration 4: the JSONL equals the uninterrupted run's except timings",
              "\n".join(f"{a}\n{b}" for a, b in zip(*strip) if a != b))
    print("training logs: all checks passed")


if __name__ == "__main__":
    main()
