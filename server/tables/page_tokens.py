"""Opaque page tokens: base64url(msgpack([version, params_hash, cursor])).

The cursor is a keyset position (plain values only). The hash binds a token to the query
parameters that shape the result set, so reusing a token with another filter is refused.
Tokens are not secret: a forged cursor only moves the keyset position, and its values are
always bound as SQL parameters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgpack

from rowforge.server.errors import InvalidArgument

_VERSION = 1
MAX_TOKEN_CHARS = 4096


def params_hash(*params: Any) -> str:
    """A short stable hash of the parameters a token is bound to."""
    packed = msgpack.packb(list(params), use_bin_type=True)
    return hashlib.sha256(packed).hexdigest()[:16]


def encode(cursor: list[Any], bound_to: str) -> str:
    packed = msgpack.packb([_VERSION, bound_to, cursor], use_bin_type=True)
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


def decode(token: str, bound_to: str, field: str = "page_token") -> list[Any]:
    """The cursor of ``token``.

    Raises:
        InvalidArgument: malformed token, or one issued for other query parameters.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidArgument.field(field, "is not a valid page token", reason="INVALID_PAGE_TOKEN")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, token_hash, cursor = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (binascii.Error, ValueError, TypeError, msgpack.UnpackException):
        raise InvalidArgument.field(field, "is not a valid page token",
                                    reason="INVALID_PAGE_TOKEN") from None
    if version != _VERSION or not isinstance(cursor, list):
        raise InvalidArgument.field(field, "is not a valid page token", reason="INVALID_PAGE_TOKEN")
    if token_hash != bound_to:
        raise InvalidArgument.field(
            field, "was issued for different query parameters; send the same filter, search "
                   "and order as the request that returned it", reason="PAGE_TOKEN_MISMATCH")
    return cursor
