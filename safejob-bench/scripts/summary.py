#!/usr/bin/env python3
"""Medians of the JSON lines written by matrix.sh and ceilings.sh, as the table of BENCHMARKS.md.

Usage: summary.py target/bench/matrix.jsonl target/bench/ceilings.jsonl
"""
import json
import statistics
import sys
from collections import defaultdict


def median(xs):
    return statistics.median(xs) if xs else None


def main(matrix_path, ceilings_path):
    runs = [json.loads(l) for l in open(matrix_path) if l.startswith("{")]
    ceil = defaultdict(list)
    for l in open(ceilings_path):
        if l.startswith("{"):
            c = json.loads(l)
            ceil[(c["ceiling"], c["clients"])].append(c["jobs_per_s"])
    name = {"postgres": "postgres", "mysql": "mariadb", "sqlite": "sqlite"}

    guard = defaultdict(list)  # (backend, threads, effects) -> [line]
    base = defaultdict(list)  # (backend, threads, effects of the guard beside it) -> [line]
    ratio = defaultdict(list)  # (backend, threads, effects) -> [ratio]
    loads = defaultdict(list)
    failed = [r for r in runs if r["bench"] == "failed"]
    last_effects = None
    for r in runs:
        key = (r["backend"], r["threads"])
        if r["bench"] == "guard":
            guard[key + (r["effects"],)].append(r)
            loads[key].append(r["load1"])
            last_effects = r["effects"]
        elif r["bench"] == "baseline":
            # The baseline line follows its guard line in the same run.
            base[key + (last_effects,)].append(r)
        elif r["bench"] == "ratio":
            ratio[key + (r["effects"],)].append(r["guard_over_baseline"])

    print("| backend | threads | effects | guard jobs/s | p50 µs | p99 µs | baseline jobs/s | "
          "guard/baseline | ceiling jobs/s | guard/ceiling | n | load1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (backend, threads, effects), lines in sorted(guard.items()):
        g = median([l["jobs_per_s"] for l in lines])
        p50 = median([l["p50_us"] for l in lines])
        p99 = median([l["p99_us"] for l in lines])
        b = median([l["jobs_per_s"] for l in base[(backend, threads, effects)]])
        rt = median(ratio[(backend, threads, effects)])
        c = median(ceil.get((name[backend], threads), []))
        gc = f"{g / c:.2f}" if c else "–"
        cs = f"{c:,.0f}" if c else "–"
        ld = f"{min(loads[(backend, threads)]):.1f}–{max(loads[(backend, threads)]):.1f}"
        print(f"| {backend} | {threads} | {effects} | {g:,.0f} | {p50:,.0f} | {p99:,.0f} | "
              f"{b:,.0f} | {rt:.2f} | {cs} | {gc} | {len(lines)} | {ld} |")
    print()
    for r in failed:
        print(f"failed run: rep {r['rep']} at {r['at']}: {r['backend']} threads={r['threads']} {r['effects']}")
    for (c, n), xs in sorted(ceil.items()):
        print(f"ceiling {c} clients={n}: median {median(xs):,.0f} of {[round(x) for x in xs]}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
