"""The nginx switch and its marker, against a fake host with a scripted nginx."""

from __future__ import annotations

import asyncio
import json

import pytest

from bluegreen.nginx import Nginx, NginxError
from bluegreen.switch import Switch

from .fakes import FakeHost, FakeNginx

APP = "/srv/app"
TARGET = f"{APP}/nginx/conf.d/upstream.conf"
MARKER = f"{APP}/.bluegreen/switching"
GREEN = "upstream backend { server backend_green:8000; }\n"
BLUE = "upstream backend { server backend_blue:8000; }\n"


def setup() -> tuple[FakeHost, FakeNginx, Switch]:
    host = FakeHost(files={TARGET: GREEN})
    nginx = FakeNginx(host, TARGET)
    return host, nginx, Switch(host, Nginx(host, "web", TARGET), APP, "nginx/conf.d/upstream.conf")


async def never() -> bool:
    raise AssertionError("not called")


def test_a_switch_writes_the_marker_first_and_removes_it_on_commit() -> None:
    host, nginx, switch = setup()

    async def go() -> set[int]:
        await switch.begin(GREEN, "blue", "https://run")
        assert json.loads(host.files[MARKER]) == {"previous": GREEN, "to": "blue", "run": "https://run"}
        assert host.files[TARGET] == GREEN
        old, _ = await switch.reload(BLUE)
        await switch.commit()
        return old

    old = asyncio.run(go())
    assert old == {11, 12} and nginx.workers() == {21, 22}
    assert host.files[TARGET] == BLUE and MARKER not in host.files
    assert switch.reloaded and nginx.reloads == 1


def test_a_rejected_upstream_is_put_back_without_a_reload() -> None:
    host, nginx, switch = setup()

    async def go() -> str:
        await switch.begin(host.files.get(TARGET, ""), "blue", "")
        with pytest.raises(NginxError, match="nginx -t rejected the config"):
            await switch.reload("upstream backend { server ; }\n")
        return await switch.undo("green", never)

    assert (
        asyncio.run(go())
        == "upstream file nginx/conf.d/upstream.conf put back as it was; nginx never loaded the new one"
    )
    assert host.files[TARGET] == GREEN and MARKER not in host.files
    assert not switch.reloaded and nginx.reloads == 0


def test_undo_after_the_reload_switches_back_and_confirms() -> None:
    host, nginx, switch = setup()

    async def go() -> str:
        await switch.begin(host.files.get(TARGET, ""), "blue", "")
        await switch.reload(BLUE)
        return await switch.undo("green", never)

    assert asyncio.run(go()) == "nginx upstream switched back to green, reloaded and confirmed"
    assert host.files[TARGET] == GREEN and nginx.reloads == 2 and MARKER not in host.files


def test_a_canary_step_rejected_after_an_earlier_one_loaded_is_still_switched_back_with_a_reload() -> None:
    """A canary's first split was loaded; the next one fails nginx -t: nginx still serves the first,
    so the undo must reload the old upstream, not only write it back."""
    host, nginx, switch = setup()
    split = "upstream backend { server backend_blue:8000 weight=1; server backend_green:8000 weight=9; }\n"

    async def go() -> str:
        await switch.begin(GREEN, "blue", "", canary=10)
        await switch.reload(split)
        with pytest.raises(NginxError, match="nginx -t rejected the config"):
            await switch.reload("upstream backend { server ; }\n")
        return await switch.undo("green", never)

    assert asyncio.run(go()) == "nginx upstream switched back to green, reloaded and confirmed"
    assert host.files[TARGET] == GREEN and nginx.reloads == 2 and MARKER not in host.files


def test_undo_before_anything_was_written_does_nothing() -> None:
    host, _, switch = setup()
    assert asyncio.run(switch.undo("green", never)) == ""
    assert host.calls == []


def test_a_dead_runs_marker_puts_the_previous_upstream_back() -> None:
    host, nginx, switch = setup()
    host.files[TARGET] = BLUE
    host.files[MARKER] = json.dumps({"previous": GREEN, "to": "blue"})
    done = asyncio.run(switch.settle_interrupted(nginx_running=True))
    assert done == "a previous run died during the nginx switch; the upstream it replaced was put back and reloaded"
    assert host.files[TARGET] == GREEN and MARKER not in host.files and nginx.reloads == 1


def test_a_first_deploy_that_died_once_its_nginx_ran_stands_instead_of_an_empty_upstream() -> None:
    """Its marker's previous upstream is empty (nothing existed): writing that back would leave nginx
    an upstream it rejects, on every later run. The first deploy's nginx serves on; the marker goes."""
    host, nginx, switch = setup()
    host.files[TARGET] = BLUE
    host.files[MARKER] = json.dumps({"previous": "", "to": "blue", "first": True})
    done = asyncio.run(switch.settle_interrupted(nginx_running=True))
    assert done.endswith("it was a first deploy and its nginx runs, so that stands (nginx serves blue)")
    assert host.files[TARGET] == BLUE and MARKER not in host.files and nginx.reloads == 0
    host.files[MARKER] = json.dumps({"previous": "", "to": "blue", "first": True})
    asyncio.run(switch.settle_interrupted(nginx_running=False))  # died before nginx ran: put back as it was
    assert host.files[TARGET] == "" and MARKER not in host.files


def test_without_a_marker_nothing_is_settled() -> None:
    host, nginx, switch = setup()
    assert asyncio.run(switch.settle_interrupted(nginx_running=True)) == ""
    assert host.files == {TARGET: GREEN} and nginx.reloads == 0


def test_the_live_file_is_set_aside_for_the_checkout_and_put_back() -> None:
    host, _, switch = setup()

    async def go() -> None:
        async with switch.upstream_set_aside():
            assert TARGET not in host.files and host.files[switch.stash] == GREEN
            host.files[TARGET] = "# what git checked out\n"

    asyncio.run(go())
    assert host.files[TARGET] == GREEN and switch.stash not in host.files
    assert host.ran("mv", "-fT", "--", switch.stash, TARGET)


def test_a_first_deploy_starts_nginx_only_after_the_upstream_is_written() -> None:
    host = FakeHost()
    nginx = FakeNginx(host, TARGET)
    switch = Switch(host, Nginx(host, "web", TARGET), APP, "nginx/conf.d/upstream.conf")
    events: list[str] = []

    async def start() -> None:
        events.append(f"start nginx, target is {host.files.get(TARGET)!r}")

    stops = [True]

    async def stop() -> bool:
        events.append("stop nginx")
        return stops.pop(0)

    async def go() -> str:
        await switch.begin(host.files.get(TARGET, ""), "blue", "")
        await switch.start_nginx(BLUE, start)
        return await switch.undo("nothing", stop)

    done = asyncio.run(go())
    assert events == [f"start nginx, target is {BLUE!r}", "stop nginx"]
    assert host.ran("mkdir", "-p", "--", f"{APP}/nginx/conf.d")
    assert done.startswith("nginx stopped again and nginx/conf.d/upstream.conf put back: this was the first deploy")
    assert host.files[TARGET] == "" and nginx.reloads == 0
    stops.append(False)  # a stop that fails is said, never claimed
    assert asyncio.run(go()).endswith("but nginx could not be stopped again: it still serves the new upstream")
