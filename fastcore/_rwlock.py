"""A small readers-writer lock: many concurrent readers, or one writer, taking turns."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class RWLock:
    """Shared (read) / exclusive (write) lock for threads; not reentrant. Phase-fair:

    - a waiting writer holds new readers back, so a stream of searches cannot starve an update;
    - a writer that lets go admits every reader waiting at that moment before the next writer
      (itself included) may enter, so a writer taking the lock again and again (a graph being
      built in chunks) cannot starve searches either: a reader waits for at most one write.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        #: Readers a writer admitted on leaving that have not entered yet (writers wait).
        self._admitted = 0

    def acquire_read(self) -> None:
        """Take the lock shared; pair with :meth:`release_read` (cheaper than :meth:`read`)."""
        with self._cond:
            if self._writer or (self._writers_waiting and not self._admitted):
                self._readers_waiting += 1
                try:
                    while self._writer or (self._writers_waiting and not self._admitted):
                        self._cond.wait()
                finally:
                    self._readers_waiting -= 1
                    if self._admitted:
                        self._admitted -= 1
                        if not self._admitted:
                            self._cond.notify_all()  # the writers may go once readers leave
            self._readers += 1

    def release_read(self) -> None:
        """Give back a shared hold taken with :meth:`acquire_read`."""
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock shared for the ``with`` block."""
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock exclusively for the ``with`` block."""
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers or self._admitted:
                    self._cond.wait()
            except BaseException:
                self._writers_waiting -= 1
                self._cond.notify_all()  # readers held back by this writer may go now
                raise
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._admitted = self._readers_waiting
                self._cond.notify_all()
