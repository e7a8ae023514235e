"""In-process wake-ups for streams that follow a job.

The recorder (and cancel/submit) call :meth:`JobSignals.notify` after committing; followers
wait with a timeout, so results recorded by *another* replica are still seen by polling.
"""

from __future__ import annotations

import asyncio


class JobSignals:
    """One future per followed job, resolved (and forgotten) on every notify."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[None]] = {}

    def notify(self, job_id: str) -> None:
        future = self._waiting.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until ``job_id`` is notified (True) or ``timeout`` passes (False)."""
        future = self._waiting.get(job_id)
        if future is None:
            future = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        try:
            # shield: one follower giving up must not cancel the future the others wait on
            await asyncio.wait_for(asyncio.shield(future), timeout)
            return True
        except TimeoutError:
            return False
