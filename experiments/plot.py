#!/usr/bin/env python3
"""Plots a `tandem sweep` result (its CSV) as PNG and SVG: a scaling curve, or a time-breakdown stack.

usage: plot.py RESULTS.csv --out FIGURE [--x COLUMN] [--y COLUMN] [--series COLUMN] [--breakdown]
                          [--title TEXT] [--logx]

  --x COLUMN     x axis (default: the first column, the sweep's first axis)
  --y COLUMN     y axis (default tokens_per_s_per_gpu); e.g. mfu, iteration_time_s, peak_memory_gib
  --series COL   one line per value of this column (e.g. a second axis)
  --breakdown    stacked bars of the time breakdown (compute, communication, bubble, optimizer) per x
  --out FIGURE   writes FIGURE.png and FIGURE.svg
Rows whose status is not "ok" are left out; points predicted out of memory are drawn hollow.
Needs matplotlib (Debian: python3-matplotlib, which setup.sh installs).
"""
import argparse
import csv
import sys

BREAKDOWN = [("compute_s", "compute"), ("tp_comm_s", "TP comm"), ("cp_comm_s", "CP comm"), ("ep_comm_s", "EP comm"),
             ("pp_comm_s", "PP comm"), ("dp_comm_s", "DP comm"), ("pipeline_bubble_s", "bubble"),
             ("optimizer_s", "optimizer")]


def number(text):
    try:
        return float(text)
    except ValueError:
        return text


def read_rows(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r.get("status") == "ok"]
        return reader.fieldnames, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv")
    p.add_argument("--out", required=True)
    p.add_argument("--x")
    p.add_argument("--y", default="tokens_per_s_per_gpu")
    p.add_argument("--series")
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--title")
    p.add_argument("--logx", action="store_true")
    a = p.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot.py: needs matplotlib (Debian package python3-matplotlib; ./setup.sh installs it)")
    fields, rows = read_rows(a.csv)
    if not rows:
        sys.exit("plot.py: %s has no successful rows" % a.csv)
    x = a.x or fields[0]
    for col in [x, a.y] + ([a.series] if a.series else []):
        if col not in fields:
            sys.exit("plot.py: no column %r in %s (columns: %s)" % (col, a.csv, ", ".join(fields)))
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if a.breakdown:
        labels = [r[x] for r in rows]
        bottom = [0.0] * len(rows)
        for key, name in BREAKDOWN:
            values = [float(r[key] or 0) for r in rows]
            if any(values):
                ax.bar(labels, values, bottom=bottom, label=name)
                bottom = [b + v for b, v in zip(bottom, values)]
        ax.set_ylabel("seconds per iteration")
        ax.legend(fontsize=8)
    else:
        groups = {}
        for r in rows:
            groups.setdefault(r[a.series] if a.series else "", []).append(r)
        for name, group in groups.items():
            group.sort(key=lambda r: number(r[x]) if isinstance(number(r[x]), float) else 0)
            xs = [number(r[x]) for r in group]
            ys = [float(r[a.y]) for r in group]
            line, = ax.plot(xs, ys, marker="o", label=("%s = %s" % (a.series, name)) if a.series else None)
            for xv, yv, r in zip(xs, ys, group):
                if r.get("oom") == "true":
                    ax.plot([xv], [yv], marker="o", markerfacecolor="white", color=line.get_color())
        if a.series:
            ax.legend(fontsize=8)
        ax.set_ylabel(a.y)
        if a.logx:
            ax.set_xscale("log", base=2)
    ax.set_xlabel(x)
    ax.grid(True, alpha=0.3)
    if a.title:
        ax.set_title(a.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(a.out + ".png")
    fig.savefig(a.out + ".svg")
    print("wrote %s.png and %s.svg" % (a.out, a.out))


if __name__ == "__main__":
    main()
