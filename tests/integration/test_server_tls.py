"""TLS and mutual TLS on the server (``--tls-cert/--tls-key/--client-ca``), with a CA the test
makes: the Python client, grpcurl and the TypeScript client connect; plaintext and clients
without a certificate are refused at the handshake; SIGHUP swaps the certificate for new
connections while established ones keep working."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rowforge.clients import RowForge
from rowforge.clients.config import ClientConfig, RetryConfig, TLSConfig
from rowforge.clients.exceptions import RowForgeError
from tests.support.certs import TestCA
from tests.support.server import ServerProcess

GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def tls_server(data_dir: Path, ca: TestCA, *, mutual: bool = False) -> ServerProcess:
    issued = ca.issue("server")
    args = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    if mutual:
        args += ["--client-ca", str(ca.cert)]
    return ServerProcess(data_dir, args=args)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, ca: TestCA) -> Iterator[ServerProcess]:
    with tls_server(tmp_path_factory.mktemp("tls"), ca).start() as proc:
        yield proc


NO_RETRY = RetryConfig(max_attempts=1)


def models(address: str, tls: TLSConfig | bool | None) -> list[str]:
    with RowForge(address=address, tls=tls, retry=NO_RETRY, timeout=20) as client:
        return client.model_ids()


def test_python_client_over_tls_and_plaintext_refused(served: ServerProcess, ca: TestCA) -> None:
    roots = ca.cert.read_bytes()
    assert "rowforge/chat" in models(served.address, TLSConfig(root_certificates=roots))
    with pytest.raises(RowForgeError):
        models(served.address, False)  # plaintext to a TLS port
    with pytest.raises(RowForgeError):
        models(served.address, TLSConfig())  # the system roots do not know the test CA


def test_grpcurl_over_tls(served: ServerProcess, ca: TestCA) -> None:
    out = subprocess.run([str(GRPCURL), "-cacert", str(ca.cert), served.address,
                          "rowforge.v1.ModelService/ListModels"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rowforge/chat" in out.stdout


def test_mutual_tls_refuses_clients_without_a_certificate(tmp_path: Path, ca: TestCA) -> None:
    client = ca.issue("client-a", server=False)
    stranger = TestCA(tmp_path / "other", "other CA").issue("client-b", server=False)
    roots = ca.cert.read_bytes()
    with tls_server(tmp_path / "data", ca, mutual=True).start() as proc:
        ok = TLSConfig(root_certificates=roots, private_key=client.key.read_bytes(),
                       certificate_chain=client.cert.read_bytes())
        assert "rowforge/chat" in models(proc.address, ok)
        with pytest.raises(RowForgeError) as err:
            models(proc.address, TLSConfig(root_certificates=roots))
        assert err.value.status_code == "UNAVAILABLE"  # refused at the handshake
        signed_elsewhere = TLSConfig(root_certificates=roots,
                                     private_key=stranger.key.read_bytes(),
                                     certificate_chain=stranger.cert.read_bytes())
        with pytest.raises(RowForgeError):
            models(proc.address, signed_elsewhere)
        out = subprocess.run([str(GRPCURL), "-cacert", str(ca.cert), "-cert", str(client.cert),
                              "-key", str(client.key), proc.address,
                              "rowforge.v1.ModelService/ListModels"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        # The client reads its certificate from the environment too.
        env = {"ROWFORGE_ROOT_CERTS": str(ca.cert), "ROWFORGE_CLIENT_CERT": str(client.cert),
               "ROWFORGE_CLIENT_KEY": str(client.key)}
        config = ClientConfig.resolve(address=proc.address, env=env, retry=NO_RETRY)
        with RowForge(config=config) as from_env:
            assert from_env.model_ids()


def test_sighup_reloads_the_certificate_for_new_connections(tmp_path: Path, ca: TestCA) -> None:
    issued = ca.issue("server")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_bytes(issued.cert.read_bytes())
    key.write_bytes(issued.key.read_bytes())
    successor = TestCA(tmp_path / "next", "next CA")
    with ServerProcess(tmp_path / "data", args=["--tls-cert", str(cert), "--tls-key",
                                                str(key)]).start() as proc:
        old_roots = TLSConfig(root_certificates=ca.cert.read_bytes())
        with RowForge(address=proc.address, tls=old_roots, retry=NO_RETRY) as established:
            assert established.model_ids()
            renewed = successor.issue("server")
            cert.write_bytes(renewed.cert.read_bytes())
            key.write_bytes(renewed.key.read_bytes())
            assert proc.process is not None
            os.kill(proc.process.pid, signal.SIGHUP)
            new_roots = TLSConfig(root_certificates=successor.cert.read_bytes())
            reloaded = False
            for _ in range(50):  # the reload happens on the server's loop: give it a moment
                try:
                    reloaded = bool(models(proc.address, new_roots))
                    break
                except RowForgeError:
                    time.sleep(0.1)
            assert reloaded, "new connections did not get the new certificate"
            with pytest.raises(RowForgeError):
                models(proc.address, old_roots)  # a new connection: the old CA no longer fits
            # The connection made before the reload still works.
            assert established.model_ids()
        # A broken file on the next SIGHUP keeps the current certificate.
        cert.write_text("not a certificate")
        os.kill(proc.process.pid, signal.SIGHUP)
        assert models(proc.address, TLSConfig(root_certificates=successor.cert.read_bytes()))
    assert any("not reloaded" in line for line in proc.output)


def test_bad_tls_settings_are_one_line_config_errors(tmp_path: Path) -> None:
    cases = [(["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", "x"], "tls_"),
             (["--tls-cert", "a.pem"], "give both"),
             (["--client-ca", "ca.pem"], "mutual TLS needs")]
    for args, expected in cases:
        out = subprocess.run([sys.executable, "-m", "rowforge.server", "serve", "--port", "0",
                              "--data-dir", str(tmp_path / "d"), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_typescript_client_over_mutual_tls(tmp_path: Path, ca: TestCA) -> None:
    from tests.integration.test_node_client import NODE, PACKAGE, TSC

    if NODE is None or not TSC.exists():
        pytest.skip("node or typescript is not installed")
    example = PACKAGE / "dist" / "example.js"
    built = subprocess.run([str(TSC), "-p", str(PACKAGE)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    client = ca.issue("node-client", server=False)
    with tls_server(tmp_path / "data", ca, mutual=True).start() as proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROWFORGE_")}
        env.update(ROWFORGE_ADDRESS=f"https://{proc.address}", ROWFORGE_ROOT_CERTS=str(ca.cert))
        refused = subprocess.run([NODE, str(example), "tls-check"], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        env.update(ROWFORGE_CLIENT_CERT=str(client.cert), ROWFORGE_CLIENT_KEY=str(client.key))
        ok = subprocess.run([NODE, str(example), "tls-check"], env=env,
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert "rowforge/chat" in json.loads(ok.stdout)["models"]
