"""Images from a registry (images.py): which services are pulled, how a digest is named, and the pull
script itself, run for real by sh with a stand-in `docker` on PATH that records what it was asked
(its argv, the login's folder and what was on stdin)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bluegreen import commands
from bluegreen.images import digest_for, pulled_images, repository
from bluegreen.stacks import ComposeFile

PASSWORD = "s3cret-registry-token"

# A stand-in docker: `--config DIR` noted; login reads stdin and writes DIR/config.json (or fails as
# a registry that refuses does); image inspect answers for the names in $STATE/have; pull adds the
# name (after $PULL_SECONDS); tag adds the new name. Every argv goes to $STATE/argv.
FAKE_DOCKER = r"""#!/bin/sh
echo "$*" >> "$STATE/argv"
cfg=
if [ "$1" = --config ]; then cfg=$2; shift 2; echo "$cfg" >> "$STATE/configs"; fi
case "$1" in
  login)
    cat > "$STATE/stdin"
    if [ "${LOGIN_FAILS:-}" = 1 ]; then
      echo "Error response from daemon: unauthorized: authentication required" >&2; exit 1
    fi
    echo '{"auths": {"r": {"auth": "x"}}}' > "$cfg/config.json";;
  image)
    shift 2; [ "$1" = --format ] && shift 2
    for n; do grep -qxF -- "$n" "$STATE/have" 2>/dev/null || exit 1; done;;
  pull)
    sleep "${PULL_SECONDS:-0}"
    if [ "${PULL_FAILS:-}" = 1 ]; then echo "manifest unknown" >&2; exit 1; fi
    echo "$3" >> "$STATE/have";;
  tag) echo "$3" >> "$STATE/have";;
esac
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "tmp").mkdir()
    return tmp_path


def pull(
    state: Path, policy: str, pairs: list[tuple[str, str]], user: str = "ci", **env: str
) -> subprocess.CompletedProcess[str]:
    argv = commands.pull_images(policy, "registry.example.com:5000", user, pairs)
    environ = {**os.environ, "PATH": f"{state / 'bin'}:{os.environ['PATH']}", "STATE": str(state)}
    environ |= {"TMPDIR": str(state / "tmp"), **env}
    return subprocess.run(argv, input=PASSWORD, env=environ, capture_output=True, text=True, timeout=30)


def calls(state: Path) -> list[str]:
    return (state / "argv").read_text().splitlines()


def test_the_login_lives_in_a_folder_of_its_own_for_one_command_and_the_password_only_on_stdin(state: Path) -> None:
    done = pull(state, "always", [("registry.example.com:5000/app:1", "registry.example.com:5000/app:1")])
    assert done.returncode == 0, done.stderr
    (config,) = set((state / "configs").read_text().split())
    assert config.startswith(str(state / "tmp" / "bluegreen-login."))
    assert not Path(config).exists()  # removed once the command ended
    assert list((state / "tmp").iterdir()) == []
    assert (state / "stdin").read_text() == PASSWORD
    assert not any(PASSWORD in line for line in calls(state))
    assert calls(state) == [
        f"--config {config} login --username ci --password-stdin registry.example.com:5000",
        f"--config {config} pull --quiet registry.example.com:5000/app:1",
    ]


def test_a_refused_login_names_the_registrys_answer_pulls_nothing_and_leaves_nothing(state: Path) -> None:
    done = pull(state, "always", [("r/app:1", "r/app:1")], LOGIN_FAILS="1")
    assert done.returncode == 4
    assert "unauthorized: authentication required" in done.stderr and commands.PULL_LOGIN_FAILED in done.stderr
    assert not any(" pull " in f" {line} " for line in calls(state))
    assert list((state / "tmp").iterdir()) == []


def test_a_pull_cut_short_by_sigterm_removes_the_login_folder(state: Path) -> None:
    argv = commands.pull_images("always", "", "ci", [("r/app:1", "r/app:1")])
    environ = {**os.environ, "PATH": f"{state / 'bin'}:{os.environ['PATH']}", "STATE": str(state)}
    environ |= {"TMPDIR": str(state / "tmp"), "PULL_SECONDS": "20"}
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, env=environ, text=True, start_new_session=True)
    assert process.stdin is not None
    process.stdin.write(PASSWORD)
    process.stdin.close()
    deadline = time.monotonic() + 10
    while not any("pull" in line for line in (calls(state) if (state / "argv").exists() else [])):
        assert time.monotonic() < deadline, "the pull never started"
        time.sleep(0.05)
    assert len(list((state / "tmp").iterdir())) == 1  # the login folder, while the pull runs
    os.killpg(process.pid, signal.SIGTERM)  # as `timeout` does: the whole group
    assert process.wait(10) != 0
    assert list((state / "tmp").iterdir()) == []


def test_without_a_user_nothing_logs_in_and_docker_uses_the_hosts_own_config(state: Path) -> None:
    assert pull(state, "always", [("app:1", "app:1")], user="").returncode == 0
    assert calls(state) == ["pull --quiet app:1"]


def test_missing_pulls_only_what_the_host_lacks_and_never_refuses_what_it_lacks(state: Path) -> None:
    (state / "have").write_text("app:1\n")
    assert pull(state, "missing", [("app:1", "app:1"), ("app:2", "app:2")], user="").returncode == 0
    assert [line for line in calls(state) if line.startswith("pull")] == ["pull --quiet app:2"]
    refused = pull(state, "never", [("app:3", "app:3")], user="")
    assert refused.returncode == 6 and f"{commands.PULL_MISSING} app:3" in refused.stderr


def test_a_pinned_digest_is_pulled_then_given_the_compose_files_tag(state: Path) -> None:
    pinned = "r/app@sha256:" + "a" * 64
    assert pull(state, "always", [(pinned, "r/app:latest")], user="").returncode == 0
    assert calls(state) == [f"pull --quiet {pinned}", f"tag {pinned} r/app:latest"]


def test_a_failed_pull_names_what_it_pulled(state: Path) -> None:
    done = pull(state, "always", [("r/app:9", "r/app:9")], user="", PULL_FAILS="1")
    assert (
        done.returncode == 5 and "manifest unknown" in done.stderr and f"{commands.PULL_FAILED} r/app:9" in done.stderr
    )


def test_only_images_no_build_of_the_color_makes_are_pulled() -> None:
    text = """
services:
  backend_blue: {build: ./app, image: "app:blue"}
  frontend_blue: {image: "app:blue"}
  worker_blue: {image: "ghcr.io/acme/worker:1"}
  tool_blue: {build: ./tool}
"""
    parsed = ComposeFile.parse(text)
    assert dict(parsed.pulled) == {"worker_blue": "ghcr.io/acme/worker:1"}
    built = {"backend_blue": "app:blue", "tool_blue": ""}
    assert pulled_images(text, built) == {"worker_blue": "ghcr.io/acme/worker:1"}
    assert pulled_images("not: [valid", built) == {}


@pytest.mark.parametrize(
    ("image", "digests", "expected"),
    [
        ("nginx:1.27", ["nginx@sha256:aa"], "nginx@sha256:aa"),
        ("docker.io/library/nginx:1.27", ["nginx@sha256:aa"], "docker.io/library/nginx@sha256:aa"),
        (
            "registry.lab:5443/lab/web:latest",
            ["registry.lab:5443/lab/web@sha256:bb"],
            "registry.lab:5443/lab/web@sha256:bb",
        ),
        ("registry.lab:5443/lab/web", ["other/web@sha256:cc"], ""),
        ("app:blue", [], ""),
        ("ghcr.io/acme/app@sha256:dd", [], "ghcr.io/acme/app@sha256:dd"),
        ("ghcr.io/acme/app:1@sha256:dd", [], "ghcr.io/acme/app@sha256:dd"),
    ],
)
def test_the_digest_a_host_got_an_image_as(image: str, digests: list[str], expected: str) -> None:
    assert digest_for(image, digests) == expected


def test_a_repository_keeps_a_registry_port() -> None:
    assert repository("registry.lab:5443/lab/web:latest") == "registry.lab:5443/lab/web"
    assert repository("registry.lab:5443/lab/web") == "registry.lab:5443/lab/web"
    assert repository("nginx") == "nginx"
