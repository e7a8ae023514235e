"""Client configuration: arguments over environment over defaults, .env files, TLS, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rowforge.clients import RowForge
from rowforge.clients import config as cfg
from rowforge.clients.batch._job import TOKEN_ENV
from rowforge.clients.config import ClientConfig, TLSConfig


def test_defaults_with_an_empty_environment() -> None:
    c = ClientConfig.resolve(env={})
    assert (c.address, c.token, c.project_id, c.tls) == ("127.0.0.1:50051", None, None, None)
    assert c.timeout == 300.0 and c.file_upload_timeout == 900.0
    assert c.retry.max_attempts == 5
    assert c.metadata() == ()


def test_environment_then_arguments() -> None:
    env = {"ROWFORGE_ADDRESS": "db.example:7000", "ROWFORGE_TOKEN": "tok",
           "ROWFORGE_PROJECT_ID": "p1", "ROWFORGE_TIMEOUT_SEC": "12.5",
           "ROWFORGE_MAX_RETRIES": "2"}
    c = ClientConfig.resolve(env=env)
    assert (c.address, c.token, c.project_id, c.timeout, c.retry.max_attempts) == (
        "db.example:7000", "tok", "p1", 12.5, 2)
    assert c.metadata() == (("authorization", "Bearer tok"), ("x-project-id", "p1"))
    c = ClientConfig.resolve(env=env, address="other:1", token="t2", project_id="p2", timeout=3)
    assert (c.address, c.token, c.project_id, c.timeout) == ("other:1", "t2", "p2", 3)


def test_seed_variable_names_are_fallbacks() -> None:
    c = ClientConfig.resolve(env={"JAMAI_TOKEN": "jt", "JAMAI_PROJECT_ID": "jp"})
    assert (c.token, c.project_id) == ("jt", "jp")
    c = ClientConfig.resolve(env={"JAMAI_TOKEN": "jt", "ROWFORGE_TOKEN": "rt"})
    assert c.token == "rt"
    c = ClientConfig.resolve(env={"AJAXAI_API_KEY": "ak"}, token_env=TOKEN_ENV)
    assert c.token == "ak"


@pytest.mark.parametrize(("api_base", "address", "tls"), [
    ("https://api.jamaibase.com/api", "api.jamaibase.com:443", True),
    ("http://localhost:6969/api/", "localhost:6969", False),
    ("http://rowforge.internal", "rowforge.internal:80", False),
    ("localhost:50051", "localhost:50051", False),
    ("https://[::1]:8443/api", "[::1]:8443", True),
])
def test_seed_api_base_is_an_address_fallback(api_base: str, address: str, tls: bool) -> None:
    c = ClientConfig.resolve(env={"JAMAI_API_BASE": api_base})
    assert (c.address, c.tls is not None) == (address, tls)
    # ROWFORGE_ADDRESS and the argument win
    c = ClientConfig.resolve(env={"JAMAI_API_BASE": api_base, "ROWFORGE_ADDRESS": "a:1"})
    assert (c.address, c.tls) == ("a:1", None)
    assert ClientConfig.resolve(env={"JAMAI_API_BASE": api_base}, address="b:2").address == "b:2"


def test_seed_timeouts_are_fallbacks() -> None:
    c = ClientConfig.resolve(env={"JAMAI_TIMEOUT_SEC": "42",
                                  "JAMAI_FILE_UPLOAD_TIMEOUT_SEC": "77"})
    assert (c.timeout, c.file_upload_timeout) == (42.0, 77.0)
    c = ClientConfig.resolve(env={"JAMAI_TIMEOUT_SEC": "42", "ROWFORGE_TIMEOUT_SEC": "7",
                                  "JAMAI_FILE_UPLOAD_TIMEOUT_SEC": "77",
                                  "ROWFORGE_FILE_UPLOAD_TIMEOUT_SEC": "8"})
    assert (c.timeout, c.file_upload_timeout) == (7.0, 8.0)
    assert ClientConfig.resolve(env={"JAMAI_TIMEOUT_SEC": "42"}, timeout=3).timeout == 3


@pytest.mark.parametrize(("env", "named"), [
    ({"JAMAI_TIMEOUT_SEC": "soon"}, "JAMAI_TIMEOUT_SEC"),
    ({"JAMAI_FILE_UPLOAD_TIMEOUT_SEC": "x"}, "JAMAI_FILE_UPLOAD_TIMEOUT_SEC"),
    ({"JAMAI_API_BASE": "ftp://files.example"}, "JAMAI_API_BASE"),
    ({"JAMAI_API_BASE": "http://host:notaport/api"}, "JAMAI_API_BASE"),
    ({"JAMAI_FILE_UPLOAD_TIMEOUT_SEC": "-1"}, "file_upload_timeout"),
])
def test_bad_seed_variables_are_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ClientConfig.resolve(env=env)


@pytest.mark.parametrize(("address", "target", "tls"), [
    ("https://api.example.com:443", "api.example.com:443", True),
    ("grpcs://api.example.com:443/", "api.example.com:443", True),
    ("http://localhost:50051", "localhost:50051", False),
    ("[::1]:50051", "[::1]:50051", False),
])
def test_address_schemes(address: str, target: str, tls: bool) -> None:
    c = ClientConfig.resolve(env={}, address=address)
    assert c.address == target and (c.tls is not None) is tls


def test_tls_options(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    c = ClientConfig.resolve(env={"ROWFORGE_ROOT_CERTS": str(pem)})
    assert c.tls == TLSConfig(root_certificates=pem.read_bytes())
    assert ClientConfig.resolve(env={"ROWFORGE_TLS": "true"}).tls == TLSConfig()
    assert ClientConfig.resolve(env={"ROWFORGE_TLS": "1"}, tls=False).tls is None
    named = ClientConfig.resolve(env={}, tls=TLSConfig(server_name="rowforge.internal"))
    assert ("grpc.ssl_target_name_override", "rowforge.internal") in named.grpc_options()
    assert RowForge(address="127.0.0.1:1", tls=True).config.tls is not None


@pytest.mark.parametrize(("env", "message"), [
    ({"ROWFORGE_TIMEOUT_SEC": "soon"}, "ROWFORGE_TIMEOUT_SEC"),
    ({"ROWFORGE_MAX_RETRIES": "many"}, "ROWFORGE_MAX_RETRIES"),
    ({"ROWFORGE_TLS": "maybe"}, "ROWFORGE_TLS"),
    ({"ROWFORGE_ADDRESS": "http://host:1/path"}, "host:port"),
    ({"ROWFORGE_TIMEOUT_SEC": "-1"}, "positive"),
])
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClientConfig.resolve(env=env)


def test_dotenv_file_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dotenv")
    (tmp_path / ".env").write_text("ROWFORGE_PROJECT_ID=from-dotenv\nROWFORGE_TOKEN=dot\n")
    monkeypatch.chdir(tmp_path)
    # setenv first so the variable python-dotenv sets is removed again after the test.
    monkeypatch.setenv("ROWFORGE_PROJECT_ID", "")
    monkeypatch.delenv("ROWFORGE_PROJECT_ID")
    monkeypatch.setenv("ROWFORGE_TOKEN", "already-set")  # the environment wins
    monkeypatch.setattr(cfg, "_dotenv_loaded", False)
    # Constructing a client never reads .env: only from_env() does, when asked.
    assert ClientConfig.resolve().project_id is None
    with RowForge(address="127.0.0.1:9") as plain:
        assert plain.project_id is None
    with RowForge.from_env(address="127.0.0.1:9") as client:
        assert (client.project_id, client.token) == ("from-dotenv", "already-set")
