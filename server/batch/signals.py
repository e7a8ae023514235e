"""In-process wake-ups for streams that follow a job.

The recorder (and cancel/submit) call :meth:`JobSignals.notify` after committing; followers
wait with a timeout, so results recorded by *another* replica are still seen by polling.
"""

from __future__ import annotations

import asyncio

from rowforge.server.errors import Unavailable

#: Seconds a follower ended by a shutdown is told to wait before reconnecting.
RECONNECT_AFTER_S = 1.0


def shutting_down() -> Unavailable:
    return Unavailable("the server is shutting down; reconnect (to another replica or after "
                       "the restart) and resume from the last cursor you received",
                       reason="SERVER_SHUTTING_DOWN", retry_after=RECONNECT_AFTER_S)


class JobSignals:
    """One future per followed job, resolved (and forgotten) on every notify."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self.closing = False

    def close(self) -> None:
        """Shutdown began: every follower ends now with UNAVAILABLE (it resumes elsewhere)."""
        self.closing = True
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()

    def notify(self, job_id: str) -> None:
        future = self._waiting.pop(job_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self, job_id: str, timeout: float) -> bool:
        """Wait until ``job_id`` is notified (True) or ``timeout`` passes (False).

        Raises:
            Unavailable: the server is shutting down (``SERVER_SHUTTING_DOWN``, RetryInfo).
        """
        if self.closing:
            raise shutting_down()
        future = self._waiting.get(job_id)
        if future is None:
            future = self._waiting[job_id] = asyncio.get_running_loop().create_future()
        try:
            # shield: one follower giving up must not cancel the future the others wait on
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        if self.closing:
            raise shutting_down()
        return True
