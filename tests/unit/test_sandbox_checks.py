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


def test_servers_claim_distinct_uids(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from rowforge.server.sandbox import identity

    monkeypatch.setattr(identity, "_has_account", lambda uid: uid == 60105)
    first = identity.claim_uids(60100, 2, lock_dir=str(tmp_path))
    second = identity.claim_uids(60100, 3, lock_dir=str(tmp_path))  # skips 60103-60105
    assert first.uids == [60100, 60101]
    assert second.uids == [60106, 60107, 60108]
    with pytest.raises(OSError, match="no 2 free sandbox uids"):
        identity.claim_uids(60100, 2, lock_dir=str(tmp_path), blocks=1)
    first.release()  # a released (or dead) claimant's uids are free again
    again = identity.claim_uids(60100, 2, lock_dir=str(tmp_path))
    assert again.uids == [60100, 60101]
    again.release()
    second.release()
