"""deploy/nginx.conf is what deploy/cluster.py generates, and nginx accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.cluster import example_conf, nginx_conf

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_config_is_current() -> None:
    assert (ROOT / "deploy" / "nginx.conf").read_text() == example_conf(), (
        "run: .venv/bin/python deploy/cluster.py --write-nginx-conf")


def test_nginx_accepts_it(tmp_path: Path) -> None:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    conf = tmp_path / "nginx.conf"
    conf.write_text(nginx_conf("127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"], str(tmp_path)))
    check = subprocess.run([binary, "-t", "-c", str(conf), "-e", str(tmp_path / "e.log")],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
