"""TLS: the client verifies the server against the given roots (and name), and a plaintext
client cannot talk to a TLS server. The certificate is made with openssl for the test."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowforge.clients import AsyncRowForge, RetryConfig, RowForge, TLSConfig
from rowforge.clients import exceptions as ex
from rowforge.v1 import model_service_pb2 as mpb
from rowforge.v1 import model_service_pb2_grpc
from tests.support.fake_grpc import FakeServer

NO_RETRY = RetryConfig(max_attempts=1)


class Models(model_service_pb2_grpc.ModelServiceServicer):
    async def ListModels(self, request, context):
        return mpb.ListModelsResponse(items=[mpb.Model(id="tls/model")])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=rowforge.test", "-addext", "subjectAltName=DNS:rowforge.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return key, cert


@pytest.fixture(scope="module")
def fake(certs: tuple[Path, Path]) -> Iterator[FakeServer]:
    key, cert = certs
    with FakeServer([Models()], tls=(key.read_bytes(), cert.read_bytes())) as server:
        yield server


def test_tls_with_custom_roots_and_server_name(fake: FakeServer, certs: tuple[Path, Path]
                                               ) -> None:
    cert = certs[1].read_bytes()
    tls = TLSConfig(root_certificates=cert, server_name="rowforge.test")
    with RowForge(address=fake.address, tls=tls) as client:
        assert client.model_ids() == ["tls/model"]


async def test_tls_async(fake: FakeServer, certs: tuple[Path, Path]) -> None:
    tls = TLSConfig(root_certificates=certs[1].read_bytes(), server_name="rowforge.test")
    async with AsyncRowForge(address=fake.address, tls=tls) as client:
        assert await client.model_ids() == ["tls/model"]


def test_untrusted_or_plaintext_clients_fail(fake: FakeServer, certs: tuple[Path, Path]) -> None:
    # System roots do not trust a self-signed certificate.
    with RowForge(address=fake.address, tls=True, retry=NO_RETRY, timeout=5) as client, \
            pytest.raises(ex.UnavailableError):
        client.model_ids()
    # Trusted roots but the wrong name.
    wrong = TLSConfig(root_certificates=certs[1].read_bytes(), server_name="other.test")
    with RowForge(address=fake.address, tls=wrong, retry=NO_RETRY, timeout=5) as client, \
            pytest.raises(ex.UnavailableError):
        client.model_ids()
    with RowForge(address=fake.address, retry=NO_RETRY, timeout=5) as client, \
            pytest.raises(ex.UnavailableError):
        client.model_ids()
    # A root certificates path implies TLS.
    with RowForge(address=fake.address, root_certificates=certs[1], retry=NO_RETRY,
                  timeout=5) as client:
        assert client.config.tls is not None
