"""Token lifecycle over a real server with auth on: scopes checked on every RPC (walked from
the protos), expired and revoked tokens refused with their reason, last use recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.server.scopes import METHOD_SCOPES, required_scope
from tests.support.fuzz import Rpc, api_rpcs
from tests.support.server import ServerProcess
from tests.support.status import details

RPCS = api_rpcs()


def admin(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rowforge.server", "admin", "--data-dir",
                          str(data_dir), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def token_id(token: str) -> str:
    return token.split("_")[1]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data = tmp_path_factory.mktemp("tokens")
    admin(data, "create-project", "Alpha", "--id", "alpha")
    tokens = {scope: admin(data, "create-token", "--project", "alpha", "--scope", scope)
              for scope in ("read", "write")}
    tokens["expired"] = admin(data, "create-token", "--project", "alpha", "--expires-in", "1s")
    tokens["revoked"] = admin(data, "create-token", "--project", "alpha", "--scope", "admin")
    admin(data, "revoke-token", token_id(tokens["revoked"]))
    time.sleep(1.1)  # the expired token is past its second
    with ServerProcess(data, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        yield proc, tokens


def call(address: str, rpc: Rpc, token: str) -> grpc.RpcError | None:
    """Call ``rpc`` with an empty request; the error, or None when it succeeded."""
    metadata = (("authorization", f"Bearer {token}"), ("x-project-id", "alpha"))
    request = rpc.new()
    with grpc.insecure_channel(address) as channel:
        kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
            (rpc.client_streaming, rpc.server_streaming)]
        method = kind(rpc.path, request_serializer=lambda m: m.SerializeToString(),
                      response_deserializer=lambda b: b)
        try:
            reply = method(iter([request]) if rpc.client_streaming else request,
                           metadata=metadata, timeout=10)
            if rpc.server_streaming:
                for _ in reply:
                    break
        except grpc.RpcError as err:
            return err
    return None


def test_every_rpc_has_a_declared_scope() -> None:
    assert set(METHOD_SCOPES) == {rpc.path for rpc in RPCS}
    assert required_scope("/rowforge.v1.TableService/NotARealMethod") == "admin"


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.path)
def test_a_read_token_may_read_and_nothing_else(secured, rpc: Rpc) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    err = call(proc.address, rpc, tokens["read"])
    if METHOD_SCOPES[rpc.path] == "read":
        assert err is None or err.code() not in (grpc.StatusCode.PERMISSION_DENIED,
                                                 grpc.StatusCode.UNAUTHENTICATED), err
        return
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    reason, meta, _ = details(err)
    assert reason == "INSUFFICIENT_SCOPE"
    assert meta == {"scope": "read", "requiredScope": "write"}


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.path)
def test_a_write_token_is_refused_nothing(secured, rpc: Rpc) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    err = call(proc.address, rpc, tokens["write"])
    assert err is None or err.code() not in (grpc.StatusCode.PERMISSION_DENIED,
                                             grpc.StatusCode.UNAUTHENTICATED), err


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.path)
@pytest.mark.parametrize(("which", "why"), [("expired", "TOKEN_EXPIRED"),
                                            ("revoked", "TOKEN_REVOKED")])
def test_expired_and_revoked_tokens_are_refused_everywhere(secured, rpc: Rpc, which: str,  # type: ignore[no-untyped-def]
                                                           why: str) -> None:
    proc, tokens = secured
    err = call(proc.address, rpc, tokens[which])
    assert err is not None and err.code() == grpc.StatusCode.UNAUTHENTICATED, err
    reason, meta, _ = details(err)
    assert reason == why and meta["tokenId"] == token_id(tokens[which])


def test_last_use_is_recorded_and_a_revocation_takes_effect(tmp_path: Path) -> None:
    admin(tmp_path, "create-project", "Alpha", "--id", "alpha")
    used = admin(tmp_path, "create-token", "--project", "alpha", "--scope", "read")
    idle = admin(tmp_path, "create-token", "--project", "alpha")
    health = next(r for r in RPCS if r.path.endswith("/ListModels"))
    with ServerProcess(tmp_path, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        assert call(proc.address, health, used) is None
    # The server writes last-used times in batches, and at the latest when it stops.
    listed = {row["id"]: row for row in map(json.loads, admin(
        tmp_path, "list-tokens", "--json").splitlines())}
    assert listed[token_id(used)]["lastUsed"] is not None
    assert listed[token_id(idle)]["lastUsed"] is None
    assert listed[token_id(used)]["scope"] == "read"
    assert listed[token_id(used)]["state"] == "active"
    admin(tmp_path, "revoke-token", token_id(used))
    with ServerProcess(tmp_path, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        err = call(proc.address, health, used)
        assert err is not None and details(err)[0] == "TOKEN_REVOKED"
    assert json.loads(admin(tmp_path, "list-tokens", "--json", "--project", "alpha"
                            ).splitlines()[0])["state"] == "revoked"
