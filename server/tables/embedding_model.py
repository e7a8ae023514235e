"""The model behind an embedding column, and whether it still fits the column's vectors.

An embedding column records the length of its vectors when its knowledge table is created
(:attr:`EmbedGenConfig.dimension`). If the server is later configured with another
``embedding_size`` for that model (a new route, another model under the same id), new
vectors would not fit the stored ones: mixing them would corrupt the table's vector index.
Every place that embeds for a column (the row engine, EmbedFile, a search's query) checks
:func:`embedding_model_problem` first and refuses with FAILED_PRECONDITION
``EMBEDDING_MODEL_CHANGED``, which names the fix; the server's start-up reports every such table
(:mod:`rowforge.server.knowledge.dimensions`).
"""

from __future__ import annotations

from typing import Any

from rowforge.server.errors import FailedPrecondition
from rowforge.server.tables.model import ColumnSchema, EmbedGenConfig, TableSchema

EMBEDDING_MODEL_CHANGED = "EMBEDDING_MODEL_CHANGED"


def embedding_spec(models: Any, config: EmbedGenConfig) -> Any:
    """The model that embeds a column (its ``embedding_model``, else the default one).

    Raises:
        NotFound / InvalidArgument: the model is not configured, or cannot embed.
    """
    if config.embedding_model:
        return models.require(config.embedding_model, "embed")
    return models.default("embed")


def embedding_model_problem(schema: TableSchema, column: ColumnSchema,
                            spec: Any) -> FailedPrecondition | None:
    """The error to raise when ``spec`` (the column's model as configured now) makes vectors
    of another length than the column holds; None when it fits (or nothing is recorded)."""
    config = column.gen_config
    assert isinstance(config, EmbedGenConfig)
    recorded, configured = config.dimension, spec.embedding_size
    if not recorded or not configured or recorded == configured:
        return None
    return FailedPrecondition(
        f"knowledge table {schema.id!r} holds {recorded}-number vectors in column "
        f"{column.id!r}, but its embedding model {spec.id!r} is now configured for "
        f"{configured}-number vectors; mixing them would corrupt the table's vector index. "
        f"Restore the model's configuration (embedding_size = {recorded}, with the route that "
        "made these vectors), or create a new knowledge table and embed its documents again",
        reason=EMBEDDING_MODEL_CHANGED,
        metadata={"tableId": schema.id, "column": column.id, "model": spec.id,
                  "tableDimension": str(recorded), "modelDimension": str(configured)},
        resource_type="knowledge table", resource_name=schema.id)


def check_embedding_model(schema: TableSchema, column: ColumnSchema, spec: Any) -> None:
    """Raise :func:`embedding_model_problem`'s error, if any."""
    problem = embedding_model_problem(schema, column, spec)
    if problem is not None:
        raise problem
