"""Python columns in the engine, with a stand-in sandbox (the real one is exercised by the
integration tests): what ``row`` holds, how outputs are typed, how failures read."""

from __future__ import annotations

from typing import Any

from rowforge.server.errors import Internal
from rowforge.server.sandbox import SandboxError
from rowforge.server.tables.engine import LazySandbox
from rowforge.server.tables.model import CellStatus
from tests.unit.engine_memory import MemoryStore, col, llm, make_engine, python, table


class StandInPool:
    """Records what cells receive; answers with ``outputs[column]`` (or raises it)."""

    def __init__(self, outputs: dict[str, Any], start_error: Exception | None = None) -> None:
        self.outputs = outputs
        self.start_error = start_error
        self.starts = 0
        self.closed = False
        self.rows: list[tuple[str, dict[str, Any], float | None]] = []

    async def start(self) -> None:
        self.starts += 1
        if self.start_error is not None:
            raise self.start_error

    async def close(self) -> None:
        self.closed = True

    async def run(self, code: str, row: dict[str, Any], column: str, *,
                  timeout_s: float | None = None) -> Any:
        self.rows.append((column, dict(row), timeout_s))
        out = self.outputs[column]
        if isinstance(out, Exception):
            raise out
        return out


def engine_with(pool: StandInPool, store: MemoryStore | None = None, **settings: Any) -> Any:
    return engine_over(LazySandbox(lambda: pool), store, **settings)


def engine_over(sandbox: LazySandbox, store: MemoryStore | None = None, **settings: Any) -> Any:
    return make_engine(store, ports={"sandbox": sandbox}, **settings)


async def test_row_holds_every_column_to_the_left_and_outputs_are_typed():
    schema = table(col("a"), col("n", "int"), col("gen", gen=llm("${a}")),
                   col("as_text", gen=python("...")), col("as_int", "int", gen=python("...")),
                   col("as_json", gen=python("...")), col("right"))
    pool = StandInPool({"as_text": 42, "as_int": 7.0, "as_json": {"k": [1, "é"]}})
    store = MemoryStore()
    [result] = await engine_with(pool, store, sandbox_timeout_s=3).add_rows(
        schema, [{"a": "hello", "n": 5, "right": "not visible"}])
    column, row, timeout = pool.rows[0]
    assert column == "as_text"
    assert row == {"a": "hello", "n": 5, "gen": result.cells["gen"].value}
    assert 0 < timeout <= 3
    assert set(pool.rows[2][1]) == {"a", "n", "gen", "as_text", "as_int"}
    assert result.cells["as_text"].value == "42"
    assert result.cells["as_int"].value == 7
    assert result.cells["as_json"].value == '{"k": [1, "é"]}'
    assert store.rows[result.row_id]["as_int"].value == 7


async def test_sandbox_errors_and_bad_outputs_become_cell_errors():
    schema = table(col("a"), col("boom", gen=python("...")), col("bytes_in_str", gen=python("...")),
                   col("picture", "image", gen=python("...")), col("num", "int", gen=python("...")))
    pool = StandInPool({
        "boom": SandboxError("timeout", "Python column 'boom' timed out after 10 s"),
        "bytes_in_str": b"\x89PNG", "picture": b"\x89PNG", "num": "seven"})
    [result] = await engine_with(pool).add_rows(schema, [{"a": "x"}])
    cells = result.cells
    assert cells["boom"].error == "Python column 'boom' timed out after 10 s"
    # a Python column reads everything to its left: boom failed, so the rest are upstream errors
    assert cells["bytes_in_str"].error == "upstream column 'boom' failed"
    assert {c.status for c in cells.values()} == {CellStatus.ERROR}


async def test_output_checks_without_upstream_failures():
    for name, dtype, output, message in [
        ("s", "str", b"raw", "assigned bytes to a str column"),
        ("img", "image", b"\x89PNG", "file storage is not available"),
        ("img", "image", 3, "file storage is not available"),
        ("n", "int", "seven", "does not fit dtype int"),
    ]:
        schema = table(col("a"), col(name, dtype, gen=python("...")))
        [result] = await engine_with(StandInPool({name: output})).add_rows(schema, [{"a": "x"}])
        assert result.cells[name].status == CellStatus.ERROR
        assert message in result.cells[name].error, (name, result.cells[name].error)


async def test_a_sandbox_that_cannot_start_fails_every_python_cell_with_the_reason():
    reason = Internal("the Python sandbox cannot run cells: no Landlock",
                      reason="SANDBOX_MISCONFIGURED")
    pool = StandInPool({}, start_error=reason)
    schema = table(col("a"), col("p", gen=python("...")), col("g", gen=llm("${a}")))
    results = await engine_with(pool).add_rows(schema, [{"a": "1"}, {"a": "2"}])
    for result in results:
        assert result.cells["p"].error == reason.message
        assert result.cells["g"].status == CellStatus.DONE
    assert pool.starts == 1


async def test_a_failed_start_is_tried_again_with_a_fresh_pool(monkeypatch):
    from rowforge.server.tables.engine import sandbox_source

    clock = [1000.0]
    monkeypatch.setattr(sandbox_source.time, "monotonic", lambda: clock[0])
    broken = StandInPool({}, start_error=TimeoutError())  # e.g. a worker slow to start
    fresh = StandInPool({"p": "ran"})
    pools = iter([broken, fresh])
    engine = engine_over(LazySandbox(lambda: next(pools)))
    schema = table(col("a"), col("p", gen=python("...")))

    [first] = await engine.add_rows(schema, [{"a": "1"}])
    assert first.cells["p"].status == CellStatus.ERROR
    assert "could not start" in first.cells["p"].error  # a reason, not "internal error"
    assert broken.closed
    clock[0] += 1  # within the retry period: the same reason, no new start
    [second] = await engine.add_rows(schema, [{"a": "2"}])
    assert second.cells["p"].error == first.cells["p"].error and fresh.starts == 0
    clock[0] += sandbox_source.SANDBOX_RETRY_S
    [third] = await engine.add_rows(schema, [{"a": "3"}])
    assert third.cells["p"].value == "ran" and fresh.starts == 1
