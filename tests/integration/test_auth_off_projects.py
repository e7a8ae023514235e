"""With auth off (the embedded default), what the README says: a call acts on the project its
x-project-id names (created or not), or on `default` without one; projects keep data apart."""

from __future__ import annotations

import grpc
import pytest

import rowforge.clients.types as t
from rowforge.clients import RowForge
from tests.support.server import ServerProcess


def test_auth_off_acts_on_the_named_project_or_default(server: ServerProcess) -> None:
    with RowForge(address=server.address, project_id="never-created") as named, \
            RowForge(address=server.address) as default:
        named.table.create_action_table(t.ActionTableSchemaCreate(
            id="projects_named", cols=[t.ColumnSchemaCreate(id="a")]))
        default.table.create_action_table(t.ActionTableSchemaCreate(
            id="projects_default", cols=[t.ColumnSchemaCreate(id="a")]))
        named_ids = {x.id for x in named.table.iter_tables("action")}
        default_ids = {x.id for x in default.table.iter_tables("action")}
    assert "projects_named" in named_ids and "projects_default" not in named_ids
    assert "projects_default" in default_ids and "projects_named" not in default_ids
    with RowForge(address=server.address, project_id="default") as explicit:
        assert "projects_default" in {x.id for x in explicit.table.iter_tables("action")}


@pytest.mark.parametrize("project", ["../../etc", "' OR 1=1 --", "x" * 5000, "a b", "a/b"])
@pytest.mark.parametrize("method", ["/rowforge.v1.TableService/ListTables",
                                    "/rowforge.v1.BatchJobService/ListJobs",
                                    "/rowforge.v1.FileService/ListFiles"])
def test_malformed_project_ids_are_refused(server: ServerProcess, project: str,
                                           method: str) -> None:
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as exc:
        channel.unary_unary(method)(b"", metadata=(("x-project-id", project),), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "x-project-id" in exc.value.details() and len(exc.value.details()) < 400


def test_the_seed_placeholder_project_runs_with_auth_off(server: ServerProcess) -> None:
    # The seed SDK's examples write JamAIAsync(token="...", project_id="...").
    with RowForge(address=server.address, project_id="...") as client:
        assert isinstance(list(client.table.iter_tables("action")), list)
