"""Projects and personal access tokens, and who is calling.

A token looks like ``rf_<id>_<secret>``; only the SHA-256 of the whole token is stored. Calls
carry ``authorization: Bearer <token>`` and ``x-project-id: <project>``; the token must belong
to that project, be neither revoked nor expired, and have the scope the RPC needs
(:mod:`rowforge.server.scopes`). With auth off (embedded mode) calls act on the project named by
``x-project-id``, or the default project.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from rowforge.server.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    shown,
)
from rowforge.server.scopes import SCOPES, allows, required_scope
from rowforge.server.storage.db import Database
from rowforge.server.storage.schema import DEFAULT_PROJECT_ID, projects, tokens

log = logging.getLogger("rowforge.auth")

PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
#: What ``x-project-id`` may be with auth off (no project is created or checked): no path
#: separators, quotes, spaces or control characters, at most 64 characters.
LOOSE_PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_current_project: contextvars.ContextVar[str] = contextvars.ContextVar("rowforge_project")


def current_project() -> str:
    """The project of the call being served (set by the interceptor)."""
    try:
        return _current_project.get()
    except LookupError:  # pragma: no cover - only reachable by a wiring bug
        raise RuntimeError("no project in context: call outside an RPC?") from None


def project_or_none() -> str | None:
    """The project of the call being served, or None outside a project's work."""
    return _current_project.get(None)


def set_current_project(project_id: str) -> contextvars.Token[str]:
    return _current_project.set(project_id)


def reset_current_project(token: contextvars.Token[str]) -> None:
    _current_project.reset(token)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Project:
    id: str
    name: str


async def ensure_default_project(db: Database) -> None:
    async with db.write() as conn:
        found = await conn.scalar(sa.select(projects.c.id).where(projects.c.id == DEFAULT_PROJECT_ID))
        if found is None:
            await conn.execute(projects.insert().values(
                id=DEFAULT_PROJECT_ID, name="Default project", create_time=_now()))


async def create_project(db: Database, name: str, project_id: str | None = None) -> Project:
    """Create a project; its id is derived from the name when not given."""
    if not name.strip():
        raise InvalidArgument.field("name", "must not be empty")
    if project_id is None:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-").lower()[:40] or "project"
        project_id = f"{slug}-{secrets.token_hex(3)}"
    if not PROJECT_ID_RE.match(project_id):
        raise InvalidArgument.field(
            "project_id", "use 1-64 letters, digits, '_' or '-', starting with a letter or digit")
    async with db.write() as conn:
        exists = await conn.scalar(sa.select(projects.c.id).where(projects.c.id == project_id))
        if exists:
            raise AlreadyExists(f"project {shown(project_id)} already exists",
                                resource_type="project", resource_name=project_id)
        await conn.execute(projects.insert().values(id=project_id, name=name, create_time=_now()))
    return Project(project_id, name)


@dataclass(frozen=True)
class TokenInfo:
    """A token as ``list-tokens`` shows it (never its secret)."""

    id: str
    project_id: str
    name: str
    scope: str
    create_time: dt.datetime
    expire_time: dt.datetime | None
    revoke_time: dt.datetime | None
    last_used_time: dt.datetime | None
    revoked: bool

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        if self.expire_time is not None and self.expire_time <= _now():
            return "expired"
        return "active"


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def create_token(db: Database, project_id: str, name: str = "", *,
                       scope: str = "write", expires_in_s: float | None = None) -> str:
    """Create a personal access token for a project and return it (shown once).

    Args:
        scope: ``read``, ``write`` or ``admin`` (see :mod:`rowforge.server.scopes`).
        expires_in_s: Seconds until it stops working (None: never).
    """
    if scope not in SCOPES:
        raise InvalidArgument.field("scope", f"must be one of {', '.join(SCOPES)}")
    if expires_in_s is not None and expires_in_s <= 0:
        raise InvalidArgument.field("expires_in", "must be positive")
    now = _now()
    expire = now + dt.timedelta(seconds=expires_in_s) if expires_in_s is not None else None
    async with db.write() as conn:
        exists = await conn.scalar(sa.select(projects.c.id).where(projects.c.id == project_id))
        if not exists:
            raise NotFound(f"project {shown(project_id)} not found", resource_type="project",
                           resource_name=project_id)
        token_id = secrets.token_hex(6)
        token = f"rf_{token_id}_{secrets.token_urlsafe(24)}"
        await conn.execute(tokens.insert().values(
            id=token_id, project_id=project_id, secret_hash=hash_token(token), name=name,
            create_time=now, revoked=False, scope=scope, expire_time=expire))
    return token


async def list_tokens(db: Database, project_id: str | None = None) -> list[TokenInfo]:
    """Tokens (of one project, or all), oldest first."""
    query = sa.select(tokens).order_by(tokens.c.create_time, tokens.c.id)
    if project_id is not None:
        query = query.where(tokens.c.project_id == project_id)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [TokenInfo(id=r.id, project_id=r.project_id, name=r.name, scope=r.scope,
                      create_time=_aware(r.create_time),
                      expire_time=_aware(r.expire_time) if r.expire_time else None,
                      revoke_time=_aware(r.revoke_time) if r.revoke_time else None,
                      last_used_time=_aware(r.last_used_time) if r.last_used_time else None,
                      revoked=bool(r.revoked)) for r in rows]


async def revoke_token(db: Database, token_id: str) -> None:
    """Revoke a token by id (the ``rf_<id>_`` part); servers refuse it within
    :attr:`Authenticator.CACHE_SECONDS`. Revoking twice is fine."""
    async with db.write() as conn:
        found = await conn.scalar(sa.select(tokens.c.id).where(tokens.c.id == token_id))
        if found is None:
            raise NotFound(f"token {shown(token_id)} not found", resource_type="token",
                           resource_name=token_id)
        await conn.execute(tokens.update().where(
            tokens.c.id == token_id, tokens.c.revoked.is_(False)).values(
            revoked=True, revoke_time=_now()))


@dataclass(frozen=True)
class _Credential:
    """What the cache keeps of a token."""

    id: str
    project_id: str
    scope: str
    expire_time: dt.datetime | None
    revoked: bool


class Authenticator:
    """Checks Bearer tokens against the database, with a short cache."""

    CACHE_SECONDS = 30.0
    #: How often the last-used times gathered in memory are written.
    LAST_USED_FLUSH_S = 60.0

    def __init__(self, db: Database, *, enabled: bool) -> None:
        self.db = db
        self.enabled = enabled
        self._cache: dict[str, tuple[float, _Credential | None]] = {}
        self._last_used: dict[str, dt.datetime] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.enabled and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush_last_used()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.LAST_USED_FLUSH_S)
            try:
                await self.flush_last_used()
            except Exception:
                log.warning("recording when tokens were last used failed", exc_info=True)

    async def flush_last_used(self) -> None:
        """Write the last-used times gathered since the last flush (one statement per token
        used, all in one transaction)."""
        pending, self._last_used = self._last_used, {}
        if not pending:
            return
        async with self.db.write() as conn:
            for token_id, when in pending.items():
                await conn.execute(tokens.update().where(tokens.c.id == token_id).values(
                    last_used_time=when))

    async def project_for(self, metadata: dict[str, str], method: str = "") -> str:
        """Return the project the call acts on, or raise UNAUTHENTICATED / PERMISSION_DENIED
        (INVALID_ARGUMENT when ``x-project-id`` is not a well-formed project id, in both modes:
        with auth off an id names a project that need not exist, so only its form is checked,
        and dots are allowed too, so the seed SDK's ``project_id="..."`` placeholder runs).

        With auth on, the token must exist, be neither revoked (``TOKEN_REVOKED``) nor
        expired (``TOKEN_EXPIRED``), and have the scope ``method`` needs
        (PERMISSION_DENIED ``INSUFFICIENT_SCOPE``; see :mod:`rowforge.server.scopes`).
        """
        requested = metadata.get("x-project-id", "").strip()
        if requested and not (PROJECT_ID_RE if self.enabled else LOOSE_PROJECT_ID_RE).match(
                requested):
            raise InvalidArgument.field(
                "x-project-id", f"{shown(requested)} is not a project id: use 1-64 letters, "
                "digits, '_' or '-', starting with a letter or digit", reason="INVALID_PROJECT_ID")
        if not self.enabled:
            return requested or DEFAULT_PROJECT_ID
        header = metadata.get("authorization", "")
        if not header:
            raise Unauthenticated(
                "missing credentials: send 'authorization: Bearer <token>' metadata",
                reason="MISSING_TOKEN")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "malformed authorization metadata: expected 'Bearer <token>'",
                reason="MALFORMED_TOKEN")
        credential = await self._lookup(token.strip())
        if credential is None:
            raise Unauthenticated("invalid token", reason="INVALID_TOKEN")
        if credential.revoked:
            raise Unauthenticated(f"token {credential.id} has been revoked",
                                  reason="TOKEN_REVOKED", metadata={"tokenId": credential.id})
        now = _now()
        if credential.expire_time is not None and credential.expire_time <= now:
            raise Unauthenticated(
                f"token {credential.id} expired at {credential.expire_time.isoformat()}",
                reason="TOKEN_EXPIRED", metadata={"tokenId": credential.id})
        project = credential.project_id
        if requested and requested != project:
            raise PermissionDenied(
                f"this token does not give access to project {shown(requested)}",
                reason="PROJECT_ACCESS_DENIED", metadata={"projectId": requested})
        if method and not allows(credential.scope, method):
            needed = required_scope(method)
            raise PermissionDenied(
                f"this token's scope is {credential.scope}; {method.rsplit('/', 1)[-1]} needs "
                f"a {needed} token", reason="INSUFFICIENT_SCOPE",
                metadata={"scope": credential.scope, "requiredScope": needed})
        self._last_used[credential.id] = now
        return project

    async def _lookup(self, token: str) -> _Credential | None:
        digest = hash_token(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(
                tokens.c.id, tokens.c.project_id, tokens.c.scope, tokens.c.expire_time,
                tokens.c.revoked).where(tokens.c.secret_hash == digest))).first()
        credential = None if row is None else _Credential(
            row.id, row.project_id, row.scope,
            _aware(row.expire_time) if row.expire_time else None, bool(row.revoked))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, credential)
        return credential
