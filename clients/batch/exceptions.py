"""The AjaxAI SDK's exception names (``from ajaxai.classes.exceptions import ...``), as aliases
of the client's typed errors so ``except`` clauses written for either catch both."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rowforge.clients.exceptions import (
    AuthorizationError,
    InvalidArgumentError,
    NotFoundError,
    RateLimitError,
    RowForgeError,
    ServerError,
)

#: Base of every API error.
AjaxAiApiError = RowForgeError
#: Invalid, missing or insufficient credentials (UNAUTHENTICATED / PERMISSION_DENIED).
AjaxAiAuthorizationError = AuthorizationError
#: Rate limit or quota hit (RESOURCE_EXHAUSTED); ``.retry_after`` says how long to wait.
AjaxAiRateLimitError = RateLimitError
#: The job (or request) does not exist (NOT_FOUND).
AjaxAiJobNotFoundError = NotFoundError
#: The server failed (INTERNAL, UNKNOWN, UNAVAILABLE, DEADLINE_EXCEEDED ...).
AjaxAiServerError = ServerError

__all__ = [
    "AjaxAiApiError",
    "AjaxAiAuthorizationError",
    "AjaxAiJobNotFoundError",
    "AjaxAiRateLimitError",
    "AjaxAiServerError",
    "InvalidBatchRequestsError",
]


class InvalidBatchRequestsError(InvalidArgumentError):
    """Requests of a batch job the server refused (or the client found invalid before sending),
    by request id; the valid requests sent with them were kept. Fix and add them again.

    Attributes:
        request_ids: The refused requests, in the order they were added.
        errors: ``request_id -> error`` (its message and field violations say why).
    """

    def __init__(self, message: str, *, errors: Mapping[str, RowForgeError], **kwargs: Any
                 ) -> None:
        super().__init__(message, **kwargs)
        self.errors = dict(errors)
        self.request_ids = list(self.errors)

    @classmethod
    def of(cls, errors: Mapping[str, RowForgeError]) -> InvalidBatchRequestsError:
        ids = list(errors)
        shown = ", ".join(repr(i) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
        violations = [v for err in errors.values() for v in err.field_violations]
        return cls(f"{len(ids)} request(s) refused and not added: {shown}. "
                   + "; ".join(dict.fromkeys(e.message for e in errors.values()))[:2000],
                   errors=errors, reason="INVALID_BATCH_REQUESTS",
                   metadata={"requestIds": json.dumps(ids)},
                   field_violations=list(dict.fromkeys(violations)))
