#!/usr/bin/env python3
"""Groups the errors of `tandem reproduce --json FILE` by family, precision, CP, PP depth, TP
overlap and model size, and prints one markdown table per grouping.

usage: residuals.py RESULT.json [--sets NAME_SUBSTRING ...]

Error = simulated / published throughput - 1 (negative: the simulator is slower), as tandem
reproduce prints it. Rows predicted out of memory are counted in their groups and flagged.
"""
import json
import sys


def size_bucket(b):
    for limit, name in ((10, "< 10B"), (30, "10-30B"), (100, "30-100B"), (250, "100-250B")):
        if b < limit:
            return name
    return ">= 250B"


GROUPINGS = [
    ("family", lambda r: r["family"] or "-"),
    ("precision", lambda r: r["precision"] or "-"),
    ("CP", lambda r: "CP %d" % r["layout"]["cp"]),
    ("PP depth", lambda r: "PP %d%s" % (r["layout"]["pp"], " interleaved" if r["layout"]["vp"] > 1 else "")),
    ("TP overlap", lambda r: "TP %d, %s" % (r["layout"]["tp"], "overlap" if r["layout"]["tp_comm_overlap"] else "no overlap")),
    ("model size", lambda r: size_bucket(r["layout"]["parameters_billions"])),
]


def table(rows, name, key):
    groups = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r["relative_error"])
    out = ["| %s | rows | mean abs error | within 10%% | signed mean | min | max |" % name,
           "|---|---|---|---|---|---|---|"]
    for g in sorted(groups):
        e = groups[g]
        out.append("| %s | %d | %.1f%% | %d | %+.1f%% | %+.1f%% | %+.1f%% |" % (
            g, len(e), 100 * sum(abs(x) for x in e) / len(e), sum(abs(x) <= 0.10 for x in e),
            100 * sum(e) / len(e), 100 * min(e), 100 * max(e)))
    return "\n".join(out)


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    sets = json.load(open(sys.argv[1]))
    only = sys.argv[3:] if len(sys.argv) > 2 and sys.argv[2] == "--sets" else []
    rows = [r for s in sets if not only or any(o in s["path"] for o in only) for r in s["rows"]
            if "relative_error" in r]
    if not rows:
        raise SystemExit("no simulated rows in " + sys.argv[1])
    e = [r["relative_error"] for r in rows]
    print("%d rows: mean abs error %.1f%%, %d within 10%%, signed mean %+.1f%%, %d predicted OOM\n" % (
        len(e), 100 * sum(abs(x) for x in e) / len(e), sum(abs(x) <= 0.10 for x in e), 100 * sum(e) / len(e),
        sum(bool(r.get("oom")) for r in rows)))
    for name, key in GROUPINGS:
        print(table(rows, name, key) + "\n")


if __name__ == "__main__":
    main()
