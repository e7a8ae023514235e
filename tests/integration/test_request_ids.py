"""Request ids: the caller's x-request-id (or one made by the server) comes back in the
initial metadata and in every error's details (google.rpc.RequestInfo), and is on the
request's log lines, in JSON and in text logs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc, table_service_pb2, table_service_pb2_grpc
from tests.support.server import ServerProcess
from tests.support.status import detail_of


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("rid"),
                       env={"ROWFORGE_LOG_LEVEL": "INFO"}).start() as proc:
        yield proc


def test_a_given_id_is_echoed_in_metadata_and_logs(logged: ServerProcess) -> None:
    with grpc.insecure_channel(logged.address) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        _, call = stub.ListModels.with_call(mpb.ListModelsRequest(), timeout=10,
                                            metadata=(("x-request-id", "trace-42.a"),))
        assert dict(call.initial_metadata())["x-request-id"] == "trace-42.a"
    lines = [e for e in logged.logs() if e.get("requestId") == "trace-42.a"]
    assert any(e.get("rpc", {}).get("method") == "/rowforge.v1.ModelService/ListModels"
               for e in lines)


def test_errors_carry_the_id_and_one_is_made_when_none_or_a_bad_one_is_sent(
        logged: ServerProcess) -> None:
    with grpc.insecure_channel(logged.address) as channel:
        stub = table_service_pb2_grpc.TableServiceStub(channel)
        request = table_service_pb2.GetTableRequest(table_type=1, table_id="missing")
        with pytest.raises(grpc.RpcError) as given:
            stub.GetTable(request, timeout=10, metadata=(("x-request-id", "abc-123"),))
        info = detail_of(given.value, error_details_pb2.RequestInfo)
        assert info is not None and info.request_id == "abc-123"
        assert dict(given.value.initial_metadata())["x-request-id"] == "abc-123"
        for metadata in ((), (("x-request-id", "not ok; spaces"),)):
            with pytest.raises(grpc.RpcError) as made:
                stub.GetTable(request, timeout=10, metadata=metadata)
            info = detail_of(made.value, error_details_pb2.RequestInfo)
            assert info is not None and re.fullmatch(r"[0-9a-f]{32}", info.request_id)
            assert dict(made.value.initial_metadata())["x-request-id"] == info.request_id
    coded = [e for e in logged.logs() if e.get("requestId") == "abc-123"]
    assert any(e.get("rpc", {}).get("code") == "NOT_FOUND" for e in coded)


def test_text_logs_show_the_id(tmp_path: Path) -> None:
    proc = ServerProcess(tmp_path, env={"ROWFORGE_LOG_LEVEL": "INFO"},
                         args=["--log-format", "text"])
    with proc.start(), grpc.insecure_channel(proc.address) as channel:
        model_service_pb2_grpc.ModelServiceStub(channel).ListModels(
            mpb.ListModelsRequest(), timeout=10, metadata=(("x-request-id", "txt-1"),))
    assert any("[txt-1]" in line and "rpc" in line for line in proc.output)
