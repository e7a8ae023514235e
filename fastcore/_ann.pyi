# Stub for the compiled rowforge.fastcore._ann; the class is documented in _py/ann.py.
from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt

from rowforge.fastcore._py import ann as _py_ann

def all_finite(q: npt.NDArray[np.float32]) -> bool: ...  # const float[:, ::1]
def take_allowed(
    labels: npt.NDArray[np.uint64],  # const uint64_t[::1]
    bitmap: npt.NDArray[np.uint8],  # const uint8_t[::1]
    k: int,
) -> npt.NDArray[np.intp]: ...
def collect_labels(allowed: Collection[Any], label_of: dict[str, int]) -> npt.NDArray[np.int64]: ...
def to_results(
    labels: npt.NDArray[np.uint64],  # const uint64_t[::1]
    distances: npt.NDArray[np.float32],  # const float[::1]
    id_of: list[str | None],
) -> list[tuple[str, float]]: ...

class AnnIndex(_py_ann.AnnIndex): ...
