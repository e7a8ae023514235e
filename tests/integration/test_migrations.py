"""Schema migrations: they build exactly the models' schema (SQLite and PostgreSQL), a data dir
of the release before migrations is upgraded by ``rowforge admin migrate`` and then serves its
data as before, and a server refuses a schema older or newer than its own."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from rowforge.clients import RowForge
from rowforge.server.storage import migrations
from rowforge.server.storage.db import Database, import_table_modules
from rowforge.server.storage.schema import metadata
from tests.support.server import ServerProcess

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "datadir-e6514eb"
TOKEN = "rf_b3c8fb4807fc_2pHTjZTAfTT5g3HFdpiujQwJRiBX0dGU"  # see the fixture's README


def _diff(conn: object) -> list[object]:
    import_table_modules()
    context = MigrationContext.configure(conn, opts={"version_table": migrations.VERSION_TABLE})
    return [d for d in compare_metadata(context, metadata)
            if not (d[0] == "remove_table" and d[1].name == migrations.VERSION_TABLE)]


async def test_the_migrations_build_the_models_schema(database_url: str) -> None:
    """Upgrading an empty database revision by revision gives what ``create_all`` gives (a
    fresh server's path): a change to the models without its migration fails here."""
    db = Database(database_url)
    try:
        async with db.write() as conn:
            await conn.run_sync(lambda sync: command.upgrade(migrations.config(sync), "head"))
        async with db.read() as conn:
            assert await conn.run_sync(_diff) == []
            state = await conn.run_sync(migrations.state)
        assert (state.current, state.up_to_date) == (migrations.head(), True)
        assert "is at revision" in await db.prepare_schema()  # nothing left to do
    finally:
        await db.close()


async def test_a_fresh_database_is_created_at_the_head(database_url: str) -> None:
    db = Database(database_url)
    try:
        assert await db.prepare_schema() == f"created the schema at revision {migrations.head()}"
        async with db.read() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await db.close()


def _rowforge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rowforge.server", *args],
                          capture_output=True, text=True, timeout=120)


def test_a_data_dir_of_the_release_before_migrations_is_upgraded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    # A server refuses the older schema and says what to run.
    refused = _rowforge("serve", "--port", "0", "--data-dir", str(data))
    assert refused.returncode == 1
    assert "older than this rowforge's" in refused.stderr
    assert "rowforge admin migrate" in refused.stderr
    check = _rowforge("admin", "--data-dir", str(data), "migrate", "--check")
    assert check.returncode == 1 and "this rowforge's is" in check.stdout
    migrated = _rowforge("admin", "--data-dir", str(data), "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.strip() == (
        f"upgraded the schema from revision {migrations.BASELINE} to {migrations.head()}")
    again = _rowforge("admin", "--data-dir", str(data), "migrate", "--check")
    assert again.returncode == 0, again.stdout

    with ServerProcess(data).start() as server:  # the fixture's data is the default project's
        client = RowForge(address=server.address)
        try:
            rows = client.table.list_all_rows("action", "notes")
            assert sorted(r["n"]["value"] for r in rows) == [9007199254740993 + i
                                                              for i in range(5)]
            assert all(r["output"]["value"] for r in rows)  # generated before the upgrade
            hits = client.table.hybrid_search("kb", "which port does the server listen on", k=1)
            assert "50051" in hits[0]["Text"]["value"]
            [info] = [f for f in client.file.iter_files() if f.name == "fixture.txt"]
            assert client.file.download_file(info.uri) == b"fixture file contents\n"
            [job] = client.batch.list_jobs().items
            assert sorted(r.request_id for r in client.batch.stream_results(
                job.job_id, follow=False)) == ["a", "b"]
        finally:
            client.close()

    with ServerProcess(data, args=["--auth"]).start() as server:  # its token still works
        client = RowForge(token=TOKEN, project_id="fixture", address=server.address)
        try:
            assert client.table.list_tables("action").items == []
        finally:
            client.close()


def test_a_schema_newer_than_the_server_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    made = _rowforge("admin", "--data-dir", str(data), "migrate")
    assert made.stdout.startswith("created the schema at revision"), made.stderr
    with sqlite3.connect(data / "rowforge.db") as conn:
        conn.execute(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '9999'")
    refused = _rowforge("serve", "--port", "0", "--data-dir", str(data))
    assert refused.returncode == 1
    assert "revision 9999, newer than this rowforge knows" in refused.stderr
    assert _rowforge("admin", "--data-dir", str(data), "migrate").returncode == 1
