"""Images from a registry (images.py): which services are pulled, how a digest is named, and the pull
script itself, run for real by sh with a stand-in `docker` on PATH that records what it was asked
(its argv, the login's folder and what was on stdin)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from bluegreen import commands
from bluegreen.commands import shell_line
from bluegreen.config import load_config
from bluegreen.errors import DeployError
from bluegreen.images import Images, Shared, digest_for, pulled_images, repository, repository_name
from bluegreen.remote import CommandFailed, Held, Result
from bluegreen.stacks import ComposeFile, Stacks

from .test_config import raw

PASSWORD = "s3cret-registry-token"

# A stand-in docker: `--config DIR` noted (with what DIR/config.json held before a login); login
# reads stdin (or fails as a registry that refuses does); image inspect answers for the names in
# $STATE/have; pull adds the name (after $PULL_SECONDS) and prints the digest $STATE/registry/<name>
# holds (a digest reference: its own); tag adds the new name; compose ... config prints
# $STATE/config.yml; context inspect prints a host. Every argv goes to $STATE/argv, with $DOCKER_HOST.
FAKE_DOCKER = r"""#!/bin/sh
echo "$*" >> "$STATE/argv"
cfg=
if [ "$1" = --config ]; then
  cfg=$2; shift 2; echo "$cfg" >> "$STATE/configs"; cat "$cfg/config.json" >> "$STATE/before-login" 2>/dev/null
fi
case "$1" in
  login)
    cat > "$STATE/stdin"
    if [ "${LOGIN_FAILS:-}" = 1 ]; then
      echo "Error response from daemon: unauthorized: authentication required" >&2; exit 1
    fi
    echo '{"auths": {"r": {"auth": "x"}}}' > "$cfg/config.json";;
  image)
    shift 2; [ "$1" = --format ] && shift 2; [ "$1" = -- ] && shift
    for n; do grep -qxF -- "$n" "$STATE/have" 2>/dev/null || exit 1
      [ -z "${FORMAT:-}" ] || printf 'sha256:%s\t1000\t[]\n' "$(cat "$STATE/id/$(echo "$n" | tr /: __)" 2>/dev/null)"
    done;;
  pull)
    echo "${DOCKER_HOST:-}" >> "$STATE/hosts"
    sleep "${PULL_SECONDS:-0}"
    if [ "${PULL_FAILS:-}" = 1 ]; then echo "manifest unknown" >&2; echo "more" >&2; exit 1; fi
    ref=$3; key=$(echo "$ref" | tr /: __)
    case "$ref" in *@*) digest=${ref#*@};; *) digest=$(cat "$STATE/registry/$key" 2>/dev/null);; esac
    echo "$ref" >> "$STATE/have"; mkdir -p "$STATE/id"; echo "${digest#sha256:}" > "$STATE/id/$key"
    echo "Pulling from x"; [ -n "$digest" ] && echo "Digest: $digest"; echo "Status: Downloaded";;
  tag)
    echo "$3" >> "$STATE/have"; mkdir -p "$STATE/id"
    cp "$STATE/id/$(echo "$2" | tr /: __)" "$STATE/id/$(echo "$3" | tr /: __)" 2>/dev/null || :;;
  compose) cat "$STATE/config.yml";;
  context) echo "unix:///run/user/1000/docker.sock";;
esac
"""


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return make_state(tmp_path)


def make_state(folder: Path) -> Path:
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "docker").write_text(FAKE_DOCKER)
    (folder / "bin" / "docker").chmod(0o755)
    (folder / "tmp").mkdir()
    (folder / "registry").mkdir()
    return folder


def environment(state: Path, **env: str) -> dict[str, str]:
    environ = {**os.environ, "PATH": f"{state / 'bin'}:{os.environ['PATH']}", "STATE": str(state)}
    return environ | {"TMPDIR": str(state / "tmp"), "DOCKER_HOST": "unix:///var/run/docker.sock", **env}


def start(argv: list[str], env: dict[str, str], line: str) -> subprocess.Popen[str]:
    """Run as the host does: the first line on stdin, then stdin held open (the session)."""
    process = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdin is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return process


def finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    status = process.wait(30)
    assert process.stdout is not None and process.stderr is not None and process.stdin is not None
    out, err = process.stdout.read(), process.stderr.read()
    process.stdin.close()
    return subprocess.CompletedProcess(process.args, status, out, err)


def pull(
    state: Path, policy: str, pairs: list[tuple[str, str]], user: str = "ci", **env: str
) -> subprocess.CompletedProcess[str]:
    argv = commands.pull_images(policy, "registry.example.com:5000", user, pairs)
    return finish(start(argv, environment(state, **env), PASSWORD if user else ""))


def calls(state: Path) -> list[str]:
    return (state / "argv").read_text().splitlines() if (state / "argv").exists() else []


def wait_for_pull(state: Path) -> None:
    deadline = time.monotonic() + 10
    while not any(" pull " in f" {line} " for line in calls(state)):
        assert time.monotonic() < deadline, "the pull never started"
        time.sleep(0.05)


APP_1 = "registry.example.com:5000/app:1"


def test_the_login_lives_in_a_folder_of_its_own_for_one_command_and_the_password_only_on_stdin(state: Path) -> None:
    done = pull(state, "always", [(APP_1, APP_1)])
    assert done.returncode == 0, done.stderr
    (config,) = set((state / "configs").read_text().split())
    assert config.startswith(str(state / "tmp" / "bluegreen-login."))
    assert not Path(config).exists()  # removed once the command ended
    assert list((state / "tmp").iterdir()) == []
    assert (state / "stdin").read_text() == PASSWORD
    # the folder named the registry before the login, so docker never hands it to a credential helper
    assert (state / "before-login").read_text().startswith('{"auths": {"registry.example.com:5000": {}}}')
    assert not any(PASSWORD in line for line in calls(state))
    assert calls(state) == [
        f"--config {config} login --username ci --password-stdin registry.example.com:5000",
        f"--config {config} pull -- {APP_1}",
    ]
    assert commands.parse_pulled(done.stdout) == {APP_1: ""}


def test_only_the_registrys_images_use_the_login_and_the_deploy_users_context_is_kept(state: Path) -> None:
    env = environment(state)
    del env["DOCKER_HOST"]
    argv = commands.pull_images("always", "registry.example.com:5000", "ci", [("redis:7", "redis:7"), (APP_1, APP_1)])
    done = finish(start(argv, env, PASSWORD))
    assert done.returncode == 0, done.stderr
    pulls = [line for line in calls(state) if " pull " in f" {line} "]
    assert pulls[0] == "pull -- redis:7" and pulls[1].endswith(f"pull -- {APP_1}") and "--config" in pulls[1]
    # the user's docker context (a rootless daemon) still gets the pull made with the login's config
    assert (state / "hosts").read_text().splitlines()[-1] == "unix:///run/user/1000/docker.sock"


def test_a_refused_login_names_the_registrys_answer_pulls_nothing_and_leaves_nothing(state: Path) -> None:
    done = pull(state, "always", [(APP_1, APP_1)], LOGIN_FAILS="1")
    assert done.returncode == 4
    assert "unauthorized: authentication required" in done.stderr and commands.PULL_LOGIN_FAILED in done.stderr
    assert not any(" pull " in f" {line} " for line in calls(state))
    assert list((state / "tmp").iterdir()) == []


def test_a_pull_cut_short_by_sigterm_removes_the_login_folder(state: Path) -> None:
    argv = commands.pull_images("always", "registry.example.com:5000", "ci", [(APP_1, APP_1)])
    process = start(argv, environment(state, PULL_SECONDS="20"), PASSWORD)
    wait_for_pull(state)
    assert len(list((state / "tmp").iterdir())) == 1  # the login folder, while the pull runs
    os.killpg(process.pid, signal.SIGTERM)  # as `timeout` does: the whole group
    assert finish(process).returncode != 0
    assert list((state / "tmp").iterdir()) == []


def test_the_end_of_the_session_stops_the_pull_and_removes_the_login_folder(state: Path) -> None:
    argv = commands.pull_images("always", "registry.example.com:5000", "ci", [(APP_1, APP_1)])
    process = start(argv, environment(state, PULL_SECONDS="20"), PASSWORD)
    wait_for_pull(state)
    assert process.stdin is not None
    process.stdin.close()  # the SSH channel closed: the run was cancelled, or the connection dropped
    assert process.wait(10) != 0
    assert list((state / "tmp").iterdir()) == []


def test_a_pull_whose_output_is_gone_still_removes_the_login_folder(state: Path) -> None:
    argv = commands.pull_images("always", "registry.example.com:5000", "ci", [(APP_1, APP_1)])
    process = start(argv, environment(state, PULL_SECONDS="1", PULL_FAILS="1"), PASSWORD)
    wait_for_pull(state)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()  # its error message then meets a closed pipe (SIGPIPE)
    assert process.wait(10) == 5
    assert list((state / "tmp").iterdir()) == []


def test_without_a_user_nothing_logs_in_and_docker_uses_the_hosts_own_config(state: Path) -> None:
    assert pull(state, "always", [("app:1", "app:1")], user="").returncode == 0
    assert calls(state) == ["pull -- app:1"]


def test_missing_pulls_only_what_the_host_lacks_and_never_refuses_what_it_lacks(state: Path) -> None:
    (state / "have").write_text("app:1\n")
    assert pull(state, "missing", [("app:1", "app:1"), ("app:2", "app:2")], user="").returncode == 0
    assert [line for line in calls(state) if line.startswith("pull")] == ["pull -- app:2"]
    refused = pull(state, "never", [("app:3", "app:3")], user="")
    assert refused.returncode == 6 and f"{commands.PULL_MISSING} app:3" in refused.stderr


def test_a_pinned_digest_is_pulled_then_given_the_compose_files_tag(state: Path) -> None:
    pinned = "r/app@sha256:" + "a" * 64
    done = pull(state, "always", [(pinned, "r/app:latest")], user="")
    assert done.returncode == 0
    assert calls(state) == [f"pull -- {pinned}", f"tag {pinned} r/app:latest"]
    assert commands.parse_pulled(done.stdout) == {"r/app:latest": "sha256:" + "a" * 64}


def test_a_failed_pull_names_what_it_pulled(state: Path) -> None:
    done = pull(state, "always", [("r/app:9", "r/app:9")], user="", PULL_FAILS="1")
    assert done.returncode == 5 and "manifest unknown" in done.stderr
    assert f"{commands.PULL_FAILED} r/app:9" in done.stderr


class LocalHost:
    """A host here: each argv quoted as SSH carries it, run by sh with the stand-in docker."""

    def __init__(self, state: Path) -> None:
        self.state = state

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = 120,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result:
        line = shell_line(argv, timeout, tied=input is None)
        env = environment(self.state, FORMAT="1") if "{{.Id}}\t" in " ".join(argv) else environment(self.state)

        def go() -> subprocess.CompletedProcess[str]:
            process = start(["sh", "-c", line], env, (input or "").removesuffix("\n"))
            if input is not None and not hold_stdin:  # a tied command watches its stdin: held open
                assert process.stdin is not None
                process.stdin.close()
            return finish(process)

        done = await asyncio.to_thread(go)
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailed(list(argv), result.status, result.stdout, result.stderr)
        return result

    def reverse_forward(self, port: int) -> AbstractAsyncContextManager[int]:
        raise AssertionError("no runner build here")

    async def start(self, argv: Sequence[str]) -> Held:
        raise AssertionError("no lock here")

    def tie_to(self, holder: commands.Holder | None, lapse: Callable[[], str] | None = None) -> None:
        raise AssertionError("no lock here")


def test_the_first_host_pins_the_digest_it_got_and_a_moved_tag_changes_nothing_for_the_others(tmp_path: Path) -> None:
    image = "registry.example.com:5000/app:latest"
    key = image.replace("/", "_").replace(":", "_")
    states = [make_state(tmp_path / name) for name in ("web-1", "web-2")]
    for state in states:
        (state / "config.yml").write_text(f"services:\n  web_blue:\n    image: {image}\n")
        (state / "registry" / key).write_text("sha256:" + "1" * 64)
    config = load_config(raw(**{"project-name": "app", "registry": "registry.example.com:5000",
                                "registry-username": "ci", "registry-password": PASSWORD}))  # fmt: skip
    shared = Shared()

    def images(state: Path) -> Images:
        host = LocalHost(state)
        return Images(host, config, Stacks(host, config, print), print, shared)

    first = images(states[0])
    assert asyncio.run(first.pull("blue")) == "1 of 1 pulled (always)"
    (states[1] / "registry" / key).write_text("sha256:" + "2" * 64)  # the tag moved meanwhile
    second = images(states[1])
    asyncio.run(second.pull("blue"))
    pinned = "registry.example.com:5000/app@sha256:" + "1" * 64
    (pulled,) = [line for line in calls(states[1]) if " pull " in line]
    assert pulled.startswith("--config ") and pulled.endswith(f" pull -- {pinned}")  # logged in, by digest
    assert f"tag {pinned} {image}" in calls(states[1])
    assert first.records[0].digest == second.records[0].digest == pinned
    assert first.records[0].id == second.records[0].id == "sha256:" + "1" * 64


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
    assert pulled_images(text, lambda service: f"app-{service}") == {"worker_blue": "ghcr.io/acme/worker:1"}
    assert pulled_images("not: [valid", lambda service: service) == {}


def test_an_image_a_build_makes_is_never_pulled_once_variables_are_filled_in() -> None:
    config = """
services:
  backend_blue: {build: {context: /srv/app/app}, image: "ghcr.io/acme/app:abc"}
  frontend_blue: {image: "ghcr.io/acme/app:abc"}
  tool_blue: {build: {context: /srv/app/tool}}
  cli_blue: {image: "app-tool_blue"}
  redis_blue: {image: "redis:7"}
"""
    assert pulled_images(config, lambda service: f"app-{service}") == {"redis_blue": "redis:7"}


def test_an_image_name_that_docker_would_read_as_an_option_is_refused() -> None:
    with pytest.raises(DeployError, match="not an image reference"):
        pulled_images("services:\n  web: {image: '--help'}\n", lambda service: service)


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


def test_a_runner_built_image_gets_a_repository_name_a_registry_takes() -> None:
    assert repository_name("bluegreen/app-backend_blue") == "bluegreen/app-backend_blue"
    assert repository_name("bluegreen/App-Web.") == "bluegreen/app-web"
    assert repository_name("bluegreen/a--b__c..d e") == "bluegreen/a--b__c-d-e"


def test_a_repository_keeps_a_registry_port() -> None:
    assert repository("registry.lab:5443/lab/web:latest") == "registry.lab:5443/lab/web"
    assert repository("registry.lab:5443/lab/web") == "registry.lab:5443/lab/web"
    assert repository("nginx") == "nginx"


def test_docker_hub_named_as_a_registry_is_docker_hub() -> None:
    for name in ("docker.io", "Index.Docker.io", "registry-1.docker.io"):
        config = load_config(raw(registry=name, **{"registry-username": "ci", "registry-password": PASSWORD}))
        assert config.registry == ""
    assert (
        load_config(raw(registry="GHCR.io", **{"registry-username": "ci", "registry-password": PASSWORD})).registry
        == "ghcr.io"
    )
