"""The asyncio client's types (``clients/_async_api.pyi``) are generated from the sync
methods; a change to one without the other fails here. (``tests/typing/client_types.py``
asserts what a type checker makes of both clients; ``make lint`` checks it.)"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("gen_async_api",
                                                  ROOT / "scripts" / "gen_async_api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stub_is_what_the_sync_methods_generate() -> None:
    if not (Path(sys.executable).with_name("ruff").exists() or shutil.which("ruff")):
        pytest.skip("ruff (a dev dependency) formats the generated stub")
    assert _generator().up_to_date(), "run: .venv/bin/python scripts/gen_async_api.py"


def test_every_public_method_has_an_async_signature() -> None:
    from rowforge.clients._files import FileClient
    from rowforge.clients._models import ModelMethods
    from rowforge.clients._table_jobs import TableJob
    from rowforge.clients._tables import TableClient
    from rowforge.clients.batch_jobs import BatchClient

    stub = ast.parse((ROOT / "clients" / "_async_api.pyi").read_text())
    declared = {node.name: {f.name for f in node.body
                            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
                for node in stub.body if isinstance(node, ast.ClassDef)}
    for cls, name in [(TableClient, "AsyncTableClient"), (FileClient, "AsyncFileClient"),
                      (BatchClient, "AsyncBatchClient"), (ModelMethods, "AsyncModelMethods"),
                      (TableJob, "AsyncTableJob")]:
        public = {m for m in vars(cls) if not m.startswith("_") and callable(getattr(cls, m))}
        assert public == declared[name], name


def test_streams_are_plain_defs_and_whole_results_coroutines() -> None:
    gen = _generator()
    source = ast.parse(
        "class C:\n"
        "    def whole(self) -> t.Job: ...\n"
        "    def rows(self) -> Iterator[t.Row]: ...\n"
        "    def either(self, s: bool) -> t.Done | SyncStream[t.Chunk]: ...\n")
    whole, rows, either = (gen.async_method(f) for f in source.body[0].body)
    assert isinstance(whole, ast.AsyncFunctionDef) and ast.unparse(whole.returns) == "t.Job"
    assert isinstance(rows, ast.FunctionDef)
    assert ast.unparse(rows.returns) == "AsyncStream[t.Row]"
    assert isinstance(either, ast.FunctionDef)
    assert ast.unparse(either.returns) == "Awaitable[t.Done | AsyncStream[t.Chunk]]"
