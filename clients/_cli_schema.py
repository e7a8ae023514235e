"""The table schema file of ``rowforge tables create``: YAML or JSON, in the JamAI shape (the
Python client's ``TableSchemaCreate``) or the gRPC shape (``CreateTableRequest`` as JSON), with
every mistake reported as one line."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pydantic

from rowforge.clients import types as t
from rowforge.clients.exceptions import InvalidArgumentError

SCHEMA_HELP = """\
The schema file (YAML or JSON) names the table and its columns, in order:

  id: qa                      # table id (or --id)
  table_type: action          # or --type: action | knowledge | chat
  cols:
    - id: question            # an input column
      dtype: str              # str, int, float, bool, file, image, audio
    - id: answer              # an LLM column
      dtype: str
      gen_config:
        model: rowforge/chat  # optional: the server's default chat model
        system_prompt: Be brief.
        prompt: "Answer briefly: ${question}"
        max_tokens: 100
    - id: words               # a Python column
      dtype: int
      gen_config:
        python_code: row["words"] = len(row["answer"].split())

The same in JSON: {"id": "qa", "table_type": "action", "cols": [{"id": "question",
"dtype": "str"}, {"id": "answer", "dtype": "str", "gen_config": {"prompt": "..."}}]}.
A knowledge table may add `embedding_model: rowforge/embed`. The gRPC shape
(CreateTableRequest as JSON: table_id, TABLE_TYPE_ACTION, gen_config: {llm: {...}} or
{python: {...}}) is accepted too.
"""

_KINDS = {"llm": "gen_config.llm", "python": "gen_config.python", "embed": "gen_config.embed"}
_TYPES = {"TABLE_TYPE_ACTION": "action", "TABLE_TYPE_KNOWLEDGE": "knowledge",
          "TABLE_TYPE_CHAT": "chat"}


def schema_error(path: str, description: str) -> InvalidArgumentError:
    """A usage error about the schema file (one line, exit code 2)."""
    return InvalidArgumentError(f"{path}: {description}", reason="INVALID_ARGUMENT",
                                field_violations=[("schema", description)])


def load_document(path: str) -> Any:
    """A JSON or YAML file (YAML needs PyYAML)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise schema_error(path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise schema_error(path, f"cannot read it ({exc})") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:  # optional: pip install pyyaml
            raise schema_error(path, "reading YAML needs PyYAML (pip install pyyaml); or give "
                                     "a .json file") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise schema_error(path, f"not valid YAML{where}: {problem}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise schema_error(path, f"not valid JSON: {err}") from None


def load_table_schema(path: str, table_type: str | None, table_id: str | None
                      ) -> tuple[str, t.TableSchemaCreate]:
    """``(table type, schema)`` from the file, ``--type`` and ``--id`` (which win).

    Raises:
        InvalidArgumentError: one line naming the file and the field, with the right form.
    """
    document = load_document(path)
    if not isinstance(document, dict):
        raise schema_error(path, "must be a mapping with 'id' and 'cols' (see rowforge tables "
                                 "create --help)")
    document = _jamai_shape(dict(document))
    file_type = document.pop("table_type", None)
    kind = table_type or file_type
    if not kind:
        raise schema_error(path, "no table type: give --type action|knowledge|chat or "
                                 "'table_type' in the file")
    if kind not in ("action", "knowledge", "chat"):
        raise schema_error(path, f"table_type: {kind!r} is not action, knowledge or chat")
    if table_id:
        document["id"] = table_id
    model = t.KnowledgeTableSchemaCreate if kind == "knowledge" else t.TableSchemaCreate
    try:
        return kind, model.model_validate(document)
    except pydantic.ValidationError as exc:
        raise schema_error(path, describe_validation(exc)) from None


def _jamai_shape(document: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the gRPC shape (table_id, TABLE_TYPE_*, gen_config: {llm: {...}}) as JamAI's."""
    if "table_id" in document and "id" not in document:
        document["id"] = document.pop("table_id")
    if isinstance(document.get("table_type"), str):
        document["table_type"] = _TYPES.get(document["table_type"], document["table_type"])
    cols = document.get("cols")
    if isinstance(cols, list):
        document["cols"] = [_column(c) for c in cols]
    return document


def _column(col: Any) -> Any:
    if not isinstance(col, dict):
        return col
    config = col.get("gen_config")
    if isinstance(config, dict) and len(config) == 1:
        (key, value), = config.items()
        if key in _KINDS and isinstance(value, dict):
            col = {**col, "gen_config": {"object": _KINDS[key], **value}}
    return col


def describe_validation(exc: pydantic.ValidationError) -> str:
    """Pydantic errors as one line: ``cols.1.gen_config.modle: unknown field (did you mean
    'model'?)``; several are joined with ``; ``."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith("gen_config.")]
        where = ".".join(loc) or "schema"
        if err["type"] == "extra_forbidden":
            text = f"{where}: unknown field{_suggestion(err, exc)}"
        else:
            text = f"{where}: {err['msg']}"
        problems.append(text)
    return "; ".join(dict.fromkeys(problems))


def _suggestion(err: Any, exc: pydantic.ValidationError) -> str:
    name = str(err["loc"][-1])
    known: set[str] = set()
    for model in (t.TableSchemaCreate, t.KnowledgeTableSchemaCreate, t.ColumnSchemaCreate,
                  t.LLMGenConfig, t.PythonGenConfig, t.EmbedGenConfig, t.RAGParams):
        known |= set(model.model_fields)
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""
