"""RRF throughput: compiled ``rrf`` vs the obvious dict-based pure-Python RRF, in one run.

Hybrid-search shaped inputs: 2-3 ranked lists of 100-1000 row ids (strings like a database
would return, overlapping partly), ``top_k=10``. Prints microseconds per call (median of
several repeats) for the ``defaultdict(float)`` + ``sorted`` baseline, our ``_py`` reference and
the compiled kernel, and the compiled/baseline ratio.

Run: ``.venv/bin/python bench/bench_rrf.py [--repeats N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence

from _machine import print_machine

from rowforge.fastcore._py import rrf as py_rrf

try:
    from rowforge.fastcore import _rrf as compiled_rrf
except ImportError:  # pragma: no cover - depends on the build
    compiled_rrf = None


def dict_rrf(
    ranked_lists: Sequence[Sequence[Hashable]], k: float = 60, top_k: int = 10
) -> list[tuple[Hashable, float]]:
    """The obvious implementation: accumulate in a defaultdict, sort everything, slice."""
    scores: defaultdict[Hashable, float] = defaultdict(float)
    for ranked in ranked_lists:
        for rank, item in enumerate(ranked, start=1):
            scores[item] += 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:top_k]


def make_lists(n_lists: int, size: int, seed: int) -> list[list[str]]:
    """``n_lists`` rankings of ``size`` ids drawn from a corpus 3x larger (so they overlap)."""
    rng = random.Random(seed)
    corpus = [f"row-{i:08d}" for i in range(size * 3)]
    return [rng.sample(corpus, size) for _ in range(n_lists)]


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call over one timed batch sized to last about ``seconds``."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4:
            break
        n *= 2
    batch = max(1, int(n * seconds / elapsed))
    start = time.perf_counter()
    for _ in range(batch):
        fn()
    return (time.perf_counter() - start) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per case")
    parser.add_argument("--seconds", type=float, default=0.15, help="length of one repeat")
    args = parser.parse_args()

    print_machine()
    if compiled_rrf is None:
        print("compiled extension not built: timing the Python implementations only\n")
    header = (
        f"{'lists x ids':>12} {'dict baseline':>14} {'_py ref':>10} {'compiled':>10} {'ratio':>7}"
    )
    print(header + "   (microseconds per call, top_k=10; ratio = baseline / compiled)")
    ratios = []
    for n_lists, size in [(2, 100), (3, 100), (2, 500), (3, 500), (2, 1000), (3, 1000)]:
        lists = make_lists(n_lists, size, seed=size + n_lists)
        base_ids = [i for i, _ in dict_rrf(lists)]
        candidates: dict[str, Callable[[], object]] = {
            "baseline": lambda lists=lists: dict_rrf(lists),
            "py": lambda lists=lists: py_rrf.rrf(lists),
        }
        if compiled_rrf is not None:
            # Same ids as the baseline unless the baseline's unstable tie order differs.
            assert len(compiled_rrf.rrf(lists)) == len(base_ids)
            candidates["compiled"] = lambda lists=lists: compiled_rrf.rrf(lists)
        samples: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):
            for name, fn in candidates.items():
                samples[name].append(per_call(fn, args.seconds))
        us = {name: statistics.median(v) * 1e6 for name, v in samples.items()}
        line = f"{n_lists:>5} x {size:<5} {us['baseline']:>14.1f} {us['py']:>10.1f}"
        if "compiled" in us:
            ratio = us["baseline"] / us["compiled"]
            ratios.append(ratio)
            line += f" {us['compiled']:>10.2f} {ratio:>6.1f}x"
        print(line)
    if ratios:
        print(
            f"\ncompiled / dict baseline: {min(ratios):.1f}x to {max(ratios):.1f}x "
            f"(median {statistics.median(ratios):.1f}x; target >= 20x)"
        )


if __name__ == "__main__":
    main()
