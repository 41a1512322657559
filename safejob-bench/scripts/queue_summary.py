#!/usr/bin/env python3
"""Medians of `safejob-bench queue` JSON lines (from queue_matrix.sh), as BENCHMARKS.md's tables.

Usage: queue_summary.py target/queue-bench/*.jsonl

One row per (backend, workers, system, guarded, op): the median jobs/s over the runs, with each
run's value; then the targets of issue 5 judged on the medians, and the 1-minute load averages
the runs saw.
"""
import json
import statistics
import sys
from collections import defaultdict

ENQUEUE_TARGET = 20_000.0
GUARD_FREE_TARGET = 1.0
PEER_TARGET = 1.5


def verdict(x, target):
    return "n/a" if x is None else f"{x:.2f} {'PASS' if x >= target else 'FAIL'}"


def main(paths):
    rates = defaultdict(list)
    loads = []
    for path in paths:
        for line in open(path):
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("load1") is not None:
                loads.append(r["load1"])
            if r["bench"] != "queue":
                continue
            key = (r["system"], r["backend"], r["guarded"], r["op"], r["workers"])
            rates[key].append(r["jobs_per_s"])
    med = {k: statistics.median(v) for k, v in rates.items()}

    print("| backend | workers | system | guarded | op | median jobs/s | runs |")
    print("|---|---:|---|---|---|---:|---|")
    order = {"enqueue_single": 0, "enqueue_batched": 1, "drain": 2}
    for k in sorted(rates, key=lambda k: (k[1], k[4], k[0] != "safejob", k[0], k[2],
                                           order.get(k[3], 9))):
        system, backend, guarded, op, workers = k
        runs = ", ".join(f"{x:,.0f}" for x in rates[k])
        print(f"| {backend} | {workers} | {system} | {'yes' if guarded else 'no'} | {op} "
              f"| {med[k]:,.0f} | {runs} |")

    print()
    print("| backend | workers | guarded / unguarded drain (≥ 1.0) "
          "| guarded / faster peer drain (≥ 1.5) | batched enqueue (≥ 20,000/s) |")
    print("|---|---:|---|---|---|")
    for backend, workers in sorted({(k[1], k[4]) for k in med if k[0] == "safejob"}):
        g = med.get(("safejob", backend, True, "drain", workers))
        u = med.get(("safejob", backend, False, "drain", workers))
        peers = [(v, k[0]) for k, v in med.items()
                 if k[0] != "safejob" and k[1] == backend and k[3] == "drain" and k[4] == workers]
        e = med.get(("safejob", backend, False, "enqueue_batched", workers))
        free = verdict(g / u if g and u else None, GUARD_FREE_TARGET)
        if peers and g:
            best, name = max(peers)
            beat = f"{verdict(g / best, PEER_TARGET)} (vs {name} {best:,.0f}/s)"
        else:
            beat = "n/a (no peer on this backend)"
        enq = "n/a" if e is None else f"{e:,.0f} {'PASS' if e >= ENQUEUE_TARGET else 'FAIL'}"
        print(f"| {backend} | {workers} | {free} | {beat} | {enq} |")

    if loads:
        print()
        print(f"load1 during the runs: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
              f"max {max(loads):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
