"""The main path, end to end: the action image run as GitHub's runner runs it, against the lab host."""

from __future__ import annotations

import json
from typing import Any

import docker
import pytest
from lab import lab

from .conftest import FOLDER_SHAPES, LAYOUTS, SEED_SHAPES, Load, shape_id


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def served(app: lab.LabApp) -> dict[str, str]:
    """What nginx serves on the API; on the bridge variant the backend also reached db by service name."""
    with lab.urllib_open(app.public_url("/api/v1/")) as response:
        body: dict[str, str] = json.loads(response.read())
    if app.variant == "bridge":
        assert body.pop("db") == "reached", body
    return body


def assert_static(app: lab.LabApp, version: str, color: str) -> None:
    """The bridge variant: the file the new color wrote into the shared named volume is what nginx serves."""
    if app.variant == "bridge":
        assert app.static_file() == f"{version} {color}"


def network_ids(app: lab.LabApp) -> set[str]:
    return {n.id for n in docker.from_env().networks.list(filters={"label": f"com.docker.compose.project={app.name}"})}


def assert_retired(app: lab.LabApp, color: str, keep: str) -> None:
    """The old color, as keep-previous says: kept stopped, left running, or gone."""
    if keep == "stopped":
        assert app.kept_stopped(color)
    elif keep == "running":
        assert app.running(color) == sorted(app.services(color))
    else:
        assert app.containers(color) == []


@pytest.mark.parametrize(
    ("app", "keep"),
    [*((shape, "stopped") for shape in SEED_SHAPES), *zip(FOLDER_SHAPES, ("none", "running"), strict=True)],
    indirect=["app"],
    ids=lambda value: shape_id(value) if isinstance(value, tuple) else value,
)
def test_green_v1_live_deploys_v2_to_blue_then_back_to_green(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp, keep: str
) -> None:
    """On every shape: the seed's files and a folder per stack with one basename (deploy/<stack>/
    compose.yml), under load: 0 failed requests, the db and nginx never restarted, the old color
    kept as keep-previous says."""
    app.bootstrap("green")
    base_before = {c.name: started_at(c) for c in app.containers("base")}
    assert len(base_before) == 2
    networks = network_ids(app)
    assert_static(app, "v1", "green")
    sha = app.version("v2")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha, keep_previous=keep))

    assert run.status == 0, run.log
    assert f"compose: {'docker compose (v2)' if lab.compose_variant() == 'v2' else 'docker-compose (v1)'}" in run.stdout
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert_static(app, "v2", "blue")
    assert_retired(app, "green", keep)
    # the base, and the network and volume the colors share with it, were never touched
    assert network_ids(app) == networks
    assert {c.labels["com.docker.compose.service"] for c in app.containers("blue") if c.status == "running"} == {
        "backend_blue",
        "frontend_blue",
    }
    assert {c.name: started_at(c) for c in app.containers("base")} == base_before
    assert (app.app_dir / ".active_env").read_text().strip() == "blue"
    assert run.outputs == lab.with_hosts_json(
        ssh_host,
        {
            "active-color": "blue",
            "previous-color": "green",
            "deployed-ref": sha,
            "switched": "true",
            "rolled-back": "false",
        },
    )
    assert "green → blue" in run.summary and sha[:12] in run.summary
    assert load.failures == [] and len(load.statuses) > 10

    sha3 = app.version("v3")
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha3, keep_previous=keep))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert_static(app, "v3", "green")
    assert app.running("green") == ["backend_green", "frontend_green"]
    assert_retired(app, "blue", keep)
    assert {c.name: started_at(c) for c in app.containers("base")} == base_before
    assert load.failures == [] and len(load.statuses) > 10
    assert run.outputs["active-color"] == "green" and run.outputs["previous-color"] == "blue"
    assert "blue → green" in run.summary


@LAYOUTS
def test_unhealthy_version_fails_and_green_keeps_serving(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2-broken", status=503)
    inputs = lab.lab_inputs(ssh_host, app, sha, health_timeout="5")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(inputs)

    assert run.status != 0
    backend_url = app.health_urls("blue").split()[0]
    errors = run.commands("error")
    assert len(errors) == 1, run.log
    assert (
        "title=Deploy failed at Health-check blue::" in errors[0]
        and backend_url in errors[0]
        and "HTTP 503" in errors[0]
    )
    assert load.failures == [] and {json.loads(b)["color"] for b in load.bodies} == {"green"}
    assert served(app)["color"] == "green"
    assert app.containers("blue") == []
    assert (app.app_dir / ".active_env").read_text().strip() == "green"
    assert run.outputs == lab.with_hosts_json(
        ssh_host,
        {
            "active-color": "green",
            "previous-color": "green",
            "deployed-ref": "",
            "switched": "false",
            "rolled-back": "false",
        },
    )
    assert "failed at Health-check blue" in run.summary
    assert "blue containers removed; green keeps serving" in run.summary


def test_host_refusing_port_forwarding_is_probed_with_curl_on_the_host(action_image: str, app: lab.LabApp) -> None:
    no_forwarding = lab.start_sshd(allow_forwarding=False)
    try:
        app.bootstrap("green")
        sha = app.version("v2")
        run = lab.run_action(lab.lab_inputs(no_forwarding, app, sha))
    finally:
        no_forwarding.stop()
    assert run.status == 0, run.log
    assert "refuses TCP forwarding" in run.stdout
    assert "**Health of blue** (via curl on the host)" in run.summary
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}


@LAYOUTS
def test_first_deploy_on_an_empty_host(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    """The app is cloned, nothing runs, no .active_env: the deploy brings up the base, builds blue,
    and starts nginx once blue is healthy and the upstream names it (on a bridge network nginx
    cannot start before the host names in its upstreams exist)."""
    assert not (app.app_dir / "nginx/conf.d/upstream.conf").exists()
    run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v1.1")))

    assert run.status == 0, run.log
    assert "First deploy of" in run.summary and "blue serves, nginx started" in run.summary
    assert "first deploy: nginx container" in run.stdout
    assert served(app) == {"role": "backend", "color": "blue", "version": "v1.1"}
    assert_static(app, "v1.1", "blue")
    assert {c.labels["com.docker.compose.service"] for c in app.containers("base") if c.status == "running"} == {
        "db",
        "nginx",
    }
    assert (app.app_dir / ".active_env").read_text().strip() == "blue"
    assert run.outputs == lab.with_hosts_json(
        ssh_host,
        {
            "active-color": "blue",
            "previous-color": "",
            "deployed-ref": run.outputs["deployed-ref"],
            "switched": "true",
            "rolled-back": "false",
        },
    )

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2")))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v2"}
    assert load.failures == [] and len(load.statuses) > 10


def test_a_mistyped_nginx_container_is_an_error_not_a_first_deploy(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2"), nginx_container=f"{app.name}-ngnix"))
    assert run.status != 0
    (error,) = run.commands("error")
    assert (
        f"nginx container '{app.name}-ngnix' is not running on the host, and no service of docker-compose.base.yml "
        "makes a container of that name" in error
    )
    assert "Fix: set nginx-container" in error
    assert (
        docker.from_env().containers.list(
            ignore_removed=True, all=True, filters={"label": f"com.docker.compose.project.working_dir={app.app_dir}"}
        )
        == []
    )
