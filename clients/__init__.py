"""rowforge's Python client: ``RowForge`` (sync) and ``AsyncRowForge`` (asyncio).

Shaped like the JamAI SDK, so its examples run with the import lines changed::

    from rowforge.clients import RowForge as JamAI
    import rowforge.clients.types as t

    jamai = JamAI()                   # ROWFORGE_ADDRESS, ROWFORGE_TOKEN, ROWFORGE_PROJECT_ID
    jamai.table.create_action_table(t.ActionTableSchemaCreate(id="qa", cols=[...]))

Batch jobs in the AjaxAI SDK's shape are in :mod:`rowforge.clients.batch`; errors are typed
(:mod:`rowforge.clients.exceptions`).
"""

from rowforge.clients import types
from rowforge.clients._client import AsyncRowForge, RowForge
from rowforge.clients._table_jobs import TableJob
from rowforge.clients._transport import AsyncStream
from rowforge.clients._version import __version__
from rowforge.clients.config import ClientConfig, RetryConfig, TLSConfig
from rowforge.clients.exceptions import (
    AbortedError,
    AlreadyExistsError,
    AuthenticationError,
    AuthorizationError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    JamAIError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestCancelledError,
    RowForgeError,
    ServerError,
    UnavailableError,
    UnimplementedError,
)
from rowforge.clients.types import get_value

#: The JamAI SDK's client names.
JamAI = RowForge
JamAIAsync = AsyncRowForge

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "AsyncRowForge",
    "AsyncStream",
    "AuthenticationError",
    "AuthorizationError",
    "ClientConfig",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "JamAI",
    "JamAIAsync",
    "JamAIError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestCancelledError",
    "RetryConfig",
    "RowForge",
    "RowForgeError",
    "ServerError",
    "TLSConfig",
    "TableJob",
    "UnavailableError",
    "UnimplementedError",
    "__version__",
    "get_value",
    "types",
]
