"""The public surface, pinned (as Temporal does): changing it must be deliberate."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "rowforge.clients": [
        "AbortedError", "AlreadyExistsError", "AsyncRowForge", "AsyncStream",
        "AuthenticationError", "AuthorizationError", "ClientConfig", "DeadlineExceededError",
        "FailedPreconditionError", "InvalidArgumentError", "JamAI", "JamAIAsync", "JamAIError",
        "NotFoundError", "PermissionDeniedError", "RateLimitError", "RequestCancelledError",
        "RetryConfig", "RowForge", "RowForgeError", "ServerError", "TableJob", "TLSConfig",
        "UnavailableError", "UnimplementedError", "__version__", "get_value", "types",
    ],
    "rowforge.clients.exceptions": [
        "AbortedError", "AlreadyExistsError", "AuthenticationError", "AuthorizationError",
        "ContextWindowExceededError", "DeadlineExceededError", "FailedPreconditionError",
        "FileNotStoredError", "InvalidArgumentError", "InvalidPageTokenError",
        "InvalidWhereError", "JamAIError", "JobNotFoundError", "ModelNotFoundError",
        "NotFoundError", "OutOfRangeError", "PermissionDeniedError", "RateLimitError",
        "RequestCancelledError", "RowForgeError", "RowNotFoundError", "ServerError",
        "TableAlreadyExistsError", "TableNotFoundError", "UnavailableError",
        "UnimplementedError", "error_class", "from_rpc_error",
    ],
    "rowforge.clients.batch": [
        "AddRequestResponse", "AjaxAiApiError", "AjaxAiAuthorizationError", "AjaxAiBatchJob",
        "AjaxAiClient", "AjaxAiJobNotFoundError", "AjaxAiRateLimitError", "AjaxAiRequestItem",
        "AjaxAiServerError", "InvalidBatchRequestsError", "BatchJob", "BatchRequestEvent",
        "BatchRequestResult", "JobMetrics", "JobPerformanceMetrics", "JobState", "RequestItem", "RequestRef", "RequestState",
        "RequestSummary", "SubmitJobResponse", "TextResponse", "UsageStats", "create_batch_job",
        "get_batch_job",
    ],
    "rowforge.clients.batch.exceptions": [
        "AjaxAiApiError", "AjaxAiAuthorizationError", "AjaxAiJobNotFoundError",
        "AjaxAiRateLimitError", "AjaxAiServerError", "InvalidBatchRequestsError",
    ],
    "rowforge.clients.batch.events": ["BatchRequestEvent"],
    "rowforge.clients.batch_jobs": [
        "AddRequestsResponse", "BatchClient", "BatchRequest", "BatchResult", "ItemError", "Job",
        "JobEvent", "JobMetrics", "JobState", "RequestInfo", "RequestState",
    ],
}

#: The JamAI seed's type names must stay available.
SEED_TYPES = [
    "ActionTableSchemaCreate", "ColumnSchemaCreate", "LLMGenConfig", "PythonGenConfig",
    "RAGParams", "KnowledgeTableSchemaCreate", "ChatTableSchemaCreate", "MultiRowAddRequest",
    "MultiRowUpdateRequest", "MultiRowDeleteRequest", "MultiRowRegenRequest", "ChatRequest",
    "ChatEntry", "EmbeddingRequest", "RowAddRequest", "RowUpdateRequest", "RowDeleteRequest",
]


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exports_are_pinned(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is exported but missing"


def test_seed_type_names() -> None:
    types = importlib.import_module("rowforge.clients.types")
    for name in SEED_TYPES:
        assert name in types.__all__ and hasattr(types, name)
    for name in types.__all__:
        assert hasattr(types, name)


def test_seed_aliases() -> None:
    clients = importlib.import_module("rowforge.clients")
    assert clients.JamAI is clients.RowForge and clients.JamAIAsync is clients.AsyncRowForge
    assert clients.JamAIError is clients.RowForgeError
