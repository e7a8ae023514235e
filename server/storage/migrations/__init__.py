"""Versioned schema migrations of the system tables (alembic), on SQLite and PostgreSQL.

Every start checks the database (:func:`prepare`):

- an empty database gets the current tables (``create_all``) and is stamped at the head;
- a data dir from the last release before migrations (system tables, no version table) is
  taken as the baseline revision ``0001`` (that release's schema): it is older, so it is
  upgraded only when asked, after the tables and columns of ``0001`` it lacks are added;
- a database at the head is used as it is;
- an older one is refused unless upgrading was asked for (``rowforge admin migrate``): the
  error names the command, so an operator upgrades on purpose (and backs up first);
- a newer one (a revision this rowforge does not know) is refused: an older server must not
  write to a schema it does not understand.

The tables of users' generative tables (``ut_*``) are laid out by the tables domain and are
not under these migrations.

Adding a migration: change the tables in ``storage/*_tables.py``, then
``python -m rowforge.server.storage.migrations revision "what changed"`` writes
``versions/NNNN_what_changed.py`` from the difference between the models and a database at
the current head (review it); ``tests/integration/test_migrations.py`` fails while the
migrations and the models disagree.
"""

from __future__ import annotations

import functools
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "rf_alembic_version"
#: The schema of the last release before migrations (see ``versions/0001_baseline.py``).
BASELINE = "0001"


class SchemaMismatch(RuntimeError):
    """The database's schema is not the one this rowforge runs on (too old or too new)."""


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: ``current`` None means unversioned (``fresh`` or legacy)."""

    current: str | None
    head: str
    fresh: bool

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def config(connection: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    """The newest revision this rowforge knows."""
    revision = _scripts().get_current_head()
    assert revision is not None
    return revision


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:  # ResolutionError is one
        return False


def state(conn: Any) -> SchemaState:
    """Where the database behind a sync connection stands."""
    tables = set(inspect(conn).get_table_names())
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = context.get_current_revision() if VERSION_TABLE in tables else None
    fresh = current is None and not any(name.startswith("rf_") for name in tables)
    return SchemaState(current=current, head=head(), fresh=fresh)


#: What an operator runs to upgrade (the message of an outdated schema names it).
MIGRATE_HINT = ("rowforge admin migrate (with the server's --config / --data-dir / "
                "--database-url)")


def prepare(conn: Any, *, upgrade: bool) -> str:
    """Bring the schema to the head when allowed; say what was done.

    Raises:
        SchemaMismatch: the schema is newer than this rowforge, or older and ``upgrade`` is
            false (the message names :data:`MIGRATE_HINT`).
    """
    from rowforge.server.storage.schema import metadata

    now = state(conn)
    if now.fresh:
        metadata.create_all(conn)
        command.stamp(config(conn), now.head)
        return f"created the schema at revision {now.head}"
    current = now.current or BASELINE  # unversioned: made before migrations
    if current == now.head and now.current is not None:
        return f"the schema is at revision {now.head}, the newest"
    if not _known(current):
        raise SchemaMismatch(
            f"the database schema is at revision {current}, newer than this rowforge knows "
            f"({now.head}): run a rowforge at least as new as the one that migrated it")
    if not upgrade:
        raise SchemaMismatch(
            f"the database schema is at revision {current}, older than this rowforge's "
            f"{now.head}: back it up (rowforge admin backup), then run {MIGRATE_HINT}")
    if now.current is None:
        _adopt(conn)
    command.upgrade(config(conn), "head")
    return f"upgraded the schema from revision {current} to {now.head}"


def _adopt(conn: Any) -> None:
    """Make an unversioned data dir (from before migrations) the baseline's: add the tables
    and columns of revision 0001 it lacks (older releases added them on start), then stamp it.
    """
    from sqlalchemy import MetaData, create_engine
    from sqlalchemy.schema import CreateColumn

    from rowforge.server.storage.schema import metadata

    engine = create_engine("sqlite://")  # the baseline's tables and columns, by name
    with engine.begin() as scratch:
        command.upgrade(config(scratch), BASELINE)
        baseline = MetaData()
        baseline.reflect(scratch)
    engine.dispose()
    inspector = inspect(conn)
    present_tables = set(inspector.get_table_names())
    for reflected in baseline.sorted_tables:
        if reflected.name == VERSION_TABLE:
            continue
        table = metadata.tables[reflected.name]  # today's definition: the dialect's types
        if reflected.name not in present_tables:
            table.create(conn)
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present or column.name not in reflected.columns:
                continue
            if not column.nullable and column.server_default is None:
                raise SchemaMismatch(f"cannot add {table.name}.{column.name} to this old "
                                     "database: it has no server default")
            spec = CreateColumn(column).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN {spec}')
    command.stamp(config(conn), BASELINE)


def new_revision(message: str) -> Path:
    """Autogenerate the next migration from the models' difference to a database at head."""
    from sqlalchemy import create_engine

    from rowforge.server.storage.db import import_table_modules

    import_table_modules()
    number = max((int(m.group(1)) for p in (HERE / "versions").glob("*.py")
                  if (m := re.match(r"(\d{4})_", p.name))), default=0) + 1
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40]
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/head.db")
        with engine.begin() as conn:
            command.upgrade(config(conn), "head")
            cfg = config(conn)
            script = command.revision(cfg, message=message, autogenerate=True,
                                      rev_id=f"{number:04d}")
        engine.dispose()
    assert script is not None and not isinstance(script, list)
    path = Path(script.path)
    return path.rename(path.with_name(f"{number:04d}_{slug}.py"))
