"""The client's credentials against a server with auth on: tokens and projects travel as
metadata, failures are typed, and each project sees only its own resources."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import rowforge.clients.types as t
from rowforge.clients import RowForge
from rowforge.clients import exceptions as ex
from rowforge.clients.batch import create_batch_job
from rowforge.clients.batch.exceptions import AjaxAiAuthorizationError
from tests.support.server import ServerProcess


def admin(data_dir: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "rowforge.clients.cli", "admin", "--data-dir",
                          str(data_dir), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    data = tmp_path_factory.mktemp("client-auth")
    tokens = {}
    for project in ("alpha", "beta"):
        admin(data, "create-project", project.title(), "--id", project)
        tokens[project] = admin(data, "create-token", "--project", project)
    with ServerProcess(data, env={"ROWFORGE_AUTH": "true"}).start() as proc:
        yield proc, tokens


def test_missing_and_invalid_tokens(secured, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    proc, _ = secured
    monkeypatch.delenv("ROWFORGE_TOKEN", raising=False)
    monkeypatch.delenv("JAMAI_TOKEN", raising=False)
    with RowForge(address=proc.address) as client, pytest.raises(ex.AuthenticationError) as info:
        client.model_ids()
    assert info.value.reason == "MISSING_TOKEN"
    with RowForge(token="rf_x_nope", address=proc.address) as client, \
            pytest.raises(ex.AuthenticationError) as info:
        client.table.list_tables("action")
    assert info.value.reason == "INVALID_TOKEN"
    with pytest.raises(AjaxAiAuthorizationError):
        create_batch_job(api_key="invalid_key", address=proc.address)


def test_projects_are_isolated(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    with RowForge(token=tokens["alpha"], project_id="alpha", address=proc.address) as alpha, \
            RowForge(token=tokens["beta"], project_id="beta", address=proc.address) as beta:
        alpha.table.create_action_table(t.ActionTableSchemaCreate(id="private", cols=[
            t.ColumnSchemaCreate(id="x")]))
        assert alpha.table.get_table("action", "private").id == "private"
        with pytest.raises(ex.TableNotFoundError):
            beta.table.get_table("action", "private")
        assert [x.id for x in beta.table.iter_tables("action")] == []
    with RowForge(token=tokens["alpha"], project_id="beta", address=proc.address) as wrong, \
            pytest.raises(ex.PermissionDeniedError) as info:
        wrong.table.list_tables("action")
    assert info.value.reason == "PROJECT_ACCESS_DENIED"


def test_environment_credentials_and_cli(secured) -> None:  # type: ignore[no-untyped-def]
    proc, tokens = secured
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
    env.update({"ROWFORGE_ADDRESS": proc.address, "ROWFORGE_TOKEN": tokens["beta"]})
    ok = subprocess.run([sys.executable, "-m", "rowforge.clients.cli", "tables", "list"],
                        env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    denied = subprocess.run([sys.executable, "-m", "rowforge.clients.cli", "--project", "alpha",
                             "tables", "list"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert denied.returncode == 1 and "PROJECT_ACCESS_DENIED" in denied.stderr


def test_cli_without_a_token_says_how_to_pass_one(secured) -> None:  # type: ignore[no-untyped-def]
    proc, _ = secured
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ROWFORGE_", "JAMAI_"))}
    result = subprocess.run([sys.executable, "-m", "rowforge.clients.cli", "--address",
                             proc.address, "models", "list"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "UNAUTHENTICATED" in lines[0], result.stderr
    assert lines[0].endswith("pass --token or set ROWFORGE_TOKEN (and --project or "
                             "ROWFORGE_PROJECT_ID)")
