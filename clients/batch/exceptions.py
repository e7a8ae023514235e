"""The AjaxAI SDK's exception names (``from ajaxai.classes.exceptions import ...``), as aliases
of the client's typed errors so ``except`` clauses written for either catch both."""

from rowforge.clients.exceptions import (
    AuthorizationError,
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
]
