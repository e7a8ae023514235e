"""LocalBlobStore: temp files while hashing, atomic dedup commit, ranges, cleanup on failure."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

from rowforge.server.files.blobs import LocalBlobStore


@pytest.fixture
async def blobs(tmp_path: Path) -> LocalBlobStore:
    store = LocalBlobStore(tmp_path / "files", stale_after_s=120)
    await store.start()
    return store


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


async def put(blobs: LocalBlobStore, data: bytes, chunk: int = 1000) -> tuple[str, bool]:
    writer = blobs.open_write()
    try:
        for start in range(0, len(data), chunk):
            await writer.write(data[start:start + chunk])
        sha = await writer.finish()
        return sha, await blobs.commit(writer, sha)
    finally:
        writer.discard()


async def test_write_hashes_and_commits_under_the_content_hash(blobs: LocalBlobStore) -> None:
    data = os.urandom(10_000)
    sha, created = await put(blobs, data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert created
    path = blobs.path_for(sha)
    assert path == blobs.root / "blobs" / sha[:2] / sha
    assert path.read_bytes() == data
    assert files_under(blobs.tmp_dir) == []
    assert await blobs.exists(sha)


async def test_identical_content_is_stored_once(blobs: LocalBlobStore) -> None:
    data = b"same bytes" * 1000
    results = await asyncio.gather(*(put(blobs, data, chunk=97) for _ in range(5)))
    shas = {sha for sha, _ in results}
    assert len(shas) == 1
    assert sum(created for _, created in results) == 1
    assert files_under(blobs.blob_dir) == [blobs.path_for(shas.pop())]
    assert files_under(blobs.tmp_dir) == []


async def test_discard_removes_the_temp_file(blobs: LocalBlobStore) -> None:
    writer = blobs.open_write()
    await writer.write(b"partial")
    assert len(files_under(blobs.tmp_dir)) == 1
    writer.discard()
    writer.discard()  # idempotent
    assert files_under(blobs.tmp_dir) == []


async def test_cancelled_writer_leaves_nothing(blobs: LocalBlobStore) -> None:
    started = asyncio.Event()

    async def upload_forever() -> None:
        writer = blobs.open_write()
        try:
            while True:
                await writer.write(os.urandom(256 * 1024))
                started.set()
        finally:
            writer.discard()

    task = asyncio.create_task(upload_forever())
    await started.wait()
    assert files_under(blobs.tmp_dir)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert files_under(blobs.tmp_dir) == []
    await asyncio.sleep(0.05)  # the thread's last write lands on the unlinked file
    assert files_under(blobs.tmp_dir) == []


async def test_commit_refuses_an_unfinished_or_mismatched_writer(blobs: LocalBlobStore) -> None:
    writer = blobs.open_write()
    await writer.write(b"abc")
    with pytest.raises(ValueError):
        await blobs.commit(writer, hashlib.sha256(b"abc").hexdigest())
    await writer.finish()
    with pytest.raises(ValueError):
        await blobs.commit(writer, "0" * 64)
    writer.discard()


@pytest.mark.parametrize(("offset", "length", "chunk"), [
    (0, None, 4096), (0, None, 1000), (5, 10, 3), (9_990, None, 4), (0, 10_000, 10_000),
    (123, 5_000, 999), (9_999, 1, 7),
])
async def test_ranges(blobs: LocalBlobStore, offset: int, length: int | None,
                      chunk: int) -> None:
    data = os.urandom(10_000)
    sha, _ = await put(blobs, data)
    parts = [c async for c in blobs.open_range(sha, offset, length, chunk_size=chunk)]
    end = len(data) if length is None else offset + length
    assert b"".join(parts) == data[offset:end]
    assert all(0 < len(p) <= chunk for p in parts)


async def test_range_of_a_missing_blob(blobs: LocalBlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        async for _ in blobs.open_range("a" * 64):
            pass


async def test_stopping_a_read_early_closes_the_file(blobs: LocalBlobStore) -> None:
    sha, _ = await put(blobs, os.urandom(100_000))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        reader = blobs.open_range(sha, chunk_size=1000)
        await anext(reader)
        await reader.aclose()
    await asyncio.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= before


async def test_delete(blobs: LocalBlobStore) -> None:
    sha, _ = await put(blobs, b"x" * 10)
    await blobs.delete(sha)
    assert not await blobs.exists(sha)
    await blobs.delete(sha)  # already gone: fine


@pytest.mark.parametrize("bad", ["", "../" * 21 + "x", "A" * 64, "g" * 64, "a" * 63])
def test_paths_only_from_hashes(blobs: LocalBlobStore, bad: str) -> None:
    with pytest.raises(ValueError):
        blobs.path_for(bad)


async def test_guard_serialises_one_hash(blobs: LocalBlobStore) -> None:
    sha = "b" * 64
    inside = 0
    peak = 0

    async def critical() -> None:
        nonlocal inside, peak
        async with blobs.guard(sha):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(critical() for _ in range(5)))
    assert peak == 1


async def test_guard_holds_across_stores_sharing_a_directory(blobs: LocalBlobStore) -> None:
    # Two stores on one directory stand for two processes: only the file lock serialises them.
    other = LocalBlobStore(blobs.root)
    sha = "d" * 64
    inside = 0
    peak = 0

    async def critical(store: LocalBlobStore) -> None:
        nonlocal inside, peak
        async with store.guard(sha):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(critical(s) for s in [blobs, other] * 3))
    assert peak == 1


@pytest.mark.parametrize("same_store", [True, False])
async def test_guard_is_released_when_a_waiter_is_cancelled(blobs: LocalBlobStore,
                                                            same_store: bool) -> None:
    sha = "c" * 64
    contender = blobs if same_store else LocalBlobStore(blobs.root)
    async with blobs.guard(sha):
        waiter = asyncio.create_task(contender.guard(sha).__aenter__())
        await asyncio.sleep(0.02)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    async with asyncio.timeout(2):
        async with blobs.guard(sha):
            pass


async def test_start_sweeps_only_stale_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "files", stale_after_s=60)
    await store.start()
    stale = store.tmp_dir / "up-1-dead.part"
    fresh = store.tmp_dir / "up-2-live.part"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    await LocalBlobStore(tmp_path / "files", stale_after_s=60).start()
    assert not stale.exists()
    assert fresh.exists()


async def test_start_removes_partial_uploads_of_dead_writers_at_once(tmp_path: Path) -> None:
    """A SIGKILLed writer's .part goes on the next start whatever its age; a live writer's,
    another host's (a shared directory) and an unparsable name wait for the age limit."""
    from rowforge.server import leftovers

    store = LocalBlobStore(tmp_path / "files", stale_after_s=3600)
    await store.start()
    killed = await asyncio.create_subprocess_exec("sleep", "60")
    killed.kill()  # SIGKILL, like a crashed server
    await killed.wait()
    live = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        def part(tag: str) -> Path:
            path = store.tmp_dir / f"up-{tag}-{os.urandom(8).hex()}.part"
            path.write_bytes(b"x" * 1000)
            return path

        dead = part(f"{leftovers.HOST}-{killed.pid}")
        mine = part(leftovers.owner_tag())  # an earlier process with this pid (containers)
        alive = part(f"{leftovers.HOST}-{live.pid}")
        other_host = part(f"other.host-{killed.pid}")
        legacy = store.tmp_dir / f"up-{killed.pid}-{os.urandom(8).hex()}.part"
        legacy.write_bytes(b"x")
        await LocalBlobStore(tmp_path / "files", stale_after_s=3600).start()
        assert not dead.exists() and not mine.exists()
        assert alive.exists() and other_host.exists() and legacy.exists()
        # A running store never sweeps its own uploads.
        mine = part(leftovers.owner_tag())
        assert store.sweep_temporary() == 0 and mine.exists()
    finally:
        live.kill()
        await live.wait()
    # Uploads are named after their writer.
    writer = store.open_write()
    try:
        assert writer.path.name.startswith(f"up-{leftovers.owner_tag()}-")
    finally:
        writer.discard()
