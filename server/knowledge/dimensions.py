"""Start-up check: do the knowledge tables' embedding models still make vectors that fit?

A knowledge table records the length of its vectors per embedding column when it is created
(:attr:`~rowforge.server.tables.model.EmbedGenConfig.dimension`). When the server starts with
a configuration in which a table's model makes vectors of another length (``embedding_size``
changed, or another model now answers under the same id), this check finds it before the
first request and logs one ERROR per table, naming the table, the column, both lengths and
the fix.

The server still starts (one misconfigured model must not take every other table and
project down, and an operator may need the service to export or re-create the table). The
affected table is unusable for anything that would embed with the changed model, each
refused with FAILED_PRECONDITION ``EMBEDDING_MODEL_CHANGED`` naming the fix
(:mod:`rowforge.server.tables.embedding_model`): searches, EmbedFile, and the embedding cells
of new or updated rows (ERROR cells, nothing of the wrong length is written). Its stored
vectors, and vectors given explicitly with the recorded length, stay valid: restoring the
configuration makes the table whole again.

Tables created before lengths were recorded get theirs here, once: the length of a stored
vector, else (no vectors yet) the model's configured size.
"""

from __future__ import annotations

import logging
from typing import Any

from rowforge.server.errors import FailedPrecondition, InvalidArgument, NotFound, RowforgeError
from rowforge.server.tables.embedding_model import embedding_model_problem, embedding_spec
from rowforge.server.tables.model import EmbedGenConfig, TableSchema

log = logging.getLogger("rowforge.knowledge")


async def check_embedding_dimensions(tables: Any, models: Any) -> list[RowforgeError]:
    """Record missing vector lengths, then report (log ERROR, and return) one problem per
    knowledge table whose embedding model no longer fits it or is gone.

    Args:
        tables: The table store (``knowledge_tables``, ``vector_length``,
            ``record_embedding_dimensions``).
        models: The model registry.
    """
    problems: list[RowforgeError] = []
    for schema in await tables.knowledge_tables():
        try:
            schema = await _record_missing(tables, models, schema)
        except NotFound:
            continue  # deleted meanwhile
        problem = _problem(schema, models)
        if problem is not None:
            problems.append(problem)
            log.error("knowledge table %s/%s cannot embed: %s", schema.project_id, schema.id,
                      problem.message,
                      extra={"project": schema.project_id, "table": schema.id,
                             "reason": problem.reason, **problem.metadata})
    return problems


def _problem(schema: TableSchema, models: Any) -> RowforgeError | None:
    for column in schema.columns:
        config = column.gen_config
        if not isinstance(config, EmbedGenConfig):
            continue
        try:
            spec = embedding_spec(models, config)
        except (NotFound, InvalidArgument) as exc:
            return FailedPrecondition(
                f"knowledge table {schema.id!r}: its embedding model "
                f"{config.embedding_model!r} (column {column.id!r}) cannot embed on this "
                f"server: {exc.message}", reason="EMBEDDING_MODEL_UNAVAILABLE",
                metadata={"tableId": schema.id, "column": column.id,
                          "model": config.embedding_model})
        problem = embedding_model_problem(schema, column, spec)
        if problem is not None:
            return problem
    return None


async def _record_missing(tables: Any, models: Any, schema: TableSchema) -> TableSchema:
    missing = {}
    for column in schema.columns:
        config = column.gen_config
        if not isinstance(config, EmbedGenConfig) or config.dimension:
            continue
        length = await tables.vector_length(schema, column.id)
        if length is None:
            try:
                length = embedding_spec(models, config).embedding_size
            except (NotFound, InvalidArgument):
                continue
        if length:
            missing[column.id] = length
    if not missing:
        return schema
    log.info("recording the vector lengths of knowledge table %s/%s: %s", schema.project_id,
             schema.id, missing)
    return await tables.record_embedding_dimensions(schema, missing)
