"""Issue 17 end to end, on hosts that are separate machines (lab/hosts.py: each its own dockerd, disk
and sshd), behind a load balancer that never retries on another host. Under load through it, no
request fails, whatever the fleet does: roll, switch at once, refuse, switch back or stop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lab import hosts, lab

from .conftest import Load


@pytest.fixture(scope="module")
def lab_hosts(action_image: str) -> Iterator[tuple[list[hosts.Host], str, str]]:
    """Three hosts (web-1..3) and a bastion; the deploy key, and the bastion's own key."""
    root = lab.LAB_ROOT / "hosts"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_fleet")
    jump_key, jump_public = lab.client_key(root, "id_jump")
    made = [hosts.start_host(f"web-{n}", public) for n in (1, 2, 3)]
    made.append(hosts.start_host("bastion", jump_public, dockerd=False))
    yield made, key, jump_key
    for host in made:
        host.stop()


@pytest.fixture
def fleet(request: pytest.FixtureRequest, lab_hosts: tuple[list[hosts.Host], str, str]) -> Iterator[Fleet]:
    made, key, jump_key = lab_hosts
    count = getattr(request, "param", ("v2", 3))
    compose, size = count
    for host in made[:3]:
        host.reset()
        host.use_compose(compose)
    app = hosts.make_fleet_app()
    targets = made[:size]
    for host in targets:
        hosts.install(host, app)
    balancer = hosts.start_load_balancer(targets)
    yield Fleet(targets, made[3], app, key, jump_key, balancer)
    balancer.stop()
    app.teardown()


class Fleet:
    def __init__(
        self,
        targets: list[hosts.Host],
        bastion: hosts.Host,
        app: lab.LabApp,
        key: str,
        jump_key: str,
        balancer: hosts.LoadBalancer,
    ) -> None:
        self.hosts, self.bastion, self.app, self.key, self.jump_key, self.lb = (
            targets,
            bastion,
            app,
            key,
            jump_key,
            balancer,
        )

    def inputs(self, sha: str, **overrides: str) -> dict[str, str]:
        return hosts.fleet_inputs(self.hosts, self.app, sha, self.key, **overrides)

    def serves(self) -> list[dict[str, str]]:
        """What each host's nginx serves: the backend's color and version."""
        return [{k: hosts.served(h)[k] for k in ("color", "version")} for h in self.hosts]

    def run(self, sha: str, **overrides: str) -> tuple[lab.ActionRun, Load]:
        with Load(self.lb.url("/")) as load:
            run = lab.run_action(self.inputs(sha, **overrides), timeout=900)
        return run, load


def served_everywhere(fleet: Fleet, color: str, version: str) -> None:
    assert fleet.serves() == [{"color": color, "version": version}] * len(fleet.hosts)


def rows(run: lab.ActionRun) -> list[dict[str, object]]:
    return list(json.loads(run.outputs["hosts-json"]))


ONE_HOST = pytest.mark.parametrize("fleet", [("v1", 1), ("v2", 1)], indirect=True, ids=["v1", "v2"])


@ONE_HOST
def test_one_separate_host_deploys_with_zero_failed_requests(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == [] and len(load.statuses) > 20
    served_everywhere(fleet, "blue", "v2")
    assert run.outputs["active-color"] == "blue" and run.outputs["deployed-ref"] == sha
    assert rows(run) == [
        {
            "host": fleet.hosts[0].address,
            "active-color": "blue",
            "deployed-ref": sha,
            "switched": True,
            "rolled-back": False,
        }
    ]


@ONE_HOST
def test_one_separate_host_refuses_an_unhealthy_build_and_keeps_serving(fleet: Fleet) -> None:
    sha = fleet.app.version("v2", status=503)
    run, load = fleet.run(sha, health_timeout="5")
    assert run.status != 0
    (error,) = run.commands("error")
    assert "title=Deploy failed at Health-check blue" in error
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert run.outputs["switched"] == "false"


def test_three_hosts_rolling_one_at_a_time(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == [] and len(load.statuses) > 20
    served_everywhere(fleet, "blue", "v2")
    assert [r["active-color"] for r in rows(run)] == ["blue"] * 3
    assert run.outputs["switched"] == "true" and run.outputs["deployed-ref"] == sha
    # one host at a time, in order; none built after the first switch
    log = run.stdout
    switches = [log.index(f"[{h.address}] Switch nginx to blue: ok") for h in fleet.hosts]
    assert switches == sorted(switches)
    assert max(log.index(f"[{h.address}] Health-check blue: ok") for h in fleet.hosts) < switches[0]
    assert f"Deployed `{sha[:12]}` on 3 hosts: green → blue" in run.summary


@pytest.mark.parametrize("fleet", [("v1", 2)], indirect=True, ids=["v1"])
def test_two_hosts_at_once(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, batch_size="100%")
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")
    # both switched before either was asked to stay: one batch
    log = run.stdout
    second_switch = max(log.index(f"[{h.address}] Switch nginx to blue: ok") for h in fleet.hosts)
    assert second_switch < min(
        log.index(f"[{h.address}] Wait for the rest of the fleet to switch: ok") for h in fleet.hosts
    )


def test_a_failed_health_check_on_the_last_host_switches_nothing_anywhere(fleet: Fleet) -> None:
    hosts.set_dotenv(fleet.hosts[2], fleet.app, "LAB_STATUS=503\n")  # web-3's copy of the new version fails
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, health_timeout="5")
    assert run.status != 0
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert [r["switched"] for r in rows(run)] == [False] * 3
    assert "Switch nginx to blue" not in run.stdout
    assert "every host serves what it served before (green)" in run.summary
    assert any(f"{fleet.hosts[2].address} failed at Health-check blue" in e for e in run.commands("error"))


def test_a_failure_after_the_first_host_switched_puts_it_back(fleet: Fleet) -> None:
    """web-2's new color fails through its nginx only (its health check passes): web-2 switches back
    itself, web-1, already switched, switches back too, and web-3 never switches."""
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha)
    assert run.status != 0
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    first, second, third = rows(run)
    assert first["rolled-back"] is True and second["rolled-back"] is True and third["rolled-back"] is False
    assert run.outputs["active-color"] == "green" and run.outputs["switched"] == "false"
    assert "host-url http://127.0.0.1:8080/api/v1/ did not answer 2xx" in run.stdout
    journal = fleet.hosts[0].exec("cat", f"{fleet.app.app_dir}/.bluegreen/journal.jsonl")
    assert [json.loads(line)["result"] for line in journal.splitlines()][-2:] == ["switched-back", "failed"]
    # a rerun, once web-2 is fixed, deploys the whole fleet
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "")
    run, load = fleet.run(sha)
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")


def test_stop_leaves_the_documented_split(fleet: Fleet) -> None:
    hosts.set_dotenv(fleet.hosts[1], fleet.app, "LAB_PROXIED_STATUS=502\n")
    sha = fleet.app.version("v2")
    run, load = fleet.run(sha, on_host_failure="stop")
    assert run.status != 0
    assert load.failures == []
    assert [s["color"] for s in fleet.serves()] == ["blue", "green", "green"]
    assert [r["switched"] for r in rows(run)] == [True, False, False]
    assert run.outputs["active-color"] == ""
    assert "the fleet is split" in run.summary


def test_a_fleet_wide_rollback(fleet: Fleet) -> None:
    sha = fleet.app.version("v2")
    run, _ = fleet.run(sha, batch_size="100%")
    assert run.status == 0, run.log
    run, load = fleet.run(sha, command="rollback", batch_size="100%")
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "green", "v1")
    assert [r["active-color"] for r in rows(run)] == ["green"] * 3


@pytest.mark.parametrize("fleet", [("v2", 2)], indirect=True, ids=["v2"])
def test_through_a_jump_host_to_hosts_reachable_only_through_it(fleet: Fleet) -> None:
    """The targets are named as the lab network knows them (web-1, web-2): no name the runner can
    resolve, no published sshd used; only the bastion's sshd is reached from the runner."""
    behind = [hosts.Host(h.name, h.container, 0, h.web_port, h.host_key) for h in fleet.hosts]
    sha = fleet.app.version("v2")
    inputs = hosts.fleet_inputs(
        behind,
        fleet.app,
        sha,
        fleet.key,
        proxy_jump=f"{lab.DEPLOY_USER}@127.0.0.1:{fleet.bastion.ssh_port}",
        proxy_key=fleet.jump_key,
        proxy_known_hosts=fleet.bastion.known_hosts_line(),
    )
    direct = lab.run_action({**inputs, "proxy-jump": "", "proxy-key": "", "proxy-known-hosts": ""})
    assert direct.status != 0 and "cannot reach web-1:22" in direct.stdout  # not without the bastion
    with Load(fleet.lb.url("/")) as load:
        run = lab.run_action(inputs, timeout=900)
    assert run.status == 0, run.log
    assert load.failures == []
    served_everywhere(fleet, "blue", "v2")
    lab.assert_no_secrets(run, inputs)
