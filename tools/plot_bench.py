#!/usr/bin/env python3
"""Draws a `latentkv bench serve` result file.

    tools/plot_bench.py FILE.json --out FILE.png

A sweep (a target with two or more request rates): TTFT, TPOT and E2E
latency p50/p90/p99 against the request rate, and request and output-token
throughput against it; one colour per target. The rate "inf" (all at once) is
drawn one step to the right of the largest finite rate.
Otherwise (one phase per target): bar charts of the same percentiles and
throughputs, one bar per target.
"""
import argparse
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRICS = [("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E latency")]
PCTS = [("median", "p50", "-"), ("p90", "p90", "--"), ("p99", "p99", ":")]


def by_target(phases):
    out = {}
    for p in phases:
        out.setdefault(p["target"], []).append(p)
    return out


def inf_position(phases):
    """The x position of rate inf: twice the largest finite rate."""
    finite = [p["request_rate"] for p in phases if p["request_rate"] is not None]
    return 2 * max(finite) if finite else 1.0


def value(x):
    return math.nan if x is None else x


def plot_sweep(targets, out):
    all_phases = [p for ps in targets.values() for p in ps]
    inf_x = inf_position(all_phases)
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, label), ax in zip(METRICS, axes.flat):
        for i, (target, phases) in enumerate(targets.items()):
            phases = sorted(phases, key=lambda p: value(p["request_rate"]) if
                            p["request_rate"] is not None else math.inf)
            xs = [p["request_rate"] if p["request_rate"] is not None else inf_x
                  for p in phases]
            for key, pname, style in PCTS:
                ys = [value(p["summary"][name][key]) for p in phases]
                ax.plot(xs, ys, style, marker="o", color=colours[i % len(colours)],
                        label=f"{target} {pname}")
        ax.set_title(f"{label} (ms)")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("ms")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes.flat[3]
    ax2 = ax.twinx()
    for i, (target, phases) in enumerate(targets.items()):
        phases = sorted(phases, key=lambda p: value(p["request_rate"]) if
                        p["request_rate"] is not None else math.inf)
        xs = [p["request_rate"] if p["request_rate"] is not None else inf_x
              for p in phases]
        c = colours[i % len(colours)]
        ax.plot(xs, [p["summary"]["output_throughput"] for p in phases], "-",
                marker="o", color=c, label=f"{target} output tok/s")
        ax2.plot(xs, [p["summary"]["request_throughput"] for p in phases], "--",
                 marker="s", color=c, label=f"{target} req/s")
    ax.set_title("throughput")
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("output tokens/s")
    ax2.set_ylabel("requests/s (dashed)")
    ax.grid(True, alpha=0.3)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7)
    finite = sorted({p["request_rate"] for p in all_phases
                     if p["request_rate"] is not None})
    has_inf = any(p["request_rate"] is None for p in all_phases)
    ticks = finite + ([inf_x] if has_inf else [])
    for a in axes.flat:
        if finite and finite[-1] / finite[0] >= 8:  # geometric sweeps
            a.set_xscale("log")
        a.minorticks_off()
        a.set_xticks(ticks)
        a.set_xticklabels([f"{t:g}" for t in finite] + (["inf"] if has_inf else []))
    fig.suptitle("latentkv bench serve: latency and throughput vs request rate")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def plot_bars(targets, out):
    names = list(targets)
    phases = [targets[n][0] for n in names]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.5))
    width = 0.8 / max(1, len(names))
    for (name, label), ax in zip(METRICS, axes):
        for i, (n, p) in enumerate(zip(names, phases)):
            ys = [value(p["summary"][name][key]) for key, _, _ in PCTS]
            xs = [j + i * width for j in range(len(PCTS))]
            ax.bar(xs, ys, width, label=n)
        ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(PCTS))])
        ax.set_xticklabels([pname for _, pname, _ in PCTS])
        ax.set_title(f"{label} (ms)")
        ax.legend(fontsize=7)
    ax = axes[3]
    xs = range(len(names))
    ax.bar(xs, [p["summary"]["output_throughput"] for p in phases])
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=20, fontsize=8)
    ax.set_title("output tokens/s")
    fig.suptitle("latentkv bench serve")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("result", help="JSON written by latentkv bench serve")
    ap.add_argument("--out", required=True, help="PNG to write")
    args = ap.parse_args()
    with open(args.result) as f:
        data = json.load(f)
    phases = data.get("phases", [])
    if not phases:
        print("no phases in " + args.result, file=sys.stderr)
        return 1
    targets = by_target(phases)
    if max(len(ps) for ps in targets.values()) >= 2:
        plot_sweep(targets, args.out)
    else:
        plot_bars(targets, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
