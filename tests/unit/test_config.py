"""Settings: defaults, TOML, environment, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rowforge.server.config import ConfigError, Settings, load_settings


def test_defaults_are_the_embedded_mode() -> None:
    s = load_settings(env={})
    assert (s.host, s.port, s.auth) == ("127.0.0.1", 50051, False)
    assert s.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert s.resolved_database_url.endswith("/data/rowforge.db")


def test_toml_then_env_then_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "rowforge.toml"
    cfg.write_text(
        'port = 6000\nauth = true\ndatabase_url = "postgresql+asyncpg://u@h/db"\n'
        '[[models]]\nid = "openai/gpt-4o-mini"\nroute = "openai/gpt-4o-mini"\n'
        'api_key_env = "OPENAI_API_KEY"\ncapabilities = ["chat"]\n')
    s = load_settings(cfg, env={"ROWFORGE_PORT": "7000"}, host="::1")
    assert s.port == 7000 and s.auth is True and s.host == "::1"
    assert s.resolved_database_url == "postgresql+asyncpg://u@h/db"
    assert s.models[0]["id"] == "openai/gpt-4o-mini"


def test_env_models_as_json_and_booleans() -> None:
    entry = '{"id": "a", "route": "openai/a", "capabilities": ["chat"]}'
    s = load_settings(env={"ROWFORGE_MODELS": f"[{entry}]",
                           "ROWFORGE_AUTH": "yes", "ROWFORGE_DATA_DIR": "~/rf"})
    assert s.models == ({"id": "a", "route": "openai/a", "capabilities": ["chat"]},)
    assert s.auth is True
    assert not str(s.data_dir).startswith("~")


@pytest.mark.parametrize(("env", "message"), [
    ({"ROWFORGE_PORT": "abc"}, "ROWFORGE_PORT"),
    ({"ROWFORGE_AUTH": "maybe"}, "ROWFORGE_AUTH"),
    ({"ROWFORGE_MODELS": '{"id": "a"}'}, "ROWFORGE_MODELS"),
])
def test_bad_env_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(env=env)


def test_unknown_toml_key_suggests_the_nearest(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown setting 'prot' \(did you mean "
                                          r"'port'\?\); every setting is listed in docs/config.md"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(("text", "message"), [
    ("port = 'x'\n", r"c.toml: port: expected an integer, got 'x'"),
    ("auth = 3\n", r"c.toml: auth: expected a boolean"),
    ("grace_period_s = true\n", r"c.toml: grace_period_s: expected a number"),
    ("host = 5\n", r"c.toml: host: expected a string"),
    ("port = \n", r"c.toml: not valid TOML: .*line 1"),
    ("[[models]]\nid = 'x'\nroute = 'builtin/chat'\ncapabilities = ['chat']\n",
     r"c.toml: models\[0\] \(x\): route: .*alias_of = \"rowforge/chat\""),
    ("[[models]]\nid = 'x'\nroute = 'openai/x'\ncapabilities = ['chat']\napi_key = 'sk'\n",
     r"c.toml: models\[0\] \(x\): api_key: Extra inputs .*did you mean 'api_key_env'"),
    ("default_chat_model = 'gpt'\n", r"c.toml: default chat model 'gpt' is not"),
])
def test_bad_toml_values_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(cfg, env={})
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: no such config file; check the path"):
        load_settings(tmp_path / "nope.toml", env={})


def test_loopback_detection() -> None:
    assert Settings(host="127.0.0.2").is_loopback
    assert Settings(host="localhost").is_loopback
    assert not Settings(host="0.0.0.0").is_loopback


def test_sandbox_network_setting(tmp_path: Path) -> None:
    # Default: public only for the embedded server (auth off, loopback); off otherwise.
    assert load_settings(env={}).effective_sandbox_network == "public"
    assert load_settings(env={"ROWFORGE_AUTH": "1"}).effective_sandbox_network == "off"
    assert load_settings(env={}, host="0.0.0.0", insecure=True).effective_sandbox_network == "off"
    cfg = tmp_path / "rowforge.toml"
    cfg.write_text('sandbox_network = "off"\n')
    assert load_settings(cfg, env={}).effective_sandbox_network == "off"
    s = load_settings(cfg, env={"ROWFORGE_SANDBOX_NETWORK": "Public", "ROWFORGE_AUTH": "1"})
    assert s.sandbox_network == "public" and s.effective_sandbox_network == "public"
    with pytest.raises(ValueError, match="ROWFORGE_SANDBOX_NETWORK"):
        load_settings(env={"ROWFORGE_SANDBOX_NETWORK": "open"})
    with pytest.raises(ValueError, match="sandbox_network"):
        Settings(sandbox_network="everything")


def test_files_table_in_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "rowforge.toml"
    cfg.write_text('[files]\nbackend = "S3"\nbucket = "b"\nprefix = "rf/"\n'
                   'endpoint_url = "http://127.0.0.1:9000"\nregion = "eu-west-1"\n')
    s = load_settings(cfg, env={"ROWFORGE_FILES_PART_MB": "16"})
    assert (s.files_backend, s.files_bucket, s.files_prefix, s.files_endpoint_url,
            s.files_region, s.files_part_mb) == ("s3", "b", "rf/", "http://127.0.0.1:9000",
                                                 "eu-west-1", 16)
    assert load_settings(env={}).files_backend == "local"


@pytest.mark.parametrize(("toml", "message"), [
    ('[files]\nbackend = "s3"\n', "files_bucket"),
    ('[files]\nbackend = "gcs"\n', "files_backend"),
    ('[files]\nbucket = "b"\npart_mb = 2\n', "files_part_mb"),
    ('[files]\nbuckett = "b"\n', "did you mean 'files_bucket'"),
    ('max_document_bytes = 6_000_000_000\n[files]\nbackend = "s3"\nbucket = "b"\n',
     "at most 5 GiB"),
])
def test_bad_files_settings(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "rowforge.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env={})


PG = "postgresql+asyncpg://u@h/db"


@pytest.mark.parametrize(("env", "message"), [
    ({"ROWFORGE_REUSE_PORT": "true"}, "reuse_port: .*PostgreSQL"),
    ({"ROWFORGE_REUSE_PORT": "true", "ROWFORGE_DATABASE_URL": PG}, "reuse_port: .*files_dir"),
    ({"ROWFORGE_FILES_DIR": "/srv/files"}, "files_dir: only for replicas on PostgreSQL"),
])
def test_reuse_port_needs_what_replicas_share(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(env=env)


def test_reuse_port_with_shared_database_and_files() -> None:
    s = load_settings(env={"ROWFORGE_REUSE_PORT": "1", "ROWFORGE_DATABASE_URL": PG,
                           "ROWFORGE_FILES_DIR": "/srv/files"})
    assert s.reuse_port and s.files_dir == "/srv/files"
    s3 = load_settings(env={"ROWFORGE_REUSE_PORT": "1", "ROWFORGE_DATABASE_URL": PG,
                            "ROWFORGE_FILES_BACKEND": "s3", "ROWFORGE_FILES_BUCKET": "b"})
    assert s3.reuse_port and s3.files_backend == "s3"
