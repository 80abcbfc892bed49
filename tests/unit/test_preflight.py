"""What the host has, before anything changes, against a fake host: one error per missing piece with
its fix; a first deploy found from the base file; the live color read from nginx, not .active_env."""

from __future__ import annotations

import asyncio

import pytest

from bluegreen.config import load_config
from bluegreen.errors import DeployError
from bluegreen.nginx import Nginx, NginxError
from bluegreen.preflight import Preflight
from bluegreen.remote import Result
from bluegreen.switch import Switch

from .fakes import FakeHost, FakeNginx
from .test_config import raw

APP = "/srv/app"
TARGET = f"{APP}/nginx/conf.d/upstream.conf"
BLUE, GREEN = "upstream b { server backend_blue:8000; }\n", "upstream b { server backend_green:8000; }\n"


def preflight(host: FakeHost, **inputs: str) -> tuple[Preflight, list[tuple[str, str]]]:
    warnings: list[tuple[str, str]] = []
    config = load_config(raw(**{"nginx-container": "web", "project-name": "app", **inputs}))
    proxy = Nginx(host, config.nginx_container, config.upstream_target_path)
    return Preflight(host, config, proxy, lambda _: None, lambda m, t: warnings.append((t, m))), warnings


def healthy_host() -> FakeHost:
    host = FakeHost(
        files={TARGET: GREEN, f"{APP}/nginx/upstream.blue.conf": BLUE, f"{APP}/nginx/upstream.green.conf": GREEN}
    )
    host.on(["git", "-C", APP, "rev-parse", "--is-inside-work-tree"], lambda argv, _: Result(0, "true\n", ""))
    FakeNginx(host, TARGET)
    return host


def test_a_host_with_docker_compose_and_nginx_passes() -> None:
    facts = asyncio.run(preflight(healthy_host())[0].check_host())
    assert facts.compose == "v2" and facts.nginx_service == ""


@pytest.mark.parametrize(
    ("prefix", "result", "message"),
    [
        (["docker", "version"], Result(127, "", "docker: not found"), "docker is not installed on the host"),
        (["docker", "version"], Result(1, "", "permission denied while trying"), "deploy may not use docker"),
        (["git", "-C", APP], Result(128, "", "fatal: not a git repository"), "missing or not a git checkout"),
        (["git", "-C", APP], Result(128, "", "detected dubious ownership"), "belongs to another user"),
    ],
)
def test_each_missing_piece_is_one_error_with_its_fix(prefix: list[str], result: Result, message: str) -> None:
    host = healthy_host()
    host.on(prefix, lambda argv, _: result)
    with pytest.raises(DeployError, match=message) as caught:
        asyncio.run(preflight(host)[0].check_host())
    assert caught.value.fix


def test_no_compose_at_all_is_an_error() -> None:
    host = healthy_host()
    host.on(["docker", "compose"], lambda argv, _: Result(1, "", "unknown command"))
    host.on(["sh", "-c", "command -v docker-compose"], lambda argv, _: Result(1, "", ""))
    with pytest.raises(DeployError, match="neither 'docker compose' \\(v2\\) nor 'docker-compose' \\(v1\\)"):
        asyncio.run(preflight(host)[0].check_host())


def test_a_first_deploy_is_nginx_as_a_base_service_and_a_typo_is_an_error() -> None:
    host = healthy_host()
    host.on(["docker", "inspect"], lambda argv, _: Result(1, "", "No such container"))
    host.files[f"{APP}/docker-compose.base.yml"] = "services:\n  db: {}\n  proxy: {container_name: web}\n"
    assert asyncio.run(preflight(host)[0].check_host()).nginx_service == "proxy"
    with pytest.raises(NginxError, match=r"no service of docker-compose\.base\.yml makes a container of that name"):
        asyncio.run(preflight(host, **{"nginx-container": "wbe"})[0].check_host())


def test_the_live_color_is_what_nginx_serves_and_active_env_only_a_cache() -> None:
    host = healthy_host()
    host.files[f"{APP}/.active_env"] = "blue\n"
    check, warnings = preflight(host)
    proxy = check.proxy
    assert asyncio.run(check.live_color(Switch(host, proxy, APP, "nginx/conf.d/upstream.conf"), True)) == "green"
    assert [title for title, _ in warnings] == ["Live color drift"]
    host.files[TARGET] = "upstream b { server elsewhere:1; }\n"
    assert asyncio.run(check.live_color(Switch(host, proxy, APP, "nginx/conf.d/upstream.conf"), True)) == "blue"
    assert [title for title, _ in warnings] == ["Live color drift", "Live color unknown"]
