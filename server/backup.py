"""``rowforge admin backup`` / ``restore`` for the embedded default (SQLite and local files).

A backup is a directory: ``rowforge.db`` (SQLite's online backup API: a consistent snapshot,
taken while a server keeps writing), ``files/blobs/`` (every blob the snapshot's files
reference, hard-linked when the backup is on the same file system, copied otherwise),
``indexes/`` (the knowledge indexes, copied after the snapshot) and ``BACKUP.json``.

The indexes are a cache of the database: one saved after the snapshot (its watermark ahead of
the snapshot's change feed) or caught mid-write is rebuilt by the restored server on start
(``TableIndexes.open``), so they never disagree with the rows. A blob deleted between the
snapshot and its copy makes the backup start over (a few times, then fail).

PostgreSQL and S3-style deployments back up with their own tools (``pg_dump`` or base backups,
bucket versioning): see the README's "Backups".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from rowforge.server.files.blobs import LocalBlobStore

MANIFEST = "BACKUP.json"
FORMAT = 1
ATTEMPTS = 3


class BackupError(RuntimeError):
    """A backup or restore that cannot be done (the message says why)."""


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    files: int
    file_bytes: int
    schema_revision: str | None
    seconds: float


def sqlite_path(database_url: str) -> Path:
    """The file of a SQLite URL, or BackupError for any other database."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        raise BackupError("backup and restore cover the embedded default (a SQLite file); "
                          "back PostgreSQL up with pg_dump or base backups (README: Backups)")
    return Path(url.database)


def backup(database: Path, data_dir: Path, dest: Path) -> BackupInfo:
    """Write a consistent backup of a data dir (served or not) to ``dest`` (new or empty)."""
    if not database.exists():
        raise BackupError(f"no database at {database}")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: back up into a new directory")
    started = time.monotonic()
    copied = None
    for _ in range(ATTEMPTS):
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        _snapshot(database, dest / "rowforge.db")
        copied = _copy_blobs(dest / "rowforge.db", data_dir / "files", dest / "files")
        if copied is not None:
            break
    if copied is None:
        raise BackupError("files kept being deleted while the backup copied them: retry")
    files, size = copied
    if (data_dir / "indexes").is_dir():
        shutil.copytree(data_dir / "indexes", dest / "indexes", dirs_exist_ok=True,
                        ignore_dangling_symlinks=True, copy_function=_copy_if_present)
    revision = _revision(dest / "rowforge.db")
    manifest = {"format": FORMAT, "created": dt.datetime.now(dt.UTC).isoformat(),
                "schema_revision": revision, "files": files, "file_bytes": size}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return BackupInfo(dest, files, size, revision, time.monotonic() - started)


def restore(source: Path, database: Path, data_dir: Path, *, force: bool = False) -> BackupInfo:
    """Put a backup in place of a data dir's database, files and indexes. The server must be
    stopped; without ``force`` the target must hold no database yet."""
    try:
        manifest = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source} is not a rowforge backup ({MANIFEST}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{source} has backup format {manifest.get('format')!r}; this "
                          f"rowforge reads {FORMAT}")
    if database.exists() and not force:
        raise BackupError(f"{database} exists: stop its server and pass --force to replace it")
    started = time.monotonic()
    database.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    for name in ("indexes", "files"):
        shutil.rmtree(data_dir / name, ignore_errors=True)
    _snapshot(source / "rowforge.db", database)
    if (source / "files").is_dir():
        shutil.copytree(source / "files", data_dir / "files", copy_function=_link_or_copy)
    if (source / "indexes").is_dir():
        shutil.copytree(source / "indexes", data_dir / "indexes")
    return BackupInfo(data_dir, int(manifest.get("files", 0)),
                      int(manifest.get("file_bytes", 0)), manifest.get("schema_revision"),
                      time.monotonic() - started)


def _snapshot(source: Path, target: Path) -> None:
    """SQLite's online backup: pages copied in steps, restarted by the library when a writer
    changes the source meanwhile, so the copy is one consistent state."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst, pages=4096, sleep=0.005)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dst.close()
        src.close()


def _copy_blobs(snapshot: Path, files_root: Path, dest_root: Path) -> tuple[int, int] | None:
    """Copy every blob the snapshot references; None when one vanished (deleted after the
    snapshot was taken: the caller starts over)."""
    with contextlib.closing(sqlite3.connect(snapshot)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'rf_files'").fetchone():
            return 0, 0
        shas = [row[0] for row in conn.execute("SELECT DISTINCT sha256 FROM rf_files")]
    source, target = LocalBlobStore(files_root), LocalBlobStore(dest_root)
    size = 0
    for sha in shas:
        path, copy = source.path_for(sha), target.path_for(sha)
        copy.parent.mkdir(parents=True, exist_ok=True)
        try:
            _link_or_copy(str(path), str(copy))
        except FileNotFoundError:
            return None
        size += copy.stat().st_size
    return len(shas), size


def _link_or_copy(src: str, dst: str) -> str:
    """Blobs are immutable (content-addressed): a hard link is a copy that costs nothing."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        shutil.copy2(src, dst)
    return dst


def _copy_if_present(src: str, dst: str) -> str:
    """Index files may be replaced while they are copied: one that vanished is skipped (the
    restored server rebuilds what is missing)."""
    try:
        return str(shutil.copy2(src, dst))
    except FileNotFoundError:
        return dst


def _revision(database: Path) -> str | None:
    from rowforge.server.storage.migrations import VERSION_TABLE

    with contextlib.closing(sqlite3.connect(database)) as conn:
        try:
            row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        except sqlite3.OperationalError:
            return None
    return row[0] if row else None
