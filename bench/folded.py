"""Summarise folded stack samples (bench/delivery.py --sample): per thread, the functions with
the largest share of samples, inclusive (on the stack) and self (on top).

    .venv/bin/python bench/folded.py bench/out/delivery-embedded-10000-samples.folded [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict

SITE = re.compile(r"/(?:site-packages|lib/python3\.\d+)/")


def short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    path = where.rstrip(")")
    parts = SITE.split(path)
    path = parts[-1] if len(parts) > 1 else path.split("/wt/", 1)[-1].split("/", 1)[-1]
    return f"{name} ({path})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("path")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--thread", default="")
    args = p.parse_args()
    totals: Counter = Counter()
    inclusive: dict[str, Counter] = defaultdict(Counter)
    own: dict[str, Counter] = defaultdict(Counter)
    for line in open(args.path):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        thread = frames[0].split("-")[0].rstrip("_0123456789")
        if args.thread and not thread.startswith(args.thread):
            continue
        count = int(n)
        totals[thread] += count
        for f in {short(f) for f in frames[1:]}:
            inclusive[thread][f] += count
        if len(frames) > 1:
            own[thread][short(frames[-1])] += count
    for thread, total in totals.most_common():
        print(f"\n== {thread}: {total} samples")
        print("-- inclusive")
        for f, n in inclusive[thread].most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {f}")
        print("-- self")
        for f, n in own[thread].most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
