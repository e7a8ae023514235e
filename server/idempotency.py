"""Idempotency keys of calls that create rows (AddRows, ImportRows): a retried call with the
same key and the same request gets the first call's response instead of adding the rows again.

Keys live in ``rf_idempotency_keys`` (project, method, key) with the request's SHA-256 and the
response, for 24 hours (API_CONVENTIONS §7). A key is reserved before the call runs, so a
concurrent retry waits its turn (ABORTED, retry after a second) instead of running twice; a
call that fails releases its key (nothing was recorded as done: the client's retry runs it).
A reservation whose call never finished (the server died) is taken over after
``STALE_AFTER_S``.

Known limit: a call that fails *after* its rows were stored (cancelled mid-generation) releases
its key like any failure, so its retry adds the rows again; rows and keys are not written in
one transaction (the rows are the engine's).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.exc import IntegrityError

from rowforge.server.errors import Aborted, InvalidArgument
from rowforge.server.storage.db import Database
from rowforge.server.storage.schema import idempotency_keys as K

MAX_KEY_CHARS = 200
RETENTION_S = 24 * 3600.0
STALE_AFTER_S = 3600.0
_PENDING, _DONE = b"\x00", b"\x01"  # first byte of the stored response

R = TypeVar("R", bound=Message)


def request_hash(*parts: bytes) -> str:
    """SHA-256 of a request's serialized parts (a message, or a stream's messages)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyKeys:
    """Runs calls at most once per (project, method, key)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def run(self, project_id: str, method: str, key: str, digest: str,
                  call: Callable[[], Awaitable[R]], parse: Callable[[bytes], R],
                  field: str = "idempotency_key") -> R:
        """``call()``'s response, or the stored response of an earlier call with ``key``.

        Raises:
            InvalidArgument: ``IDEMPOTENCY_KEY_REUSED`` (same key, another request) or a key
                longer than 200 characters.
            Aborted: ``IDEMPOTENCY_KEY_IN_USE``: the first call with this key still runs.
        """
        if not key:
            return await call()
        if len(key) > MAX_KEY_CHARS:
            raise InvalidArgument.field(field, f"at most {MAX_KEY_CHARS} characters")
        stored = await self._reserve(project_id, method, key, digest, field)
        if stored is not None:
            return parse(stored)
        try:
            response = await call()
        except BaseException:
            await self._release(project_id, method, key)
            raise
        async with self.db.write() as conn:
            await conn.execute(K.update().where(*self._where(project_id, method, key)).values(
                response=_DONE + response.SerializeToString()))
        return response

    @staticmethod
    def _where(project_id: str, method: str, key: str) -> tuple[sa.ColumnElement[bool], ...]:
        return K.c.project_id == project_id, K.c.method == method, K.c.key == key

    async def _reserve(self, project_id: str, method: str, key: str, digest: str,
                       field: str) -> bytes | None:
        """Reserve the key (None), or return the finished call's response."""
        now = dt.datetime.now(dt.UTC)
        where = self._where(project_id, method, key)
        for _ in range(3):
            async with self.db.read() as conn:
                row = (await conn.execute(sa.select(K.c.request_hash, K.c.response,
                                                    K.c.create_time).where(*where))).first()
            if row is not None:
                created = (row.create_time if row.create_time.tzinfo
                           else row.create_time.replace(tzinfo=dt.UTC))
                age = (now - created).total_seconds()
                pending = row.response[:1] != _DONE
                if age > RETENTION_S or (pending and age > STALE_AFTER_S):
                    async with self.db.write() as conn:  # expired, or its call was abandoned
                        await conn.execute(K.delete().where(*where))
                    continue
                if row.request_hash != digest:
                    raise InvalidArgument.field(
                        field, f"was already used for another {method} request",
                        reason="IDEMPOTENCY_KEY_REUSED")
                if pending:
                    raise Aborted(f"a {method} call with this idempotency key is still "
                                  "running; retry when it has finished",
                                  reason="IDEMPOTENCY_KEY_IN_USE", retry_after=1.0)
                return bytes(row.response[1:])
            try:
                async with self.db.write() as conn:
                    await conn.execute(K.insert().values(
                        project_id=project_id, method=method, key=key, request_hash=digest,
                        response=_PENDING, create_time=now))
            except IntegrityError:
                continue  # a concurrent call reserved it first: read what it holds
            return None
        raise Aborted(f"a {method} call with this idempotency key is still running; retry",
                      reason="IDEMPOTENCY_KEY_IN_USE", retry_after=1.0)

    async def _release(self, project_id: str, method: str, key: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(K.delete().where(*self._where(project_id, method, key),
                                                K.c.response == _PENDING))
