"""The reference configs in nginx/ are valid nginx: `nginx -t` in a real nginx, for each color."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from lab import lab

NGINX = Path(__file__).resolve().parents[2] / "nginx"


@pytest.mark.parametrize("color", ["blue", "green"])
def test_reference_configs_pass_nginx_t(color: str, lab_ready: None, tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    shutil.copy(NGINX / "app.conf", conf_d / "app.conf")
    shutil.copy(NGINX / f"upstream.{color}.conf", conf_d / "upstream.conf")
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            f"{conf_d}:/etc/nginx/conf.d:ro",
            lab.LAB_IMAGE,
            "sh",
            "-c",
            "rm -f /etc/nginx/sites-enabled/* && nginx -t",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
