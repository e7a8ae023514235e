"""`rowforge tables create`'s schema file: both shapes (JamAI's and the gRPC request's), YAML
and JSON, documented in --help; every mistake is one line on stderr with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import _one_line, rowforge
from tests.support.server import ServerProcess

YAML_JAMAI = """\
id: {id}
table_type: action
cols:
  - id: question
    dtype: str
  - id: answer
    dtype: str
    gen_config:
      model: rowforge/chat
      prompt: "Answer briefly: ${{question}}"
      max_tokens: 30
  - id: words
    dtype: int
    gen_config:
      python_code: row["words"] = len(row["answer"].split())
"""

GRPC_SHAPE = {"table_type": "TABLE_TYPE_ACTION", "table_id": "{id}", "cols": [
    {"id": "question", "dtype": "str"},
    {"id": "answer", "dtype": "str",
     "gen_config": {"llm": {"prompt": "Answer briefly: ${question}", "max_tokens": 30}}},
    {"id": "words", "dtype": "int",
     "gen_config": {"python": {"python_code": "row['words'] = len(row['answer'].split())"}}}]}


@pytest.mark.parametrize(("name", "text"), [
    ("jamai.yaml", YAML_JAMAI.format(id="shape_jamai_yaml")),
    ("jamai.json", json.dumps({"id": "shape_jamai_json", "cols": [
        {"id": "question"},
        {"id": "answer", "gen_config": {"prompt": "Answer: ${question}"}},
        {"id": "words", "dtype": "int",
         "gen_config": {"python_code": "row['words'] = 1"}}]})),
    ("grpc.json", json.dumps(GRPC_SHAPE).replace("{id}", "shape_grpc_json")),
    ("grpc.yaml", json.dumps(GRPC_SHAPE).replace("{id}", "shape_grpc_yaml")),  # JSON is YAML
])
def test_both_shapes_create_the_same_table(server: ServerProcess, tmp_path: Path, name: str,
                                           text: str) -> None:
    (tmp_path / name).write_text(text)
    args = ["tables", "create", name] + ([] if "table_type" in text else ["--type", "action"])
    out = rowforge(server, *args, cwd=tmp_path).stdout
    table_id = "shape_" + name.replace(".", "_")
    assert f"created action table {table_id!r} with 3 columns" in out
    schema = json.loads(rowforge(server, "tables", "get", "action", table_id, "--json").stdout)
    kinds = {c["id"]: (c.get("gen_config") or {}).get("object") for c in schema["cols"]}
    assert kinds["answer"] == "gen_config.llm" and kinds["words"] == "gen_config.python"


@pytest.mark.parametrize(("text", "args", "expected"), [
    ("id: t\ncols:\n  - id: q\n  - id: a\n    gen_config:\n      modle: rowforge/chat\n",
     ["--type", "action"],
     "rowforge: s.yaml: cols.1.gen_config.modle: unknown field (did you mean 'model'?)"),
    ("id: t\ncols:\n  - id: q\n    dtyp: str\n", ["--type", "action"],
     "rowforge: s.yaml: cols.0.dtyp: unknown field (did you mean 'dtype'?)"),
    ("id: [\n", ["--type", "action"], "rowforge: s.yaml: not valid YAML at line 2"),
    ("- a\n- b\n", ["--type", "action"], "rowforge: s.yaml: must be a mapping with 'id' and "
                                         "'cols' (see rowforge tables create --help)"),
    ("id: t\ncols: []\n", [], "rowforge: s.yaml: no table type: give --type "
                              "action|knowledge|chat or 'table_type' in the file"),
    ("id: t\ntable_type: spreadsheet\n", [], "rowforge: s.yaml: table_type: 'spreadsheet' is not"),
    ("cols: []\n", ["--type", "action"], "rowforge: s.yaml: id: Field required"),
])
def test_schema_mistakes_are_one_line(server: ServerProcess, tmp_path: Path, text: str,
                                      args: list[str], expected: str) -> None:
    (tmp_path / "s.yaml").write_text(text)
    line = _one_line(rowforge(server, "tables", "create", "s.yaml", *args, ok=False,
                              cwd=tmp_path), 2)
    assert line.startswith(expected), line


def test_missing_file_and_missing_argument(server: ServerProcess, tmp_path: Path) -> None:
    line = _one_line(rowforge(server, "tables", "create", "nope.yaml", ok=False, cwd=tmp_path), 2)
    assert line == "rowforge: nope.yaml: no such file"
    line = _one_line(rowforge(server, "tables", "create", ok=False, cwd=tmp_path), 2)
    assert "required: schema" in line and "rowforge tables create --help" in line


def test_help_documents_the_schema_file(server: ServerProcess) -> None:
    out = rowforge(server, "tables", "create", "--help").stdout
    for expected in ("YAML or JSON", "table_type: action", "gen_config:", "prompt:",
                     "python_code:", "embedding_model", "gen_config: {llm: {...}}"):
        assert expected in out, expected
    assert "docs/config.md" in rowforge(server, "serve", "--help").stdout
