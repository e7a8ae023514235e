"""Replicas on one machine sharing a port (``reuse_port``: SO_REUSEPORT), no load balancer:
the kernel spreads new connections over them, files written through one are read through
any other (a shared ``files_dir``), and when one drains the other serves the new calls."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from rowforge.v1 import file_service_pb2 as fpb
from rowforge.v1 import file_service_pb2_grpc, model_service_pb2_grpc
from rowforge.v1 import model_service_pb2 as mpb
from tests.conftest import assert_no_unhandled_errors, replica_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                                reason="SO_REUSEPORT balancing is Linux's")

CONNECTIONS = 24


@pytest.fixture
def replicas(tmp_path: Path, fake_openai: object, shared_database: str
             ) -> Iterator[list[ServerProcess]]:
    env = {"ROWFORGE_REUSE_PORT": "true", "ROWFORGE_FILES_DIR": str(tmp_path / "files"),
           "ROWFORGE_LOG_LEVEL": "INFO"}
    first = replica_server(tmp_path, "a", fake_openai, shared_database, **env)
    try:
        second = replica_server(tmp_path, "b", fake_openai, shared_database,
                                port=first.port, **env)
    except BaseException:
        first.terminate()
        raise
    with first, second:
        yield [first, second]
    for proc in (first, second):
        assert_no_unhandled_errors(proc)


def _served(proc: ServerProcess, method: str) -> int:
    return sum(1 for e in proc.logs()
               if e.get("msg") == "rpc" and e.get("rpc", {}).get("method", "").endswith(method))


def _fresh_channel(address: str) -> grpc.Channel:
    # A local subchannel pool: every channel opens a connection of its own.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_replicas_share_a_port_and_their_files(replicas: list[ServerProcess]) -> None:
    first, second = replicas
    assert first.port == second.port
    content = os.urandom(150_000).hex().encode()  # text: a document kind
    with _fresh_channel(first.address) as channel:
        uploaded = file_service_pb2_grpc.FileServiceStub(channel).UploadFile(iter([
            fpb.UploadFileRequest(metadata=fpb.FileMetadata(name="data.txt")),
            fpb.UploadFileRequest(chunk=content)]), timeout=30)
    assert uploaded.file.sha256 == hashlib.sha256(content).hexdigest()
    for _ in range(CONNECTIONS):  # new connections land on either replica
        with _fresh_channel(first.address) as channel:
            stub = file_service_pb2_grpc.FileServiceStub(channel)
            got = b"".join(m.chunk for m in stub.DownloadFile(
                fpb.DownloadFileRequest(uri=uploaded.file.uri), timeout=30))
            assert got == content
    # With 24 connections, one replica getting all of them has odds 2 * 2**-24.
    assert _served(first, "DownloadFile") > 0 and _served(second, "DownloadFile") > 0
    assert _served(first, "DownloadFile") + _served(second, "DownloadFile") == CONNECTIONS


def test_a_draining_replica_leaves_new_connections_to_the_other(
        replicas: list[ServerProcess]) -> None:
    first, second = replicas
    assert first.terminate() == 0
    for _ in range(8):
        with _fresh_channel(second.address) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert stub.ListModels(mpb.ListModelsRequest(), timeout=10).items
    assert _served(second, "ListModels") == 8
