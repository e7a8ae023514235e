"""Frames between the pool and its workers: a 4-byte big-endian length, then the body.

Control messages are small msgpack maps. Cell data travels as opaque frames: the pool packs
``{"code", "row"}`` and only the cell unpacks it; the cell packs its result and only the pool
unpacks it, after checking every value. Nothing is ever pickled.

pool -> worker: ``config`` (once), ``run`` + a payload frame, ``cancel``.
worker -> pool: ``ready`` or ``fatal`` (once), then per job either ``result`` + the cell's
frame, or ``error`` (``kind``, ``message``) for what the worker saw itself.
"""

from __future__ import annotations

import io
import os
import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
#: Frames larger than this from a worker are a protocol error, whatever the limits say.
MAX_FRAME = 1 << 31


def pack(message: dict[str, Any]) -> bytes:
    """A control message as one frame."""
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack(body: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A control message from a frame body."""
    message = msgpack.unpackb(body, raw=False)
    if not isinstance(message, dict):
        raise ValueError("control message is not a map")
    return message


class FrameReader:
    """Blocking frame reads from a file descriptor, straight into caller-owned buffers."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._file = io.FileIO(fd, "rb", closefd=False)

    def _fill(self, buf: bytearray) -> bool:
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self._file.readinto(view[got:])
            if not n:
                return False
            got += n
        return True

    def read_into(self) -> bytearray | None:
        """The next frame body as a fresh bytearray (so it can be wiped), ``None`` at EOF."""
        head = bytearray(HEADER.size)
        if not self._fill(head):
            return None
        (size,) = HEADER.unpack(head)
        body = bytearray(size)
        if not self._fill(body):
            return None
        return body

    def read_message(self) -> dict[str, Any] | None:
        """The next control message, ``None`` at EOF."""
        body = self.read_into()
        return None if body is None else unpack(body)


def write_all(fd: int, *chunks: bytes | bytearray | memoryview) -> None:
    """Write every chunk completely to a blocking descriptor."""
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
