"""The Python sandbox as the engine gets it: started on first use, retried after a failure."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from rowforge.server.errors import RowforgeError, Unavailable

log = logging.getLogger("rowforge.engine")

#: After a failed sandbox start, cells get its error for this long before a new start.
SANDBOX_RETRY_S = 5.0
SANDBOX_RETRY_MAX_S = 300.0


class LazySandbox:
    """A sandbox pool made by ``factory`` and started on first :meth:`acquire`.

    Starting lazily keeps servers that never run Python columns from paying for the worker
    processes. A failed start is not final: the cells of the next :data:`SANDBOX_RETRY_S`
    seconds (doubling up to five minutes while it keeps failing) get its reason as their
    error, then a fresh pool is made and tried.

    Args:
        factory: Makes a new, unstarted pool (``start``/``close``/``run``).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.pool: Any = None
        self._lock: asyncio.Lock | None = None
        self._error: RowforgeError | None = None
        self._retry_at = 0.0
        self._backoff = SANDBOX_RETRY_S

    async def acquire(self) -> Any:
        """The started pool.

        Raises:
            RowforgeError: why the sandbox cannot run cells (``SANDBOX_UNAVAILABLE`` for an
                unexpected failure), until the next retry.
        """
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._error is not None:
                if time.monotonic() < self._retry_at:
                    raise self._error
                self.pool = None  # the failed pool is closed: start a new one
            if self.pool is None:
                self.pool = self.factory()
            try:
                await self.pool.start()  # idempotent
            except Exception as exc:
                await self.pool.close()
                if isinstance(exc, RowforgeError):
                    error = exc
                else:
                    log.exception("the Python sandbox could not start")
                    error = Unavailable(f"the Python sandbox could not start ({exc!r}); it is "
                                        "tried again shortly", reason="SANDBOX_UNAVAILABLE")
                self._backoff = (min(2 * self._backoff, SANDBOX_RETRY_MAX_S)
                                 if self._error is not None else SANDBOX_RETRY_S)
                self._error = error
                self._retry_at = time.monotonic() + self._backoff
                raise error from None
            self._error = None
        return self.pool

    async def close(self) -> None:
        """Stop the pool if one was made."""
        if self.pool is not None:
            await self.pool.close()

    async def sweep_leftovers(self) -> int:
        """Remove what a crashed predecessor's cells left (the pool is made, not started)."""
        if self.pool is None:
            self.pool = self.factory()
        return int(await self.pool.sweep_leftovers())
