"""Template rendering throughput: compiled Template vs pure-Python renderers, in one run.

A 2 KB prompt template with 10 references, rendered against a 20-column row. Prints renders/s
(median of several repeats) for ``re.sub`` with a callback, a pre-split ``''.join`` renderer
(the best pure-Python approach), our ``_py`` reference and the compiled ``Template``.

Run: ``.venv/bin/python bench/bench_template.py [--repeats N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections.abc import Callable
from typing import Any

from _machine import print_machine

from rowforge.fastcore._py import template as py_template

try:
    from rowforge.fastcore import _template as compiled_template
except ImportError:  # pragma: no cover - depends on the build
    compiled_template = None

_REF = re.compile(r"\$\{([^{}]+)\}")


def make_case(seed: int = 7) -> tuple[str, dict[str, Any]]:
    """A ~2 KB ASCII template with 10 distinct references and a 20-column row of text cells."""
    rng = random.Random(seed)
    words = ["the", "of", "and", "to", "in", "is", "for", "on", "with", "as", "by", "at"]
    columns = [f"col_{i:02d}" for i in range(20)]
    referenced = rng.sample(columns, 10)
    chunks = []
    for name in referenced:
        prose = " ".join(rng.choice(words) for _ in range(36))
        chunks.append(f"{prose}\n{name.upper()}: ${{{name}}}\n")
    text = "".join(chunks)
    text += " ".join(rng.choice(words) for _ in range(max(0, (2048 - len(text)) // 4)))
    text = text[:2048] if len(text) > 2048 else text
    row = {c: " ".join(rng.choice(words) for _ in range(rng.randint(3, 20))) for c in columns}
    return text, row


def resub_renderer(text: str) -> Callable[[dict[str, Any]], str]:
    """The usual ``re.sub`` with a callback (parses on every call)."""

    def render(row: dict[str, Any]) -> str:
        return _REF.sub(lambda m: str(row[m.group(1)]), text)

    return render


def join_renderer(text: str) -> Callable[[dict[str, Any]], str]:
    """Best pure Python: split once into literals and names, then fill and ``''.join``."""
    parts = _REF.split(text)  # literal, name, literal, name, ..., literal
    literals = parts[0::2]
    names = parts[1::2]
    first, rest = literals[0], literals[1:]

    def render(row: dict[str, Any]) -> str:
        out = [first]
        for name, literal in zip(names, rest, strict=True):
            out.append(str(row[name]))
            out.append(literal)
        return "".join(out)

    return render


def rate(render: Callable[[dict[str, Any]], str], row: dict[str, Any], seconds: float) -> float:
    """Renders per second over one timed batch sized to last about ``seconds``."""
    n = 1
    while True:  # calibrate the batch size
        start = time.perf_counter()
        for _ in range(n):
            render(row)
        elapsed = time.perf_counter() - start
        if elapsed > seconds / 4:
            break
        n *= 2
    batch = max(1, int(n * seconds / elapsed))
    start = time.perf_counter()
    for _ in range(batch):
        render(row)
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per renderer")
    parser.add_argument("--seconds", type=float, default=0.3, help="length of one repeat")
    args = parser.parse_args()

    print_machine()
    text, row = make_case()
    n_refs = len(_REF.findall(text))
    print(f"template: {len(text)} chars, {n_refs} references; row: {len(row)} columns\n")

    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "re.sub callback": resub_renderer(text),
        "pre-split join (pure Python best)": join_renderer(text),
        "rowforge _py Template": py_template.Template(text).render,
    }
    if compiled_template is not None:
        renderers["rowforge compiled Template"] = compiled_template.Template(text).render
    expected = renderers["re.sub callback"](row)
    for name, render in renderers.items():
        assert render(row) == expected, name

    # Interleave the repeats so that a noisy neighbour hurts every renderer alike.
    samples: dict[str, list[float]] = {name: [] for name in renderers}
    for _ in range(args.repeats):
        for name, render in renderers.items():
            samples[name].append(rate(render, row, args.seconds))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    for name, value in medians.items():
        spread = f"{min(samples[name]):,.0f}-{max(samples[name]):,.0f}"
        print(f"{name:36s} {value:>12,.0f} renders/s  (range {spread})")
    print()
    if compiled_template is None:
        print("compiled extension not built: no ratios")
        return
    ours = medians["rowforge compiled Template"]
    print(f"compiled / re.sub : {ours / medians['re.sub callback']:6.1f}x  (target >= 10x)")
    print(
        f"compiled / join   : {ours / medians['pre-split join (pure Python best)']:6.1f}x"
        "  (target >= 2x)"
    )


if __name__ == "__main__":
    main()
