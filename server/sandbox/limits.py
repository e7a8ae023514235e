"""Per-cell resource limits of the Python-column sandbox."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """What one cell may use. Defaults; the server config overrides them.

    Attributes:
        timeout_s: Wall-clock seconds per cell.
        cpu_s: CPU seconds per process of the cell (``RLIMIT_CPU``).
        memory_mb: Address space the cell may add to the pre-warmed interpreter it is forked
            from (``RLIMIT_AS`` = the interpreter's size at fork + this).
        max_open_files: File descriptors per process (``RLIMIT_NOFILE``).
        max_processes: Processes and threads of the cell (``RLIMIT_NPROC``). Exact when the
            server runs as root (each worker has its own uid); otherwise added on top of the
            server user's current task count, so it only bounds growth (see the package doc).
        max_output_bytes: Size of the serialised value assigned to ``row[column]``.
        max_file_size_mb: Largest file the cell may write (``RLIMIT_FSIZE``).
        max_disk_mb: All files of the cell together: the size of the tmpfs its directory
            lives on (when the server runs as root; otherwise only ``max_file_size_mb``
            applies).
    """

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    max_open_files: int = 64
    max_processes: int = 32
    max_output_bytes: int = 16 * MIB
    max_file_size_mb: int = 64
    max_disk_mb: int = 128

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ValueError(f"timeout_s must be a positive number, not {self.timeout_s!r}")
        for name in ("cpu_s", "memory_mb", "max_output_bytes", "max_file_size_mb", "max_disk_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        # Python itself needs a few descriptors and a couple of threads to start at all.
        if self.max_open_files < 16:
            raise ValueError(f"max_open_files must be at least 16, not {self.max_open_files!r}")
        if self.max_processes < 2:
            raise ValueError(f"max_processes must be at least 2, not {self.max_processes!r}")

    def to_wire(self) -> dict[str, Any]:
        """The limits as a plain dict for the worker protocol."""
        return asdict(self)
