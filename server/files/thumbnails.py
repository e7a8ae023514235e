"""PNG thumbnails of stored images, made with Pillow and cached on disk by (content, size)."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from rowforge.server.errors import InvalidArgument

DEFAULT_SIZE = 256
MAX_SIZE = 1024
MAX_PIXELS = 50_000_000
"""Largest image (width x height) we decode: a small file can expand to gigabytes of pixels."""

# Only the formats FileService accepts as images: Pillow never probes other decoders.
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
_SHA_RE = re.compile(r"[0-9a-f]{64}")


def check_size(size: int, *, field: str = "size") -> int:
    """The thumbnail size to use for a requested ``size`` (0 means the default).

    Raises:
        InvalidArgument: outside 1..``MAX_SIZE``.
    """
    if size == 0:
        return DEFAULT_SIZE
    if not 1 <= size <= MAX_SIZE:
        raise InvalidArgument.field(field, f"must be between 1 and {MAX_SIZE} pixels (0: "
                                           f"{DEFAULT_SIZE})")
    return size


def render(data: bytes, size: int) -> bytes:
    """A PNG whose longest side is ``size`` (images already smaller keep their size).

    Animated images give their first frame. Blocking: run it in a thread.

    Raises:
        InvalidArgument: ``UNREADABLE_IMAGE`` or ``IMAGE_TOO_LARGE``.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=_FORMATS) as opened:
            image: Image.Image = opened
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise InvalidArgument(
                    f"the image is {width}x{height} pixels; thumbnails are made for images of "
                    f"at most {MAX_PIXELS:,} pixels", reason="IMAGE_TOO_LARGE",
                    metadata={"width": width, "height": height})
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                # Palette and exotic modes resize poorly (nearest neighbour): convert first.
                has_alpha = image.mode.endswith("A") or "transparency" in image.info
                image = image.convert("RGBA" if has_alpha else "RGB")
            image.thumbnail((size, size), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            image.save(out, format="PNG", optimize=False)
            return out.getvalue()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidArgument(f"the image cannot be decoded ({type(exc).__name__})",
                              reason="UNREADABLE_IMAGE") from exc


class ThumbnailCache:
    """Thumbnails on disk under ``root/<sha[:2]>/<sha>-<size>.png``.

    Keys are content hashes, so one cache serves every project; :meth:`drop` runs when the
    last file with that content is deleted.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, sha256: str, size: int) -> Path:
        if not _SHA_RE.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / f"{sha256}-{size}.png"

    def get(self, sha256: str, size: int) -> bytes | None:
        try:
            return self._path(sha256, size).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, sha256: str, size: int, png: bytes) -> None:
        path = self._path(sha256, size)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}")
        try:
            temp.write_bytes(png)
            os.replace(temp, path)  # readers see a whole thumbnail or none
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def drop(self, sha256: str) -> None:
        directory = self.root / sha256[:2]
        if directory.is_dir():
            for path in directory.glob(f"{sha256}-*.png"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
