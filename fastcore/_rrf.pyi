# Stub for the compiled rowforge.fastcore._rrf; behaviour documented in _py/rrf.py.
from collections.abc import Hashable, Iterable, Sequence

def rrf(
    ranked_lists: Iterable[Iterable[Hashable]],
    k: float = 60,
    weights: Sequence[float] | None = None,
    top_k: int | None = 10,
) -> list[tuple[Hashable, float]]: ...
