"""Issue 3's correctness rules, end to end under load: drift, seed adoption, bind mounts, tracked
upstream files, and draining a long request."""

from __future__ import annotations

import json
import os
import threading

import docker
import pytest
from lab import lab

from .conftest import SHAPES, Load
from .test_deploy import assert_static, served, started_at


def test_drift_nginx_serves_blue_but_active_env_says_green(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """A run that died right after the reload: blue serves, green still runs, .active_env still says green."""
    app.bootstrap("green")
    app.compose("blue", "up", "-d", "--build")
    app.wait_ready("blue")
    target = app.app_dir / "nginx/conf.d/upstream.conf"
    target.write_text((app.app_dir / "nginx/upstream.blue.conf").read_text())
    app.reload_nginx()
    assert served(app)["color"] == "blue"
    blue_started = {c.id: started_at(c) for c in app.containers("blue")}
    sha = app.version("v2")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))

    assert run.status == 0, run.log
    assert any(
        line.startswith("::warning title=Live color drift::") and "trusting nginx" in line
        for line in run.commands("warning")
    ), run.log
    assert run.outputs["previous-color"] == "blue" and run.outputs["active-color"] == "green"
    assert served(app) == {"role": "backend", "color": "green", "version": "v2"}
    assert load.failures == [] and len(load.statuses) > 10
    # blue, the live color, was never rebuilt: every blue answer is the release it served before the deploy,
    # and every green answer is the new release (green's stale containers never served)
    answers = [json.loads(b) for b in load.bodies]
    assert answers[0]["color"] == "blue" and answers[-1]["color"] == "green"
    assert {a["version"] for a in answers if a["color"] == "blue"} == {answers[0]["version"]} != {"v2"}
    assert {a["version"] for a in answers if a["color"] == "green"} == {"v2"}
    # one switch: blue answers after the first green one come only from nginx's reload overlap (an old
    # worker accepts until it takes the signal; CI met two), never seconds later
    first_green = min(t for t, body in load.answered if json.loads(body)["color"] == "green")
    last_blue = max(t for t, body in load.answered if json.loads(body)["color"] == "blue")
    assert last_blue - first_green < 2
    assert app.kept_stopped("blue")
    assert {c.id: started_at(c) for c in app.containers("blue")} == blue_started  # neither recreated nor restarted
    assert (app.app_dir / ".active_env").read_text().strip() == "green"


@SHAPES
def test_adopts_a_host_set_up_by_the_seed_script(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    """The seed's host: compose run in app-dir, so one directory-named project for all three files
    (on the bridge variant: its default network and named volume), fixed container names."""
    app.seed_layout()
    app.pull()
    app.bootstrap_seed("green")
    client_names = {
        c.name
        for c in docker.from_env().containers.list(
            ignore_removed=True, filters={"label": f"com.docker.compose.project={app.name}"}
        )
    }
    assert client_names == {
        f"{app.name}_db",
        app.nginx_container,
        f"{app.name}_backend_green",
        f"{app.name}_frontend_green",
    }
    base_started = {
        name: started_at(docker.from_env().containers.get(name)) for name in (f"{app.name}_db", app.nginx_container)
    }
    sha = app.version("v2")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))

    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert_static(app, "v2", "blue")
    assert {n: started_at(docker.from_env().containers.get(n)) for n in base_started} == base_started
    remaining = {
        c.name: c.status
        for c in docker.from_env().containers.list(
            ignore_removed=True, all=True, filters={"label": f"com.docker.compose.project={app.name}"}
        )
    }
    assert remaining == {
        **dict.fromkeys([f"{app.name}_db", app.nginx_container], "running"),
        **dict.fromkeys([f"{app.name}_backend_blue", f"{app.name}_frontend_blue"], "running"),
        **dict.fromkeys([f"{app.name}_backend_green", f"{app.name}_frontend_green"], "exited"),  # kept, stopped
    }
    assert load.failures == []

    # A rollback from this very first deploy: the action journaled green as adopted (its containers,
    # and the commit the checkout had), so it goes back to the seed's own containers.
    seeds = {
        n: docker.from_env().containers.get(n).id for n in (f"{app.name}_backend_green", f"{app.name}_frontend_green")
    }
    rollback = lab.lab_inputs(ssh_host, app, "", command="rollback")
    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(rollback)
        assert run.status == 0, run.log
        assert served(app) == {"role": "backend", "color": "green", "version": "v1"}
        assert {n: docker.from_env().containers.get(n).id for n in seeds} == seeds
        assert "(the commit the checkout had when the action adopted green; not verified): blue → green" in run.summary
        run = lab.run_action(rollback)  # and forward again
        assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert load.failures == []

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v3")))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert_static(app, "v3", "green")
    assert load.failures == []


@pytest.mark.parametrize("app", [("v1", "host"), ("v2", "host")], indirect=True, ids=["v1", "v2"])
def test_upgrade_from_a_host_the_previous_release_deployed(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """The previous release ran each stack as a project of its own (<name>-base, -blue, -green); it
    could only deploy apps that reach the base through the host, as the host-network variant does."""
    app.bootstrap_previous_release("green")
    base = {c.name: started_at(c) for c in app.containers("base")}
    assert {c.labels["com.docker.compose.project"] for c in app.containers("green")} == {f"{app.name}-green"}
    sha = app.version("v2")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))

    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert "base services already running under another project, left as they are: db, nginx" in run.stdout
    assert f"green: adopting containers made by project {app.name}-green" in run.stdout
    assert app.kept_stopped("green")
    assert {c.labels["com.docker.compose.project"] for c in app.containers("blue")} == {app.name}
    assert {c.name: started_at(c) for c in app.containers("base")} == base
    assert load.failures == [] and len(load.statuses) > 10

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v3")))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert app.kept_stopped("blue")
    assert load.failures == [] and len(load.statuses) > 10


def test_single_file_bind_mount_of_a_tracked_upstream_target(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """The harshest layout: nginx mounts the one file, and git tracks it with other content."""
    base = (
        (app.work / "docker-compose.base.yml")
        .read_text()
        .replace(
            "./nginx/conf.d:/etc/nginx/conf.d:ro", "./nginx/conf.d/upstream.conf:/etc/nginx/conf.d/upstream.conf:ro"
        )
    )
    app.commit(
        "track the upstream target; mount it as a single file",
        {
            "docker-compose.base.yml": base,
            "nginx/conf.d/.gitignore": "",
            "nginx/conf.d/upstream.conf": "# tracked placeholder, never served\n",
        },
    )
    app.pull()
    app.bootstrap("green")
    target = app.app_dir / "nginx/conf.d/upstream.conf"
    inode = os.stat(target).st_ino

    for version, color in (("v2", "blue"), ("v3", "green")):
        sha = app.commit(
            f"{version}, and new tracked placeholder text",
            {"app/VERSION": version + "\n", "nginx/conf.d/upstream.conf": f"# placeholder {version}\n"},
        )
        with Load(app.public_url("/api/v1/")) as load:
            run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
        assert run.status == 0, run.log
        assert served(app) == {"role": "backend", "color": color, "version": version}
        assert os.stat(target).st_ino == inode
        assert target.read_text() == (app.app_dir / f"nginx/upstream.{color}.conf").read_text()
        assert load.failures == []


def test_drain_lets_a_long_request_in_flight_finish(action_image: str, ssh_host: lab.SshHost, app: lab.LabApp) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    answers: list[tuple[int, str]] = []

    def long_request() -> None:
        with lab.urllib_open(app.public_url("/slow?s=14"), timeout=60) as response:
            answers.append((response.status, response.read().decode()))

    # 14 s: a deploy on a busy machine reaches its reload well before the request ends
    slow = threading.Thread(target=long_request)
    slow.start()
    run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))
    slow.join(60)

    assert run.status == 0, run.log
    assert answers and answers[0][0] == 200 and json.loads(answers[0][1])["color"] == "green"
    drain_row = next(line for line in run.summary.splitlines() if line.startswith("| Drain old nginx workers"))
    assert "old workers gone in" in drain_row
    assert float(drain_row.split("gone in ")[1].split("s)")[0]) > 1.0
    assert served(app)["color"] == "blue"


def test_a_run_that_died_between_writing_the_upstream_and_the_reload(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """nginx still serves green, but the file on disk (what `nginx -T` shows) already says blue."""
    app.bootstrap("green")
    app.compose("blue", "up", "-d", "--build")
    app.wait_ready("blue")
    target = app.app_dir / "nginx/conf.d/upstream.conf"
    state = app.app_dir / ".bluegreen"
    state.mkdir()
    (state / "switching").write_text(json.dumps({"previous": target.read_text(), "to": "blue"}))
    lab.sh("chown", "-R", f"{lab.DEPLOY_USER}:{lab.DEPLOY_USER}", state)
    target.write_text((app.app_dir / "nginx/upstream.blue.conf").read_text())
    assert served(app)["color"] == "green"
    sha = app.version("v2")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, sha))

    assert run.status == 0, run.log
    assert any(line.startswith("::warning title=Interrupted switch undone::") for line in run.commands("warning")), (
        run.log
    )
    assert run.outputs["previous-color"] == "green" and run.outputs["active-color"] == "blue"
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert not (state / "switching").exists()
    assert load.failures == [] and len(load.statuses) > 10


def test_colors_that_reuse_service_names_run_as_a_project_each(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    """Both color files name their services `backend` and `frontend`: one project cannot hold both, so
    each color gets its own (they reach the base through the host, as the host-network variant does)."""
    renamed = {}
    for color in ("blue", "green"):
        rel = f"docker-compose.{color}.yml"
        text = (
            (app.work / rel).read_text().replace(f"backend_{color}", "backend").replace(f"frontend_{color}", "frontend")
        )
        renamed[rel] = text
    app.commit("same service names in both colors", renamed)
    app.pull()
    app.write_live("green")
    app.compose("base", "up", "-d")
    app.compose("green", "up", "-d", "--build", project=f"{app.name}-green")
    app.wait_ready("green")

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v2")))
        assert run.status == 0, run.log
        assert f"each color runs as a project of its own ({app.name}-blue, {app.name}-green)" in run.stdout
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
        assert app.kept_stopped("green")
        assert {c.labels["com.docker.compose.project"] for c in app.containers("blue")} == {f"{app.name}-blue"}

        run = lab.run_action(lab.lab_inputs(ssh_host, app, app.version("v3")))
    assert run.status == 0, run.log
    assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
    assert app.kept_stopped("blue")
    assert load.failures == [] and len(load.statuses) > 10
