"""FileStore (the files domain) on a real database and a real blob directory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from rowforge.server.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from rowforge.server.files.blobs import LocalBlobStore
from rowforge.server.files.store import FileStore, Limits, UploadMetadata
from rowforge.server.files.thumbnails import ThumbnailCache
from rowforge.server.storage.db import Database
from rowforge.server.storage.files_tables import files as files_table

LIMITS = Limits(document=2_000_000, image=100_000, audio=50_000)
TEXT = b"hello, files\n" * 100
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200)


def png(width: int = 60, height: int = 30, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


async def make_store(url: str, root: Path) -> tuple[FileStore, Database]:
    db = Database(url)
    await db.prepare_schema()
    store = FileStore(db, LocalBlobStore(root / "files"), ThumbnailCache(root / "files" / "thumbs"),
                      limits=LIMITS, idle_timeout_s=0.3, reference_finders=[])
    await store.start()
    return store, db


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FileStore]:
    """SQLite only: for behaviour that does not depend on the database."""
    store, db = await make_store(f"sqlite+aiosqlite:///{tmp_path / 'files.db'}", tmp_path)
    yield store
    await db.close()


@pytest.fixture
async def any_store(database_url: str, tmp_path: Path) -> AsyncIterator[FileStore]:
    """On SQLite and on PostgreSQL."""
    store, db = await make_store(database_url, tmp_path)
    yield store
    await db.close()


async def parts(name: str, data: bytes, *, chunk: int = 4096, content_type: str = "",
                size: int = 0, sha256: str = "") -> AsyncIterator[UploadMetadata | bytes]:
    yield UploadMetadata(name, content_type, size, sha256)
    for start in range(0, len(data), chunk):
        yield data[start:start + chunk]


async def upload(store: FileStore, name: str, data: bytes, project: str = "p1", **meta):  # type: ignore[no-untyped-def]
    return await store.upload(project, parts(name, data, **meta))


def stored_files(store: FileStore) -> list[Path]:
    root = store.blobs.root  # type: ignore[attr-defined]
    return sorted(p for d in ("blobs", "tmp") for p in (root / d).rglob("*") if p.is_file())


async def row_count(store: FileStore) -> int:
    async with store.db.read() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(files_table)) or 0)


# --- uploads ---------------------------------------------------------------------------------

async def test_upload_then_get(any_store: FileStore) -> None:
    data = png()
    info = await upload(any_store, "../../chart.png", data, sha256=hashlib.sha256(data).hexdigest(),
                        size=len(data))
    assert info.name == "chart.png"
    assert info.uri == f"file://p1/{info.id}/chart.png"
    assert (info.content_type, info.kind, info.size) == ("image/png", "image", len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await any_store.get("p1", info.uri) == info
    assert await any_store.get("p1", f"file://p1/{info.id}") == info
    assert await any_store.read_bytes("p1", info.uri) == data


async def test_other_projects_and_wrong_names_are_not_found(store: FileStore) -> None:
    info = await upload(store, "a.txt", TEXT)
    for project, uri in [("p2", info.uri),
                         ("p2", info.uri.replace("file://p1/", "file://p2/")),
                         ("p1", info.uri.replace("a.txt", "b.txt")),
                         ("p1", f"file://p1/{'0' * 32}/a.txt")]:
        with pytest.raises(NotFound) as err:
            await store.get(project, uri)
        assert err.value.reason == "FILE_NOT_FOUND"
    with pytest.raises(InvalidArgument):
        await store.get("p1", "file://p1/../../etc/passwd")


@pytest.mark.parametrize(("make_parts", "reason", "field"), [
    (lambda: parts("empty.txt", b""), "EMPTY_FILE", None),
    (lambda: parts("fake.png", TEXT), "FILE_TYPE_MISMATCH", None),
    (lambda: parts("a.txt", TEXT, content_type="image/png"), "FILE_TYPE_MISMATCH", None),
    (lambda: parts("a.bin", b"\x7fELF" + bytes(100)), "UNSUPPORTED_FILE_TYPE", None),
    (lambda: parts("a.txt", TEXT, size=len(TEXT) + 1), "SIZE_MISMATCH", "metadata.size"),
    (lambda: parts("a.txt", TEXT, size=len(TEXT) - 1), "SIZE_MISMATCH", "metadata.size"),
    (lambda: parts("a.txt", TEXT, sha256="0" * 64), "CHECKSUM_MISMATCH", "metadata.sha256"),
    (lambda: parts("a.txt", TEXT, sha256="xyz"), "INVALID_ARGUMENT", "metadata.sha256"),
    (lambda: parts("a.txt", TEXT, size=-5), "INVALID_ARGUMENT", "metadata.size"),
    (lambda: parts("..", TEXT), "INVALID_FILE_NAME", "metadata.name"),
    (lambda: parts("big.png", png(), size=LIMITS.image + 1), "FILE_TOO_LARGE", "metadata.size"),
    (lambda: parts("huge.txt", TEXT, size=LIMITS.document + 1), "FILE_TOO_LARGE",
     "metadata.size"),
    (lambda: parts("big.png", png() + bytes(LIMITS.image)), "FILE_TOO_LARGE", "metadata.size"),
])
async def test_bad_uploads_leave_nothing(store: FileStore, make_parts, reason, field) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as err:
        await store.upload("p1", make_parts())
    assert err.value.reason == reason
    if field:
        assert [v.field for v in err.value.field_violations] == [field]
    assert stored_files(store) == []
    assert await row_count(store) == 0


async def test_message_order(store: FileStore) -> None:
    async def chunk_first() -> AsyncIterator[UploadMetadata | bytes]:
        yield b"data"

    async def metadata_twice() -> AsyncIterator[UploadMetadata | bytes]:
        yield UploadMetadata("a.txt")
        yield b"data" * 20_000
        yield UploadMetadata("b.txt")

    async def nothing() -> AsyncIterator[UploadMetadata | bytes]:
        return
        yield  # pragma: no cover

    for make, reason in [(chunk_first, "METADATA_REQUIRED"), (nothing, "METADATA_REQUIRED"),
                         (metadata_twice, "UNEXPECTED_METADATA")]:
        with pytest.raises(InvalidArgument) as err:
            await store.upload("p1", make())
        assert err.value.reason == reason
    assert stored_files(store) == []


async def test_oversize_is_refused_without_reading_the_rest(store: FileStore) -> None:
    sent = 0

    async def endless_png() -> AsyncIterator[UploadMetadata | bytes]:
        nonlocal sent
        yield UploadMetadata("photo.png")
        head = png()
        sent += len(head)
        yield head
        while True:
            sent += 10_000
            yield bytes(10_000)

    with pytest.raises(InvalidArgument) as err:
        await store.upload("p1", endless_png())
    assert err.value.reason == "FILE_TOO_LARGE"
    assert err.value.metadata == {"limitBytes": str(LIMITS.image), "kind": "image"}
    assert sent <= LIMITS.image + 10_000
    assert stored_files(store) == []


async def test_stalled_upload_times_out_and_cleans_up(store: FileStore) -> None:
    async def stalls() -> AsyncIterator[UploadMetadata | bytes]:
        yield UploadMetadata("a.txt")
        yield TEXT * 100  # past the sniffing head: written to a temp file
        await asyncio.sleep(30)

    with pytest.raises(DeadlineExceeded) as err:
        await store.upload("p1", stalls())
    assert err.value.reason == "UPLOAD_STALLED"
    assert stored_files(store) == []


async def test_cancelled_upload_leaves_nothing(store: FileStore) -> None:
    store.idle_timeout_s = 30
    written = asyncio.Event()

    async def slow() -> AsyncIterator[UploadMetadata | bytes]:
        yield UploadMetadata("a.txt")
        for _ in range(1000):
            yield TEXT * 100
            written.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(store.upload("p1", slow()))
    await written.wait()
    await asyncio.sleep(0.05)
    assert stored_files(store), "the upload should be in a temp file by now"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stored_files(store) == []
    assert await row_count(store) == 0


async def test_concurrent_identical_uploads_share_one_blob(any_store: FileStore) -> None:
    data = os.urandom(300_000)
    infos = await asyncio.gather(*(upload(any_store, f"same-{i}.txt", b"x" + data.hex().encode(),
                                          chunk=7_000) for i in range(6)))
    assert len({i.id for i in infos}) == 6
    assert len({i.sha256 for i in infos}) == 1
    assert stored_files(any_store) == [any_store.blobs.path_for(infos[0].sha256)]  # type: ignore[attr-defined]


async def test_kind_limits_apply_per_kind(store: FileStore) -> None:
    # 60 kB is fine as a document, too much as audio (50 kB).
    await upload(store, "a.txt", b"t" * 60_000)
    with pytest.raises(InvalidArgument) as err:
        await upload(store, "a.wav", WAV + bytes(60_000))
    assert err.value.reason == "FILE_TOO_LARGE"
    assert err.value.metadata["kind"] == "audio"


# --- server-side bytes, URIs of columns, reads -------------------------------------------------

async def test_store_bytes(store: FileStore) -> None:
    info = await store.store_bytes("p1", png(), name="chart", expected_kind="image")
    assert (info.name, info.kind, info.content_type) == ("chart.png", "image", "image/png")
    assert (await store.store_bytes("p1", TEXT, name="notes.md")).content_type == "text/markdown"
    with pytest.raises(InvalidArgument) as err:
        await store.store_bytes("p1", png(), name="x", expected_kind="audio")
    assert err.value.reason == "FILE_KIND_MISMATCH"
    with pytest.raises(InvalidArgument) as err:
        await store.store_bytes("p1", WAV + bytes(LIMITS.audio), name="long")
    assert err.value.reason == "FILE_TOO_LARGE"
    with pytest.raises(InvalidArgument) as err:
        await store.store_bytes("p1", b"", name="x")
    assert err.value.reason == "EMPTY_FILE"
    assert await row_count(store) == 2


async def test_validate_uri_checks_kind_and_project(store: FileStore) -> None:
    image = await upload(store, "a.png", png())
    audio = await upload(store, "a.wav", WAV)
    assert await store.validate_uri("p1", image.uri, "image") == image
    assert await store.validate_uri("p1", audio.uri, "audio") == audio
    assert await store.validate_uri("p1", audio.uri, "file") == audio
    with pytest.raises(InvalidArgument) as err:
        await store.validate_uri("p1", image.uri, "audio")
    assert err.value.reason == "FILE_KIND_MISMATCH"
    with pytest.raises(NotFound):
        await store.validate_uri("p2", image.uri, "image")
    with pytest.raises(InvalidArgument) as err:
        await store.validate_uri("p1", "s3://bucket/a.png", "image")
    assert err.value.reason == "INVALID_FILE_URI"


async def test_read_limits_and_model_reads(store: FileStore) -> None:
    info = await upload(store, "a.txt", TEXT)
    with pytest.raises(InvalidArgument) as err:
        await store.read_bytes("p1", info.uri, max_bytes=10)
    assert err.value.reason == "FILE_TOO_LARGE"
    assert await store.read_for_model("p1", info.uri) == (TEXT, "text/plain")
    with pytest.raises(NotFound):
        await store.read_for_model("p2", info.uri)


@pytest.mark.parametrize(("offset", "length", "expected"), [
    (0, 0, slice(0, None)), (10, 0, slice(10, None)), (10, 5, slice(10, 15)),
    (1299, 0, slice(1299, None)), (1290, 100, slice(1290, None)),
])
async def test_ranges(store: FileStore, offset: int, length: int, expected: slice) -> None:
    info = await upload(store, "a.txt", TEXT)
    selected = await store.open_range("p1", info.uri, offset, length)
    data = b"".join([c async for c in selected])
    assert data == TEXT[expected]
    assert selected.length == len(data)


@pytest.mark.parametrize(("offset", "length", "reason"), [
    (1300, 0, "RANGE_NOT_SATISFIABLE"), (5000, 1, "RANGE_NOT_SATISFIABLE"),
    (-1, 0, "INVALID_ARGUMENT"), (0, -1, "INVALID_ARGUMENT"),
])
async def test_bad_ranges(store: FileStore, offset: int, length: int, reason: str) -> None:
    info = await upload(store, "a.txt", TEXT)
    assert info.size == 1300
    with pytest.raises(InvalidArgument) as err:
        await store.open_range("p1", info.uri, offset, length)
    assert err.value.reason == reason


async def test_missing_content_is_an_internal_error(store: FileStore) -> None:
    info = await upload(store, "a.txt", TEXT)
    store.blobs.path_for(info.sha256).unlink()  # type: ignore[attr-defined]
    with pytest.raises(Internal) as err:
        await store.read_bytes("p1", info.uri)
    assert err.value.reason == "BLOB_MISSING"


# --- listing -------------------------------------------------------------------------------------

async def test_list_pages_newest_first(any_store: FileStore) -> None:
    uploaded = [await upload(any_store, f"f{i}.txt", f"file {i}".encode()) for i in range(7)]
    await upload(any_store, "other.txt", b"other project", project="p2")
    expected = [i.id for i in reversed(uploaded)]

    seen: list[str] = []
    token = ""
    while True:
        page = await any_store.list("p1", limit=3, page_token=token)
        assert page.total == 7
        assert len(page.items) <= 3
        seen += [i.id for i in page.items]
        token = page.next_page_token
        if not token:
            break
    assert seen == expected

    page = await any_store.list("p1", offset=5)
    assert [i.id for i in page.items] == expected[5:]
    assert page.next_page_token == ""
    assert [i.id for i in (await any_store.list("p1", offset=2, limit=2)).items] == expected[2:4]
    assert (await any_store.list("p1", offset=100)).items == []


async def test_list_arguments(store: FileStore) -> None:
    await upload(store, "a.txt", TEXT)
    await upload(store, "b.txt", TEXT)
    token = (await store.list("p1", limit=1)).next_page_token
    assert token
    for kwargs, field in [({"limit": 101}, "limit"), ({"limit": -1}, "limit"),
                          ({"offset": -1}, "offset"), ({"page_token": "garbage!"}, "page_token"),
                          ({"page_token": "eyJ2IjoxfQ"}, "page_token")]:
        with pytest.raises(InvalidArgument) as err:
            await store.list("p1", **kwargs)
        assert [v.field for v in err.value.field_violations] == [field]
    with pytest.raises(InvalidArgument) as err:
        await store.list("p2", page_token=token)  # another project's token
    assert err.value.reason == "INVALID_PAGE_TOKEN"


# --- deletion ------------------------------------------------------------------------------------

async def test_delete_refused_while_referenced_unless_forced(any_store: FileStore) -> None:
    info = await upload(any_store, "a.png", png())
    asked: list[tuple[str, str]] = []

    async def tables_using(project_id: str, uri: str) -> list[str]:
        asked.append((project_id, uri))
        return ["photos", "album"] if uri == info.uri else []

    async def nobody(project_id: str, uri: str) -> list[str]:
        return []

    any_store.reference_finders.extend([tables_using, nobody])
    with pytest.raises(FailedPrecondition) as err:
        await any_store.delete("p1", info.uri)
    assert err.value.reason == "FILE_IN_USE"
    assert err.value.metadata["tables"] == "album,photos"
    assert "album, photos" in err.value.message
    assert asked == [("p1", info.uri)]
    assert await any_store.get("p1", info.uri) == info

    await any_store.delete("p1", info.uri, force=True)
    with pytest.raises(NotFound):
        await any_store.get("p1", info.uri)
    assert stored_files(any_store) == []
    with pytest.raises(NotFound):
        await any_store.delete("p1", info.uri, force=True)


async def test_content_stays_while_any_project_has_it(any_store: FileStore) -> None:
    data = png()
    mine = await upload(any_store, "a.png", data, project="p1")
    theirs = await upload(any_store, "b.png", data, project="p2")
    thumb = await any_store.thumbnail("p1", mine.uri, 16)
    assert thumb.startswith(b"\x89PNG")
    with pytest.raises(NotFound):
        await any_store.delete("p2", mine.uri)
    await any_store.delete("p1", mine.uri)
    assert await any_store.read_bytes("p2", theirs.uri) == data
    await any_store.delete("p2", theirs.uri)
    assert stored_files(any_store) == []
    assert not any(any_store.thumbs.root.rglob("*.png"))


# --- thumbnails ----------------------------------------------------------------------------------

async def test_thumbnails(store: FileStore) -> None:
    info = await upload(store, "wide.png", png(600, 300))
    thumb = Image.open(io.BytesIO(await store.thumbnail("p1", info.uri)))
    assert (thumb.format, thumb.size) == ("PNG", (256, 128))
    assert Image.open(io.BytesIO(await store.thumbnail("p1", info.uri, 1024))).size == (600, 300)
    # Cached by content and size: served without the original.
    store.blobs.path_for(info.sha256).unlink()  # type: ignore[attr-defined]
    again = Image.open(io.BytesIO(await store.thumbnail("p1", info.uri, 256)))
    assert again.size == (256, 128)


@pytest.mark.parametrize("image_format", ["JPEG", "GIF", "WEBP"])
async def test_thumbnails_of_other_formats(store: FileStore, image_format: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (100, 200), (0, 90, 200)).save(out, image_format)
    info = await upload(store, f"a.{image_format.lower()}", out.getvalue())
    thumb = Image.open(io.BytesIO(await store.thumbnail("p1", info.uri, 50)))
    assert (thumb.format, thumb.size) == ("PNG", (25, 50))


async def test_thumbnail_refusals(store: FileStore) -> None:
    text = await upload(store, "a.txt", TEXT)
    broken = await upload(store, "broken.png", b"\x89PNG\r\n\x1a\n" + b"junk" * 100)
    image = await upload(store, "a.png", png())
    cases = [(text.uri, 0, "NOT_AN_IMAGE"), (broken.uri, 0, "UNREADABLE_IMAGE"),
             (image.uri, 1025, "INVALID_ARGUMENT"), (image.uri, -1, "INVALID_ARGUMENT")]
    for uri, size, reason in cases:
        with pytest.raises(InvalidArgument) as err:
            await store.thumbnail("p1", uri, size)
        assert err.value.reason == reason
    with pytest.raises(NotFound):
        await store.thumbnail("p2", image.uri)


async def test_project_ids_that_cannot_be_in_a_uri_are_refused_before_storing(
        store: FileStore) -> None:
    with pytest.raises(InvalidArgument) as err:
        await upload(store, "a.txt", TEXT, project="../escape")
    assert err.value.reason == "INVALID_PROJECT_ID"
    assert stored_files(store) == []
    with pytest.raises(NotFound):
        await store.get("../escape", f"file://x/{'0' * 32}/a.txt")
