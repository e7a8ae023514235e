"""``rowforge admin backup`` under write load, then ``restore`` into a new data dir: the
restored server answers as the original did at one moment (rows whole, each generated cell done
as the original's or, for the call caught mid-generation, failed as interrupted; files
downloadable; knowledge search finding its rows)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import rowforge.clients.types as t
from rowforge.clients import RowForge
from tests.support.server import ServerProcess


def _admin(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                           str(data), *args], capture_output=True, text=True, timeout=120)


def _setup(client: RowForge) -> None:
    client.table.create_action_table(t.ActionTableSchemaCreate(id="notes", cols=[
        t.ColumnSchemaCreate(id="x", dtype="str"),
        t.ColumnSchemaCreate(id="y", dtype="str", gen_config=t.LLMGenConfig(
            model="rowforge/chat", prompt="Echo ${x}", max_tokens=12))]))
    client.table.create_knowledge_table(t.KnowledgeTableSchemaCreate(
        id="kb", cols=[], embedding_model="rowforge/embed"))


def _load(client: RowForge, stop: threading.Event, uploaded: dict[str, bytes]) -> None:
    """Rows (with an LLM cell), knowledge rows and files, added and deleted until stopped."""
    i = 0
    while not stop.is_set():
        client.table.add_table_rows("action", t.MultiRowAddRequest(
            table_id="notes", data=[{"x": f"note {i}-{j}"} for j in range(5)], stream=False))
        client.table.add_table_rows("knowledge", t.MultiRowAddRequest(table_id="kb", data=[
            {"Title": f"doc {i}", "Text": f"zebra{i} walks past the lighthouse {i}"}],
            stream=False))
        content = f"file {i}\n".encode() * (i + 1)
        info = client.file.upload_file(content, name=f"f{i}.txt")
        uploaded[info.uri] = content
        if i % 3 == 2:  # deletes race the backup's copy of the blobs
            gone = next(iter(uploaded))
            client.file.delete_file(gone)
            uploaded.pop(gone)
        i += 1


def test_a_backup_under_write_load_restores_a_consistent_server(tmp_path: Path) -> None:
    original, restored, copy = tmp_path / "original", tmp_path / "restored", tmp_path / "bk"
    uploaded: dict[str, bytes] = {}
    with ServerProcess(original).start() as server:
        client = RowForge(address=server.address)
        _setup(client)
        stop = threading.Event()
        writer = threading.Thread(target=_load, args=(client, stop, uploaded))
        writer.start()
        try:
            while len(uploaded) < 4:  # some of everything before the backup starts
                stop.wait(0.05)
            before = len(client.table.list_all_rows("action", "notes"))
            made = _admin(original, "backup", str(copy))
            after = len(client.table.list_all_rows("action", "notes"))
        finally:
            stop.set()
            writer.join(60)
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(f"backed up to {copy}: schema revision")
        final = {r["ID"]: r for r in client.table.list_all_rows("action", "notes")}
        client.close()
    assert (copy / "rowforge.db").exists() and (copy / "indexes").is_dir()

    done = _admin(restored, "restore", str(copy))
    assert done.returncode == 0, done.stderr
    assert _admin(restored, "restore", str(copy)).returncode == 1  # no silent overwrite

    with ServerProcess(restored).start() as server:
        client = RowForge(address=server.address)
        try:
            rows = client.table.list_all_rows("action", "notes")
            assert before <= len(rows) <= after and len(rows) % 5 == 0  # whole AddRows calls
            interrupted = 0
            for row in rows:
                if row["y"]["value"]:
                    assert row == final[row["ID"]]  # exactly the original's row
                else:  # the snapshot caught the one AddRows in flight between insert and write:
                    # its cells come back failed, with the reason, never left pending
                    assert row["y"]["status"] == "error", row
                    assert row["y"]["error"].startswith("interrupted"), row
                    interrupted += 1
            assert interrupted <= 5  # one call of 5 rows at most (one writer thread)
            files = client.file.list_files(limit=100).items
            assert files
            for info in files:
                expected = f"file {info.name[1:-4]}\n".encode() * (int(info.name[1:-4]) + 1)
                assert client.file.download_file(info.uri) == expected
            kb = client.table.list_all_rows("knowledge", "kb")
            assert kb
            for row in kb[-3:]:  # the restored indexes find the restored rows
                text = row["Text"]["value"]
                hits = client.table.hybrid_search("kb", text.split()[0], k=1)
                assert hits and hits[0]["Text"]["value"] == text
        finally:
            client.close()


def test_backup_refuses_what_it_does_not_cover(tmp_path: Path) -> None:
    on_postgres = _admin(tmp_path, "--database-url", "postgresql+asyncpg://u@127.0.0.1/db",
                         "backup", str(tmp_path / "bk"))
    assert on_postgres.returncode == 1 and "pg_dump" in on_postgres.stderr
    assert "no database at" in _admin(tmp_path, "backup", str(tmp_path / "bk")).stderr
    assert _admin(tmp_path, "migrate").returncode == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "not empty" in _admin(tmp_path, "backup", str(tmp_path / "full")).stderr
    assert "not a rowforge backup" in _admin(tmp_path / "new", "restore",
                                             str(tmp_path / "full")).stderr
