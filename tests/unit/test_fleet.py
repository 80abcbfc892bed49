"""The fleet on fake hosts (each its own clone, dockerd and nginx): every host is built and healthy
before any switches, batches switch in order, and a failure anywhere before the whole fleet has
switched leaves every host on the color it served (rollback-all) or the documented split (stop)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator, Sequence

import pytest

from bluegreen import commands
from bluegreen.config import Config, load_config
from bluegreen.fleet import Fleet, deploy_with_signals
from bluegreen.journal import last_switch, parse
from bluegreen.lock import RunInfo
from bluegreen.remote import CommandFailed, Remote, Result
from bluegreen.report import FleetReport

from .fakes import FakeCanaryLog, FakeRemote
from .test_config import raw
from .test_deployer import APP, SEED, TARGET, V1, V2, App, Collect, make_app

HOSTS = ("web-1", "web-2", "web-3")
HOST_URL = "http://127.0.0.1:8080/api/v1/"


class Fleet3:
    def __init__(self) -> None:
        self.out = Collect()
        self.apps = {name: make_app(self.out) for name in HOSTS}
        self.events: list[tuple[str, str]] = []  # (host, what), across the fleet, in order
        for name, app in self.apps.items():
            self.watch(name, app.host)

    def watch(self, name: str, host: FakeRemote) -> None:
        ran = host.run

        async def run(argv: Sequence[str], **kwargs: object) -> Result:
            if argv[:2] == ["docker", "compose"] and "up" in argv:
                self.events.append((name, "build"))
            elif commands.TEST_AND_RELOAD_SCRIPT in argv:
                self.events.append((name, "reload"))
            elif argv[:2] == ["docker", "stop"]:
                self.events.append((name, "stop"))
            elif argv[:1] == ["curl"] and HOST_URL in argv:
                self.events.append((name, "host-url"))
            return await ran(argv, **kwargs)  # type: ignore[arg-type]

        host.run = run  # type: ignore[method-assign]

    def run(self, **inputs: str) -> FleetReport:
        values = {
            "project-name": "app",
            "nginx-container": "web",
            "health-interval": "1",
            "host": ",".join(HOSTS),
            "ref": V2,
            **inputs,
        }
        fleet = Fleet(load(values), self.out, RunInfo("org/app", "9", "1", "https://run/9"))
        return asyncio.run(deploy_with_signals(fleet))

    def serves(self) -> dict[str, str]:
        return {name: "blue" if "blue" in app.host.files[TARGET] else "green" for name, app in self.apps.items()}

    def journal(self, name: str) -> list[dict[str, object]]:
        return parse(self.apps[name].host.files.get(f"{APP}/.bluegreen/journal.jsonl", ""))

    def first(self, what: str, host: str | None = None) -> int:
        return next(i for i, (h, w) in enumerate(self.events) if w == what and host in (None, h))

    def last(self, what: str, host: str | None = None) -> int:
        return max(i for i, (h, w) in enumerate(self.events) if w == what and host in (None, h))

    def fail_host_url(self, name: str) -> None:
        host = self.apps[name].host
        host.on(["curl"], lambda argv, _: Result(0, "502" if HOST_URL in argv else "200", ""))


def load(values: dict[str, str]) -> Config:
    return load_config(raw(**values))


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet3]:
    made = Fleet3()

    async def connect(config: object) -> FakeRemote:
        return made.apps[config.host].host  # type: ignore[attr-defined]

    monkeypatch.setattr(Remote, "connect", staticmethod(connect))
    yield made


def blue_runs(app: App) -> bool:
    return any(c.running for c in app.docker.containers if c.service.endswith("_blue"))


def test_rolling_three_hosts_builds_all_first_switches_one_at_a_time_and_retires_only_at_the_end(
    fleet: Fleet3,
) -> None:
    report = fleet.run(host_url=HOST_URL)
    assert report.ok, fleet.out.lines
    assert fleet.serves() == dict.fromkeys(HOSTS, "blue")
    assert max(fleet.first("build", h) for h in HOSTS) < fleet.first("reload")  # every host built first
    reloads = [h for h, w in fleet.events if w == "reload"]
    assert reloads == list(HOSTS)  # one batch at a time, in the input's order
    # web-1's host-url is asked again before web-3 switches (between batches); no old color stops
    # until every host has switched
    assert any(
        i > fleet.first("reload", "web-2") for i, (h, w) in enumerate(fleet.events) if (h, w) == ("web-1", "host-url")
    )
    assert fleet.first("stop") > fleet.last("reload")
    outputs = report.outputs()
    assert outputs["active-color"] == "blue" and outputs["switched"] == "true" and outputs["deployed-ref"] == V2
    assert json.loads(outputs["hosts-json"]) == [
        {"host": h, "active-color": "blue", "deployed-ref": V2, "switched": True, "rolled-back": False, "images": {}}
        for h in HOSTS
    ]
    summary = report.summary_markdown()
    assert summary.startswith(f"### ✅ Deployed `{V2[:12]}` on 3 hosts: green → blue")
    assert all(f"| {h} | blue | green | `{V2[:12]}` | yes | ✅ ok |" in summary for h in HOSTS)


def test_batch_size_all_switches_every_host_before_the_first_check_of_the_next(fleet: Fleet3) -> None:
    report = fleet.run(batch_size="100%")
    assert report.ok, fleet.out.lines
    assert fleet.serves() == dict.fromkeys(HOSTS, "blue")
    assert fleet.first("stop") > fleet.last("reload")


def test_a_health_failure_on_the_last_host_switches_nothing_anywhere(fleet: Fleet3) -> None:
    fleet.apps["web-3"].host.on(["curl"], lambda argv, _: Result(0, "503", ""))
    report = fleet.run(health_timeout="2")
    assert not report.ok
    assert "reload" not in [w for _, w in fleet.events]
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert not any(blue_runs(app) for app in fleet.apps.values())  # every target torn down
    outputs = report.outputs()
    assert outputs["switched"] == "false" and outputs["active-color"] == "green" and outputs["deployed-ref"] == ""
    assert report.failed_host == "web-3"
    web1 = dict(report.hosts)["web-1"]
    assert "web-3 failed at Health-check blue" in web1.error and "web-1 did not switch" in web1.error
    assert "every host serves what it served before (green)" in report.headline()


def test_a_failure_after_the_first_host_switched_puts_it_back_with_rollback_all(fleet: Fleet3) -> None:
    fleet.fail_host_url("web-2")
    report = fleet.run(host_url=HOST_URL)
    assert not report.ok
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert [h for h, w in fleet.events if w == "reload"] == ["web-1", "web-2", "web-2", "web-1"]
    assert not any(blue_runs(app) for app in fleet.apps.values())
    assert all(c.running for c in fleet.apps["web-1"].docker.containers if c.service == "backend_green")
    web1 = dict(report.hosts)["web-1"]
    assert web1.rolled_back and "on-host-failure is rollback-all, so web-1 switched back" in web1.error
    # the journal says green serves again, and the undone switch does not count
    journal = fleet.journal("web-1")
    assert [e["result"] for e in journal] == ["adopted", "switched", "switched-back", "failed"]
    assert (last_switch(journal) or {}).get("to") == "green"
    assert last_switch(journal, "blue") is None
    assert fleet.apps["web-1"].repo.head == V1  # the checkout is back at what green runs
    assert fleet.apps["web-1"].host.files[f"{APP}/.active_env"] == "green\n"
    outputs = report.outputs()
    assert outputs["active-color"] == "green" and outputs["rolled-back"] == "true" and outputs["switched"] == "false"
    # a rerun, now healthy, deploys again: nothing the failed run left counts as done
    fleet.apps["web-2"].host.on(["curl"], lambda argv, _: Result(0, "200", ""))
    assert fleet.run(host_url=HOST_URL).ok, fleet.out.lines
    assert fleet.serves() == dict.fromkeys(HOSTS, "blue")


def test_stop_leaves_switched_hosts_switched_and_the_rest_untouched(fleet: Fleet3) -> None:
    fleet.fail_host_url("web-2")
    report = fleet.run(host_url=HOST_URL, on_host_failure="stop")
    assert not report.ok
    assert fleet.serves() == {"web-1": "blue", "web-2": "green", "web-3": "green"}
    assert not blue_runs(fleet.apps["web-2"]) and not blue_runs(fleet.apps["web-3"])
    assert "the fleet is split: web-1 serves blue, web-2 serves green, web-3 serves green" in report.headline()
    assert json.loads(report.outputs()["hosts-json"])[0]["switched"] is True
    assert report.outputs()["active-color"] == ""


def test_a_fleet_rollback_goes_back_on_every_host(fleet: Fleet3) -> None:
    assert fleet.run().ok, fleet.out.lines
    report = fleet.run(command="rollback")
    assert report.ok, fleet.out.lines
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert report.headline().startswith("### ✅ Rolled back")


def test_one_host_is_todays_deploy(fleet: Fleet3) -> None:
    report = fleet.run(host="web-1")
    assert report.ok and fleet.serves()["web-1"] == "blue"
    assert set(report.outputs()) == {
        "active-color",
        "previous-color",
        "deployed-ref",
        "switched",
        "rolled-back",
        "hosts-json",
    }
    assert "Wait for the fleet" not in report.summary_markdown()
    assert SEED  # the seed layout on every host


def test_a_host_whose_host_url_fails_between_batches_switches_back_even_with_stop(fleet: Fleet3) -> None:
    """web-1 passes its own check after its switch, then fails the check before web-2's batch: with
    stop, the hosts that switched stay, but not one whose host-url fails: web-1 goes back."""
    asked = []

    def first_then_broken(argv: list[str], _: str | None) -> Result:
        if HOST_URL in argv:
            asked.append(argv)
            return Result(0, "200" if len(asked) == 1 else "502", "")
        return Result(0, "200", "")

    fleet.apps["web-1"].host.on(["curl"], first_then_broken)
    report = fleet.run(host_url=HOST_URL, on_host_failure="stop")
    assert not report.ok
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert [h for h, w in fleet.events if w == "reload"] == ["web-1", "web-1"]
    assert report.failed_host == "web-1"
    error = dict(report.hosts)["web-1"].error
    assert error.endswith("stopped answering 2xx or 3xx (last: HTTP 502); web-1 switched back to green"), error
    assert dict(report.hosts)["web-1"].rolled_back


def test_a_cancel_while_one_host_waits_at_the_gate_switches_nothing_and_names_the_cancel(fleet: Fleet3) -> None:
    """SIGINT while web-1 and web-2 wait for web-3's slow health check: every host recovers, none
    switched, and the fleet's failure is the cancel, not a host."""
    fleet.apps["web-3"].host.on(["curl"], lambda argv, _: Result(0, "503", ""))
    values = {"project-name": "app", "nginx-container": "web", "health-interval": "1", "host": ",".join(HOSTS)}
    made = Fleet(load({**values, "ref": V2, "health_timeout": "600"}), fleet.out, RunInfo("org/app", "9", "1", ""))

    async def go() -> FleetReport:
        task = asyncio.create_task(deploy_with_signals(made))
        while not all(m.waiting for m in made.members[:2]):
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        return await task

    report = asyncio.run(go())
    assert not report.ok and report.failed_host == "the run"
    assert "reload" not in [w for _, w in fleet.events]
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert not any(blue_runs(app) for app in fleet.apps.values())
    assert all("cancelled" in r.error for _, r in report.hosts), [r.error for _, r in report.hosts]


def test_the_first_failure_stops_every_host_still_building_before_its_new_color_starts(fleet: Fleet3) -> None:
    """web-1's build fails while web-2's and web-3's builds run (they would take minutes): both stop
    at once into their recovery, never finish the build or health-check the new color, and say they
    did not switch."""
    started: list[str] = []
    finished: list[str] = []
    for name, app in fleet.apps.items():
        ran = app.host.run

        async def build(argv: Sequence[str], ran: object = ran, name: str = name, **kwargs: object) -> Result:
            if argv[:2] == ["docker", "compose"] and "up" in argv:
                started.append(name)
                if name == "web-1":  # fails once the others are mid-build
                    while len(started) < 3:
                        await asyncio.sleep(0.01)
                    raise CommandFailed(list(argv), 1, "", "failed to solve: process did not complete successfully")
                await asyncio.sleep(30)  # minutes, for a real build
                finished.append(name)
            return await ran(argv, **kwargs)  # type: ignore[operator, no-any-return]

        app.host.run = build  # type: ignore[method-assign]
    report = fleet.run()
    assert not report.ok and report.failed_host == "web-1"
    assert sorted(started) == list(HOSTS) and finished == []
    for name in ("web-2", "web-3"):
        app = fleet.apps[name]
        assert not [argv for argv in app.host.calls if argv[:1] == ["curl"]]  # no health check
        assert not blue_runs(app)
        error = dict(report.hosts)[name].error
        assert error.startswith("web-1 failed at Build and start blue") and error.endswith(f"; {name} did not switch")
        assert any("blue containers removed; green keeps serving" in r for r in dict(report.hosts)[name].restored)
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")


def test_a_host_that_cannot_switch_back_says_so_and_the_headline_says_split(fleet: Fleet3) -> None:
    """web-1 switched; web-2's host-url fails, so rollback-all sends web-1 back, but web-1's nginx now
    rejects every reload: its message says it could not switch back and still serves blue, under its
    own annotation, and nothing claims every host is back."""
    fleet.fail_host_url("web-2")
    web1 = fleet.apps["web-1"]
    reloads = 0
    test_and_reload = web1.nginx.test_and_reload

    def first_reload_only(argv: list[str], stdin: str | None) -> Result:
        nonlocal reloads
        reloads += 1
        if reloads == 1:
            return test_and_reload(argv, stdin)
        return Result(3, web1.nginx.processes(argv, None).stdout, "nginx: [emerg] no space left on device")

    web1.host.on(["docker", "exec", "web", "sh", "-c", commands.TEST_AND_RELOAD_SCRIPT], first_reload_only)
    report = fleet.run(host_url=HOST_URL)
    assert not report.ok
    one = dict(report.hosts)["web-1"]
    assert "web-1 could not switch back (" in one.error and one.error.endswith("it still serves blue"), one.error
    assert "switched back" not in one.error and "every host is back" not in "\n".join(fleet.out.lines)
    assert any(line.startswith("error: Switch back failed (web-1):") for line in fleet.out.lines), fleet.out.lines
    assert "the fleet is split: web-1 serves blue, web-2 serves green" in report.headline()
    two = dict(report.hosts)["web-2"]
    assert two.error.startswith(f"host-url {HOST_URL} did not answer 2xx or 3xx on web-2") and two.rolled_back


def test_a_host_already_live_on_the_commit_says_it_kept_serving_not_that_it_switched_back(fleet: Fleet3) -> None:
    assert fleet.run(host="web-1").ok, fleet.out.lines  # web-1 serves blue at V2 already
    fleet.fail_host_url("web-3")
    report = fleet.run(host_url=HOST_URL)
    assert not report.ok
    one = dict(report.hosts)["web-1"]
    assert one.error.endswith("; web-1 kept serving blue, which it served before this run"), one.error
    assert fleet.serves() == {"web-1": "blue", "web-2": "green", "web-3": "green"}
    two = dict(report.hosts)["web-2"]
    assert two.error.endswith("so web-2 switched back to green"), two.error


def test_two_hosts_whose_host_url_fails_in_one_recheck_each_give_their_own_cause(fleet: Fleet3) -> None:
    for name in ("web-1", "web-2"):
        asked: list[list[str]] = []

        def first_then_broken(argv: list[str], _: str | None, asked: list[list[str]] = asked) -> Result:
            if HOST_URL in argv:
                asked.append(argv)
                return Result(0, "200" if len(asked) == 1 else "502", "")
            return Result(0, "200", "")

        fleet.apps[name].host.on(["curl"], first_then_broken)
    report = fleet.run(host_url=HOST_URL, batch_size="2")
    assert not report.ok
    for name in ("web-1", "web-2"):
        error = dict(report.hosts)[name].error
        assert error.startswith(f"{name}: host-url {HOST_URL} stopped answering"), error
        assert error.endswith(f"; {name} switched back to green"), error
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")


def test_a_promote_that_fails_after_a_host_switched_puts_back_the_held_split_and_says_so(fleet: Fleet3) -> None:
    """A canary held on every host; web-2's host-url fails once web-1 has switched: web-1 goes back to
    the split it held (not to green alone), says so, and keeps its record for another promote."""
    for app in fleet.apps.values():
        FakeCanaryLog(app.host)
    held = fleet.run(strategy="canary", canary_steps="10,hold", canary_hold="1", batch_size="100%")
    assert held.ok, fleet.out.lines
    splits = {name: app.host.files[TARGET] for name, app in fleet.apps.items()}
    fleet.fail_host_url("web-2")
    report = fleet.run(command="promote", ref="", host_url=HOST_URL)
    assert not report.ok
    assert {name: app.host.files[TARGET] for name, app in fleet.apps.items()} == splits
    one = dict(report.hosts)["web-1"]
    assert one.error.endswith("web-1 switched back to the canary held at 10% on blue"), one.error
    assert "serves the canary held at 10% on blue again" in one.fix, one.fix
    assert "every host still holds the canary (green with 10% to blue)" in report.headline(), report.headline()
    assert all(f"{APP}/.bluegreen/canary-held" in app.host.files for app in fleet.apps.values())
    fleet.apps["web-2"].host.on(["curl"], lambda argv, _: Result(0, "200", ""))
    assert fleet.run(command="promote", ref="", host_url=HOST_URL).ok, fleet.out.lines
    assert fleet.serves() == dict.fromkeys(HOSTS, "blue")
    assert not any(f"{APP}/.bluegreen/canary-held" in app.host.files for app in fleet.apps.values())


LB_HOOKS = {"lb_detach_command": "lbctl detach", "lb_attach_command": "lbctl attach"}


class Balancer:
    """The load balancer the hooks talk to: who is out, and the most hosts ever out at once."""

    def __init__(self, fleet: Fleet3, failing: str = "") -> None:
        self.out: set[str] = set()
        self.most = 0
        self.calls: list[tuple[str, str, str]] = []  # (host, verb, BLUEGREEN_ vars)
        for app in fleet.apps.values():
            app.host.slow(["env"], 0.05)  # a hook takes a while: hosts out at once would overlap
            app.host.on(["env"], self.hook)
        self.failing = failing
        self.failing_for: set[str] = set()  # "attach web-3": that hook fails on that host

    def hook(self, argv: list[str], _: str | None) -> Result:
        host, color, verb = argv[1].split("=")[1], argv[2].split("=")[1], argv[-1]
        self.calls.append((host, verb, color))
        if verb == self.failing:
            return Result(1, "", "lb: 503")
        if verb == "detach":  # the host is out from here, whatever its attach does later
            self.out.add(host)
        if f"{verb} {host}" in self.failing_for:
            return Result(1, "", "lb: 503")
        (self.out.add if verb == "detach" else self.out.discard)(host)
        self.most = max(self.most, len(self.out))
        return Result(0, "", "")


def test_each_host_leaves_the_load_balancer_around_its_reload_one_batch_at_a_time(fleet: Fleet3) -> None:
    balancer = Balancer(fleet)
    report = fleet.run(**LB_HOOKS)
    assert report.ok, fleet.out.lines
    assert balancer.calls == [(h, verb, "blue") for h in HOSTS for verb in ("detach", "attach")]
    assert balancer.most == 1 and balancer.out == set()
    reloads = [i for i, (_, w) in enumerate(fleet.events) if w == "reload"]
    assert len(reloads) == 3


def test_hosts_the_fleet_switches_back_leave_the_load_balancer_a_batch_at_a_time(fleet: Fleet3) -> None:
    """web-3's host-url fails: web-1 and web-2 switch back together (rollback-all), but never both out
    of the load balancer at once, and every host that left comes back."""
    balancer = Balancer(fleet)
    fleet.fail_host_url("web-3")
    report = fleet.run(host_url=HOST_URL, **LB_HOOKS)
    assert not report.ok
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert balancer.most == 1 and balancer.out == set()
    assert [v for h, v, _ in balancer.calls if h == "web-1"] == ["detach", "attach", "detach", "attach"]


def test_a_host_whose_attach_failed_keeps_its_place_so_no_more_hosts_are_ever_out_than_a_batch(
    fleet: Fleet3,
) -> None:
    """web-3's host-url fails and its attach fails in the recovery: it may still be out. web-1 and
    web-2 switch back, and reload without leaving the load balancer rather than go out beside it."""
    balancer = Balancer(fleet)
    balancer.failing_for = {"attach web-3"}
    fleet.fail_host_url("web-3")
    report = fleet.run(host_url=HOST_URL, **LB_HOOKS)
    assert not report.ok
    assert balancer.most == 1 and balancer.out == {"web-3"}
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
    assert any("could not put it back into the load balancer" in r for r in dict(report.hosts)["web-3"].restored)
    assert dict(report.hosts)["web-3"].exit_code == 3 and report.exit_code == 3  # out of the load balancer: look
    assert dict(report.hosts)["web-1"].exit_code == 1


def test_a_detach_that_fails_changes_nothing_and_the_host_is_put_back(fleet: Fleet3) -> None:
    balancer = Balancer(fleet, failing="detach")
    report = fleet.run(**LB_HOOKS)
    assert dict(report.hosts)["web-1"].error.startswith("lb-detach-command failed")
    assert "reload" not in [w for _, w in fleet.events]
    assert [v for h, v, _ in balancer.calls if h == "web-1"] == ["detach", "attach"]
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")


def test_a_host_a_dead_run_left_out_of_the_load_balancer_is_put_back_by_the_next(fleet: Fleet3) -> None:
    balancer = Balancer(fleet)
    fleet.apps["web-2"].host.files[f"{APP}/.bluegreen/detached"] = "blue\n"
    report = fleet.run(**LB_HOOKS)
    assert report.ok, fleet.out.lines
    assert [v for h, v, _ in balancer.calls if h == "web-2"][:2] == ["detach", "attach"]  # before anything else
    assert any("a previous run left web-2 out of the load balancer" in line for line in fleet.out.lines)
    assert f"{APP}/.bluegreen/detached" not in fleet.apps["web-2"].host.files


def test_a_host_switched_back_by_the_fleet_leaves_the_load_balancer_around_that_reload_too(fleet: Fleet3) -> None:
    hooks: list[tuple[str, str]] = []

    for name, app in fleet.apps.items():

        def hook(argv: list[str], _: str | None, name: str = name) -> Result:
            hooks.append((name, argv[-1]))
            return Result(0, "", "")

        app.host.on(["env"], hook)
    fleet.fail_host_url("web-2")
    report = fleet.run(host_url=HOST_URL, lb_detach_command="lbctl detach", lb_attach_command="lbctl attach")
    assert not report.ok
    assert [w for h, w in hooks if h == "web-1"] == ["detach", "attach", "detach", "attach"]  # switch, switch back
    assert [w for h, w in hooks if h == "web-2"] == ["detach", "detach", "attach"]  # out again for the undo
    assert [w for h, w in hooks if h == "web-3"] == []
    assert fleet.serves() == dict.fromkeys(HOSTS, "green")
