"""Projects and personal access tokens, and who is calling.

A token looks like ``rf_<id>_<secret>``; only the SHA-256 of the whole token is stored. Calls
carry ``authorization: Bearer <token>`` and ``x-project-id: <project>``; the token must belong
to that project. With auth off (embedded mode) every call acts on the default project.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
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
from rowforge.server.storage.db import Database
from rowforge.server.storage.schema import DEFAULT_PROJECT_ID, projects, tokens

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


def set_current_project(project_id: str) -> contextvars.Token[str]:
    return _current_project.set(project_id)


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


async def create_token(db: Database, project_id: str, name: str = "") -> str:
    """Create a personal access token for a project and return it (shown once)."""
    async with db.write() as conn:
        exists = await conn.scalar(sa.select(projects.c.id).where(projects.c.id == project_id))
        if not exists:
            raise NotFound(f"project {shown(project_id)} not found", resource_type="project",
                           resource_name=project_id)
        token_id = secrets.token_hex(6)
        token = f"rf_{token_id}_{secrets.token_urlsafe(24)}"
        await conn.execute(tokens.insert().values(
            id=token_id, project_id=project_id, secret_hash=hash_token(token), name=name,
            create_time=_now(), revoked=False))
    return token


class Authenticator:
    """Checks Bearer tokens against the database, with a short cache."""

    CACHE_SECONDS = 30.0

    def __init__(self, db: Database, *, enabled: bool) -> None:
        self.db = db
        self.enabled = enabled
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def project_for(self, metadata: dict[str, str]) -> str:
        """Return the project the call acts on, or raise UNAUTHENTICATED / PERMISSION_DENIED
        (INVALID_ARGUMENT when ``x-project-id`` is not a well-formed project id, in both modes:
        with auth off an id names a project that need not exist, so only its form is checked,
        and dots are allowed too, so the seed SDK's ``project_id="..."`` placeholder runs).
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
        project = await self._lookup(token.strip())
        if project is None:
            raise Unauthenticated("invalid or revoked token", reason="INVALID_TOKEN")
        if not requested:
            return project
        if requested != project:
            raise PermissionDenied(
                f"this token does not give access to project {shown(requested)}",
                reason="PROJECT_ACCESS_DENIED", metadata={"projectId": requested})
        return project

    async def _lookup(self, token: str) -> str | None:
        digest = hash_token(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and now - cached[0] < self.CACHE_SECONDS:
            return cached[1]
        async with self.db.read() as conn:
            project = await conn.scalar(
                sa.select(tokens.c.project_id).where(
                    tokens.c.secret_hash == digest, tokens.c.revoked.is_(False)))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, project)
        return project
