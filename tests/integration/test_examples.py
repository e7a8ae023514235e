"""The seeds' examples in ``examples/`` run unchanged (imports aside) against a real server.

The seeds name models (``openai/gpt-5.2``, ``gemini-1.5-pro-002``, ``ellm/BAAI/bge-m3`` ...)
that a rowforge server serves only if configured. The server here is started exactly as the
README tells a newcomer: ``rowforge serve --config examples/offline.toml``, which maps those
names onto the built-in offline models (no key, no network).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OFFLINE_CONFIG = EXAMPLES / "offline.toml"
SEED_EMBED_MODEL = "ellm/BAAI/bge-m3"


@pytest.fixture(scope="module")
def seed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("examples"),
                         args=["--config", str(OFFLINE_CONFIG)])
    with proc.start():
        yield proc


def test_offline_config_names_every_model_the_examples_use() -> None:
    from rowforge.server.providers.registry import ModelRegistry

    config = tomllib.loads(OFFLINE_CONFIG.read_text())
    registry = ModelRegistry.from_config(config["models"])
    used = set()
    for path in EXAMPLES.glob("*.py"):
        used |= set(re.findall(r'(?:model|embedding_model)="([^"]+)"', path.read_text()))
    assert used, "no model names found in examples/"
    missing = sorted(m for m in used if m not in registry)
    assert not missing, f"examples/offline.toml lacks {missing}"
    for model_id in used:
        assert registry.get(model_id).transport == "builtin", model_id


def run_example(name: str, server: ServerProcess, tmp_path: Path,
                timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROWFORGE_", "JAMAI_", "AJAXAI_"))}
    env.update({"ROWFORGE_ADDRESS": server.address, "PYTHONUNBUFFERED": "1"})
    # Run from an empty directory so no stray .env is picked up.
    result = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_every_example_is_tested() -> None:
    tested = {name for name in re.findall(r'"(\w+\.py)"', Path(__file__).read_text())}
    assert {p.name for p in EXAMPLES.glob("*.py")} <= tested


def test_tables_complete(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("tables_complete.py", seed_server, tmp_path).stdout
    assert "Created table: qa_demo" in out
    assert re.search(r"Row ID: [0-9a-f-]{36}", out)
    assert re.search(r"Answer: \S", out)
    assert "Q: What is Python?\nA: " in out
    assert out.rstrip().endswith("Cleanup complete")


def test_tables_action(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("tables_action.py", seed_server, tmp_path).stdout
    assert "exists: True" in out
    assert re.search(r"Created row: [0-9a-f-]{36}", out)
    assert re.search(r"\nRow ID: [0-9a-f-]{36}", out)
    assert "where: 3" in out and "like: 2" in out
    assert "search: ['Goodbye world']" in out
    assert "columns: ['ID', 'Updated at', 'input', 'output']" in out
    assert "all rows: 6" in out and "updated: new_value" in out and "left: 5" in out
    assert "word_count: str" in out and "image: file" in out
    assert "copy: 5 rows" in out and "copy2: 0 rows" in out and "my_table: 5 rows" in out


def test_tables_chat(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("tables_chat.py", seed_server, tmp_path).stdout
    users = re.findall(r"^User: (.*)$", out, re.M)
    assert users == ["Hello!", "My name is Alice", "What's my name?"]
    assert all(line.strip() != "AI:" for line in re.findall(r"^AI:.*$", out, re.M))


def test_tables_rag(seed_server: ServerProcess, tmp_path: Path) -> None:
    # Twice: the second run deletes the knowledge table while the RAG table still uses it
    # (the seed's "delete if it exists, then create" idiom), then recreates both.
    outs = [run_example("tables_rag.py", seed_server, tmp_path).stdout for _ in range(2)]
    for out in outs:
        assert re.search(r"Embedded [1-9]\d* chunks", out)
        assert re.search(r"Answer: \S", out)
        assert "References: [" in out and "References: []" not in out
        assert re.search(r"^\d\.\d{4} ", out, re.M)
        # The column's model wrote the query (the fake answers with the key terms).
        assert "Search query: port server listen" in out
    assert outs[0] == outs[1]  # fresh tables: same rows, same answer


def test_python_columns(seed_server: ServerProcess, tmp_path: Path) -> None:
    from difflib import SequenceMatcher

    out = run_example("python_columns.py", seed_server, tmp_path).stdout
    ratio = SequenceMatcher(None, "ALICE TAN", "BOB LEE").ratio()
    assert out.splitlines()[:2] == ["MATCH (100%)", f"MISMATCH ({ratio * 100:.0f}%)"]


def test_direct_api(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("direct_api.py", seed_server, tmp_path).stdout.splitlines()
    assert "'openai/gpt-5.2'" in out[0] or "'claude-3.5-haiku'" in out[0]
    assert SEED_EMBED_MODEL in out[1]
    assert re.match(r"\S+: context=\d+", out[2])
    assert out[5].strip() and out[6].strip()  # whole and streamed answers
    assert int(out[-1]) > 0


def test_async_operations(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("async_operations.py", seed_server, tmp_path).stdout
    assert "my_table" in out.splitlines()[0]
    assert "5 rows added in parallel" in out


def test_batch_quickstart(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("batch_quickstart.py", seed_server, tmp_path).stdout
    assert "Hello world" in out


def test_batch_structured_output(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("batch_structured_output.py", seed_server, tmp_path).stdout
    assert re.search(r"^Title: \S", out, re.M) and re.search(r"^Features: \S", out, re.M)
    assert re.search(r"^Lead score: -?\d+, contact: ", out, re.M)


def test_batch_callbacks(seed_server: ServerProcess, tmp_path: Path) -> None:
    result = run_example("batch_callbacks.py", seed_server, tmp_path)
    out = result.stdout
    assert "Request cb_req_1 succeeded with response: " in out
    assert "Summarized document '" in out
    assert "Successfully processed success_req" in out
    assert ("An error occurred in callback for request error_trigger_req: Simulated processing "
            "error in callback") in out
    # The unhandled one was logged by the SDK, and delivery went on.
    assert "careless_callback" in result.stderr and "error_trigger_req" in result.stderr


@pytest.mark.parametrize(("name", "header", "count"), [
    ("batch_content_generation.py", "--- Generated Content for content_gen_", 3),
    ("batch_support_analysis.py", "--- Analysis for Ticket T10", 3),
    ("batch_product_catalog.py", "--- Product Details for P00", 3),
])
def test_batch_pipelines(seed_server: ServerProcess, tmp_path: Path, name: str, header: str,
                         count: int) -> None:
    out = run_example(name, seed_server, tmp_path).stdout
    assert out.count(header) == count, out
    assert "Failed to" not in out


def test_batch_monitoring(seed_server: ServerProcess, tmp_path: Path) -> None:
    out = run_example("batch_monitoring.py", seed_server, tmp_path).stdout
    assert re.search(r"^Status: (ready|processing|succeeded)$", out, re.M)
    assert re.search(r"^Progress: \d+/3$", out, re.M)
    assert re.search(r"^req_1: (pending|running|succeeded)$", out, re.M)
    assert sorted(re.findall(r"^(req_\d): succeeded$", out, re.M)) == ["req_1", "req_2",
                                                                       "req_3"]
    assert out.rstrip().endswith("Job not found")
