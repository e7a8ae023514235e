"""Request ids: taken from the caller's ``x-request-id`` (when it is a sensible token) or made
here, returned in the response's initial metadata and every error's details
(``google.rpc.RequestInfo``), and put on every log line written while the request runs."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Mapping

HEADER = "x-request-id"
#: What a caller's id may look like (anything else is replaced by one made here).
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_current: contextvars.ContextVar[str] = contextvars.ContextVar("rowforge_request_id",
                                                               default="")


def request_id_for(metadata: Mapping[str, str]) -> str:
    """The caller's ``x-request-id`` if it is acceptable, else a new one (32 hex digits)."""
    given = metadata.get(HEADER, "")
    return given if _ACCEPTED.match(given) else uuid.uuid4().hex


def set_request_id(request_id: str) -> None:
    """The request id of the task serving the call (and of the tasks it starts)."""
    _current.set(request_id)


def current_request_id() -> str:
    """The id of the request being served ("" outside one)."""
    return _current.get()


class RequestIdFilter(logging.Filter):
    """Puts ``requestId`` on every log record (empty outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "requestId"):
            record.requestId = _current.get()
        return True
