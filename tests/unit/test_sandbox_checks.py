"""Checks that need no worker process: limits and column code validation."""

from __future__ import annotations

import pytest

from rowforge.server.errors import InvalidArgument
from rowforge.server.sandbox import KINDS, SandboxError, SandboxLimits, check_code


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)
    with pytest.raises(ValueError, match="max_open_files"):
        SandboxLimits(max_open_files=3)


def test_check_code() -> None:
    check_code('row["x"] = 1')
    with pytest.raises(InvalidArgument) as info:
        check_code("x = (\n", field="gen_config.python_code")
    assert info.value.field_violations[0].field == "gen_config.python_code"
    assert "line 1" in info.value.message
    with pytest.raises(InvalidArgument, match="at most"):
        check_code("x = 1\n" * 100_000)
    with pytest.raises(InvalidArgument, match="null bytes"):
        check_code("x = 1\x00")


def test_sandbox_error_kinds() -> None:
    error = SandboxError("timeout", "Python column 'x' timed out after 10 s")
    assert (error.kind, error.message, str(error)) == (
        "timeout", "Python column 'x' timed out after 10 s", "Python column 'x' timed out after 10 s")
    assert "forbidden" in KINDS
    with pytest.raises(ValueError, match="unknown"):
        SandboxError("bogus", "no")
