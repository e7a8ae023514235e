"""JSON forms of schemas and cell states, as stored in the database.

Columns are stored in ``rf_user_tables.columns``; a cell's generation state in the row's
``s_<n>`` column. A DONE cell without error, usage or references stores SQL NULL, so input
cells cost nothing.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from rowforge.server.tables.model import (
    Cell,
    CellStatus,
    CellUsage,
    Chunk,
    ColumnSchema,
    EmbedGenConfig,
    GenConfig,
    LLMGenConfig,
    PythonGenConfig,
    RAGParams,
    References,
)

_KINDS: dict[type, str] = {LLMGenConfig: "llm", PythonGenConfig: "python", EmbedGenConfig: "embed"}


def gen_config_to_json(config: GenConfig | None) -> dict[str, Any] | None:
    if config is None:
        return None
    data = dataclasses.asdict(config)
    data["kind"] = _KINDS[type(config)]
    return data


def gen_config_from_json(data: dict[str, Any] | None) -> GenConfig | None:
    if not data:
        return None
    data = dict(data)
    kind = data.pop("kind")
    if kind == "llm":
        rag = data.pop("rag_params", None)
        return LLMGenConfig(**data, rag_params=RAGParams(**rag) if rag else None)
    if kind == "python":
        return PythonGenConfig(**data)
    if kind == "embed":
        return EmbedGenConfig(**data)
    raise ValueError(f"unknown gen config kind {kind!r}")


def column_to_json(col: ColumnSchema) -> dict[str, Any]:
    return {"id": col.id, "dtype": col.dtype, "gen_config": gen_config_to_json(col.gen_config),
            "system": col.system, "storage_name": col.storage_name}


def column_from_json(data: dict[str, Any]) -> ColumnSchema:
    return ColumnSchema(id=data["id"], dtype=data["dtype"],
                        gen_config=gen_config_from_json(data.get("gen_config")),
                        system=bool(data.get("system")), storage_name=data["storage_name"])


def references_to_json(refs: References) -> dict[str, Any]:
    data: dict[str, Any] = {"table_id": refs.table_id, "search_query": refs.search_query,
                            "chunks": [dataclasses.asdict(c) for c in refs.chunks]}
    if refs.query_model:
        data["query_model"] = refs.query_model
    if refs.query_usage is not None:
        data["query_u"] = [refs.query_usage.prompt_tokens, refs.query_usage.completion_tokens]
    return data


def references_from_json(data: dict[str, Any]) -> References:
    usage = data.get("query_u")
    return References(table_id=data["table_id"], search_query=data["search_query"],
                      chunks=tuple(Chunk(**c) for c in data.get("chunks", ())),
                      query_model=data.get("query_model", ""),
                      query_usage=CellUsage(usage[0], usage[1]) if usage else None)


#: Statuses of cells being generated: their state names the replica generating them (``o``),
#: so a live replica can finish the cells of a dead one (server/replicas.py).
UNFINISHED = frozenset({CellStatus.PENDING, CellStatus.RUNNING})


def state_to_json(cell: Cell, owner: str = "") -> dict[str, Any] | None:
    """The stored state of a cell (None for a plain DONE cell); a PENDING/RUNNING one names
    ``owner`` when given."""
    if (cell.status == CellStatus.DONE and not cell.error and cell.usage is None
            and cell.references is None and not cell.job):
        return None
    state: dict[str, Any] = {"st": cell.status.value}
    if owner and cell.status in UNFINISHED:
        state["o"] = owner
    if cell.error:
        state["err"] = cell.error
    if cell.usage is not None:
        state["u"] = [cell.usage.prompt_tokens, cell.usage.completion_tokens]
    if cell.references is not None:
        state["ref"] = references_to_json(cell.references)
    if cell.job:
        state["job"] = cell.job
    return state


#: The stored text of states holding only a status (e.g. PENDING, RUNNING).
_STATUS_ONLY = {status: json.dumps({"st": status.value}) for status in CellStatus}


@functools.cache
def _status_owner(status: CellStatus, owner: str) -> str:
    return json.dumps({"st": status.value, "o": owner})


def state_text(cell: Cell, owner: str = "") -> str | None:
    """:func:`state_to_json` as the JSON text stored in the ``s_<n>`` column (None: SQL NULL).

    The common states (a status alone; DONE with usage) are formatted directly: the write
    path stores one per generated cell.
    """
    if cell.error or cell.references is not None or cell.job:
        state = state_to_json(cell, owner)
        return None if state is None else json.dumps(state)
    usage = cell.usage
    if usage is None:
        if cell.status == CellStatus.DONE:
            return None
        if owner and cell.status in UNFINISHED:
            return _status_owner(cell.status, owner)
        return _STATUS_ONLY[cell.status]
    if owner and cell.status in UNFINISHED:
        return json.dumps(state_to_json(cell, owner))
    return (f'{{"st": "{cell.status.value}", "u": [{int(usage.prompt_tokens)}, '
            f'{int(usage.completion_tokens)}]}}')


def cell_from_stored(value: Any, state: dict[str, Any] | None) -> Cell:
    if not state:
        return Cell(value=value)
    usage = state.get("u")
    refs = state.get("ref")
    return Cell(value=value, status=CellStatus(state.get("st", "done")), error=state.get("err", ""),
                usage=CellUsage(usage[0], usage[1]) if usage else None,
                references=references_from_json(refs) if refs else None,
                job=state.get("job", ""))
