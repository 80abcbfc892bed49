from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bluegreen.config import COLORS, Color, KeepPrevious, load_config
from bluegreen.errors import DeployError
from bluegreen.remote import Result
from bluegreen.stacks import (
    STACKS,
    ComposeFile,
    ComposeFileError,
    Container,
    Stack,
    Stacks,
    make_layout,
    overlaps,
    parse_containers,
    read_files,
)

from .fakes import FakeHost
from .test_config import raw

APP = "/srv/app"
BASE = """
services:
  db: {image: postgres}
  nginx:
    image: nginx
    container_name: hint_system_nginx
  redis: {image: redis}
volumes:
  static_volume:
"""


def container(cid: str, project: str, service: str, status: str = "Up 3 minutes", working_dir: str = APP) -> Container:
    return Container(cid, f"{project}_{service}", status.startswith("Up"), project, service, working_dir)


def line(c: Container) -> str:
    status = "Up 1 minute" if c.running else "Exited (0) 1 minute ago"
    return "\t".join([c.id, c.name, status, c.project, c.service, c.working_dir, "False"])


def files(base: str = "", blue: str = "", green: str = "") -> dict[Stack, ComposeFile]:
    texts: dict[Stack, str | None] = {"base": base or None, "blue": blue or None, "green": green or None}
    return read_files(texts, {"base": "base.yml", "blue": "blue.yml", "green": "green.yml"})


def test_a_listing_line_is_a_container_with_its_project_service_and_working_dir() -> None:
    listing = (
        "a\tapp_db_1\tUp 3 minutes\tapp\tdb\t/srv/app\tFalse\nnot a container line\nb\tx\tExited (0)\tp\ts\t/w\t\n"
        "c\tapp-backend_blue-run-1\tUp 1 minute\tapp\tbackend_blue\t/srv/app\tTrue\n"  # compose run: not listed
    )
    assert parse_containers(listing) == [
        Container("a", "app_db_1", True, "app", "db", "/srv/app"),
        Container("b", "x", False, "p", "s", "/w"),
    ]


def test_a_compose_file_gives_its_services_and_container_names() -> None:
    base = ComposeFile.parse(BASE)
    assert base.services == ("db", "nginx", "redis")
    assert base.container_names == {"nginx": "hint_system_nginx"}
    assert base.service_of_container("hint_system_nginx", "hint_system") == "nginx"
    assert base.service_of_container("hint_system_redis_1", "hint_system") == "redis"
    assert base.service_of_container("hint_system-db-1", "hint_system") == "db"
    assert base.service_of_container("hint_system_ngnix", "hint_system") is None
    assert ComposeFile.parse("") == ComposeFile()
    for bad, why in (
        ("services: [a, b]", "not a mapping of service names"),
        ("a: [", "not valid YAML"),
        ("- x", "not a mapping"),
    ):
        with pytest.raises(ComposeFileError, match=why):
            ComposeFile.parse(bad)


def test_a_file_that_does_not_parse_is_an_error_naming_it_unless_it_is_an_earlier_commits() -> None:
    names: dict[Stack, str] = {"base": "deploy/base/compose.yml", "blue": "b.yml", "green": "g.yml"}
    texts: dict[Stack, str | None] = {"base": "services: {db: [", "blue": None, "green": None}
    with pytest.raises(DeployError, match=r"deploy/base/compose.yml cannot be read: it is not valid YAML"):
        read_files(texts, names)
    assert read_files(texts, names, strict=False)["base"] == ComposeFile()


def test_a_color_file_may_not_define_what_the_base_runs() -> None:
    names: dict[Stack, str] = {"base": "base.yml", "blue": "blue.yml", "green": "green.yml"}
    ok = files(BASE, "services: {backend_blue: {}}", "services: {backend_green: {container_name: g}}")
    assert overlaps(ok, names, "hint_system_nginx") == []
    bad: dict[Stack, ComposeFile] = {
        "base": ComposeFile.parse(BASE),
        "blue": ComposeFile(("backend_blue", "db", "web"), {"web": "hint_system_nginx", "backend_blue": "same"}),
        "green": ComposeFile(("backend_green",), {"backend_green": "same"}),
    }
    assert overlaps(bad, names, "hint_system_nginx") == [
        "blue.yml defines 'db', a service of base.yml: deploying blue would replace the base's db",
        "blue.yml names the container of 'web' hint_system_nginx, as base.yml does",
        "blue.yml names the container of 'web' hint_system_nginx, nginx-container",
        "blue.yml and green.yml both name a container same: the colors cannot run side by side",
    ]


# -- whose is a container ------------------------------------------------------------------------

FOLDERS = files(
    "services: {db: {}, nginx: {}}",
    "services: {backend_blue: {build: ../../app}, frontend_blue: {}}",
    "services: {backend_green: {build: ../../app}, frontend_green: {}}",
)


def test_a_folder_per_stack_with_one_basename_tells_the_stacks_apart_by_service() -> None:
    """The reported layout: deploy/{base,blue,green}/compose.yml. Basenames never decide."""
    everything = [
        container("d", "app", "db", working_dir=f"{APP}/deploy/base"),
        container("n", "app", "nginx", working_dir=f"{APP}/deploy/base"),
        container("b", "app", "backend_blue", working_dir=f"{APP}/deploy/blue"),
        container("g", "app", "backend_green", working_dir=f"{APP}/deploy/green"),
        container("f", "app", "frontend_green", "Exited (0)", working_dir=f"{APP}/deploy/green"),
    ]
    layout = make_layout((APP,), "app", (), FOLDERS)
    assert {stack: [c.id for c in layout.members(everything, stack)] for stack in STACKS} == {
        "base": ["d", "n"],
        "blue": ["b"],
        "green": ["g", "f"],
    }


def test_legacy_projects_are_adopted_and_other_apps_never() -> None:
    layout = make_layout((APP,), "app", ("hint_system",), FOLDERS)
    mine = [
        container("1", "app-base", "db"),  # the previous release: a project per stack
        container("2", "app-green", "backend_green"),
        container("3", "hint_system", "backend_blue"),  # the seed's directory-named project
    ]
    theirs = [
        container("4", "other", "backend_blue"),  # another project
        container("5", "app", "backend_blue", working_dir="/srv/elsewhere"),  # same project name, another app
        container("6", "app", "backend_blue", working_dir="/srv/app-old"),  # a sibling folder, not inside app-dir
        container("7", "app", "mystery"),  # a service no file defines
    ]
    assert [layout.stack_of(c) for c in mine] == ["base", "green", "blue"]
    assert [layout.stack_of(c) for c in theirs] == [None, None, None, None]


def test_a_service_a_color_dropped_is_still_its_own_and_one_the_base_took_over_is_the_bases() -> None:
    current = files("services: {db: {}, redis: {}}", "services: {web_blue: {}}", "services: {web_green: {}}")
    earlier = files("services: {db: {}}", "services: {frontend_blue: {}}", "services: {frontend_green: {}, redis: {}}")
    layout = make_layout((APP,), "app", (), current, [earlier])
    assert layout.stack_of(container("f", "app", "frontend_green")) == "green"
    assert layout.stack_of(container("r", "app", "redis")) == "base"


def test_colors_sharing_service_names_are_told_apart_by_project_and_never_in_the_shared_one() -> None:
    layout = make_layout(
        (APP,), "app", (), files("services: {db: {}}", "services: {backend: {}}", "services: {backend: {}}")
    )
    assert layout.split and layout.project_of("blue") == "app-blue" and layout.project_of("base") == "app"
    assert layout.stack_of(container("b", "app-blue", "backend")) == "blue"
    assert layout.stack_of(container("g", "app-green", "backend")) == "green"
    assert layout.stack_of(container("x", "app", "backend")) is None  # which color's? neither's


def test_a_service_that_both_colors_take_up_is_still_the_one_colors_that_ran_it_alone() -> None:
    """At A only blue had `worker`, in the shared project; at B both colors define it, so they split:
    the worker A left running is blue's, and retiring blue stops it (it would consume jobs forever)."""
    at_a = files("services: {db: {}}", "services: {backend_blue: {}, worker: {}}", "services: {backend_green: {}}")
    at_b = files("services: {db: {}}", "services: {backend_blue: {}, worker: {}}", "services: {worker: {}}")
    layout = make_layout((APP,), "app", (), at_b, [at_a])
    assert layout.stack_of(container("w", "app", "worker")) == "blue"
    assert layout.stack_of(container("b", "app", "backend_blue")) == "blue"
    assert layout.stack_of(container("g", "app-green", "worker")) == "green"


def test_split_colors_may_name_a_service_as_the_base_does_each_in_its_own_project() -> None:
    split = files("services: {nginx: {}}", "services: {backend: {}, nginx: {}}", "services: {backend: {}, nginx: {}}")
    names: dict[Stack, str] = {"base": "base.yml", "blue": "blue.yml", "green": "green.yml"}
    assert overlaps(split, names, "") == []
    layout = make_layout((APP,), "app", (), split)
    assert layout.stack_of(container("n", "app", "nginx")) == "base"
    assert layout.stack_of(container("bn", "app-blue", "nginx")) == "blue"


def test_a_service_the_base_ran_at_an_earlier_commit_may_not_move_into_a_color() -> None:
    """Its container may still run, the live color using it: building the color would replace it."""
    names: dict[Stack, str] = {"base": "base.yml", "blue": "blue.yml", "green": "green.yml"}
    before = files("services: {db: {}, cache: {}}", "services: {web_blue: {}}", "services: {web_green: {}}")
    now = files("services: {db: {}}", "services: {web_blue: {}, cache: {}}", "services: {web_green: {}}")
    assert overlaps(now, names, "", [before]) == [
        "blue.yml defines 'cache', a service of base.yml (at an earlier commit: it may still run): deploying blue "
        "would replace the base's cache"
    ]


def test_interpolated_container_names_are_left_to_compose() -> None:
    names: dict[Stack, str] = {"base": "base.yml", "blue": "blue.yml", "green": "green.yml"}
    same = "services: {backend: {container_name: 'shop_backend_${COLOR}'}}"
    assert (
        overlaps(files("", same.replace("backend", "backend_b"), same.replace("backend", "backend_g")), names, "") == []
    )


def test_app_dir_through_a_symlink_is_app_dir_under_either_spelling() -> None:
    layout = make_layout((APP, "/data/app"), "app", (), FOLDERS)
    assert layout.stack_of(container("d", "app", "db", working_dir="/data/app")) == "base"
    assert layout.stack_of(container("x", "app", "db", working_dir="/data/application")) is None


# -- the lifecycle, against a fake host -----------------------------------------------------------


def lifecycle(
    listing: list[Container], current: dict[Stack, ComposeFile] | None = None, **inputs: str
) -> tuple[FakeHost, Stacks, list[str]]:
    host = FakeHost()
    host.on(["docker", "ps"], lambda argv, _: Result(0, "".join(line(c) + "\n" for c in listing), ""))
    notes: list[str] = []
    stacks = Stacks(host, load_config(raw(**{"project-name": "app", **inputs})), notes.append)
    default = files(
        BASE, "services: {backend_blue: {}, frontend_blue: {}}", "services: {backend_green: {}, frontend_green: {}}"
    )
    stacks.use_files(current or default)
    return host, stacks, notes


def compose_calls(host: FakeHost) -> list[list[str]]:
    return [argv[argv.index("--file") + 2 :] for argv in host.ran("docker", "compose")]


def acted_on(host: FakeHost) -> set[str]:
    """The container ids any docker stop, rm or start was given."""
    return {
        arg
        for argv in host.calls
        if argv[:2] in (["docker", "stop"], ["docker", "rm"], ["docker", "start"])
        for arg in argv[2:]
        if not arg.startswith("-") and not arg.isdigit()
    }


def test_the_base_starts_only_what_does_not_run_and_never_nginx_before_the_switch() -> None:
    host, stacks, _ = lifecycle([container("a", "app", "db")])
    stacks.nginx_service = "nginx"
    assert asyncio.run(stacks.base_up()) == "started redis"
    assert compose_calls(host) == [["up", "--detach", "--no-recreate", "redis"]]


def test_a_base_that_runs_is_left_alone_whatever_project_made_it() -> None:
    listing = [container(c, "app-base", s) for c, s in (("a", "db"), ("b", "nginx"), ("c", "redis"))]
    host, stacks, notes = lifecycle(listing)
    assert asyncio.run(stacks.base_up()) == "every service already runs"
    assert compose_calls(host) == []
    assert notes == ["base services already running under another project, left as they are: db, nginx, redis"]


def test_a_color_is_built_in_the_shared_project_with_paths_as_its_own_folder_resolves_them() -> None:
    listing = [
        container("g1", "app", "backend_green", "Exited (1)", working_dir=f"{APP}/deploy/green"),
        container("g2", "app-green", "frontend_green", working_dir=f"{APP}/deploy/green"),
        container("b1", "app", "backend_blue", working_dir=f"{APP}/deploy/blue"),
        container("d1", "app", "db", working_dir=f"{APP}/deploy/base"),
    ]
    host, stacks, notes = lifecycle(
        listing,
        FOLDERS,
        **{"compose-file": "deploy/{color}/compose.yml", "base-compose-file": "deploy/base/compose.yml"},
    )
    asyncio.run(stacks.build("green"))
    assert host.ran("docker", "stop", "--time", "10", "g1", "g2") and host.ran("docker", "rm", "--force", "g1", "g2")
    assert acted_on(host) == {"g1", "g2"}
    *builds, up = host.ran("docker", "compose")
    assert [b[b.index("--file") + 2 :] for b in builds] == [["build", "backend_green"]]  # one build a service
    assert host.calls.index(builds[-1]) < host.calls.index(up)
    assert up[up.index("--project-name") + 1] == "app"
    assert up[up.index("--project-directory") + 1] == f"{APP}/deploy/green"
    assert up[up.index("--file") + 1] == f"{APP}/deploy/green/compose.yml"
    assert up[up.index("--file") + 2 :] == ["up", "--detach", "--force-recreate", "--no-build", "--wait"]
    assert notes == ["green: adopting containers made by project app-green"]
    assert host.calls.index(host.ran("docker", "rm")[0]) < host.calls.index(up)


def test_colors_that_share_service_names_get_a_project_each() -> None:
    host, stacks, notes = lifecycle([], files(BASE, "services: {backend: {}}", "services: {backend: {}}"))
    asyncio.run(stacks.build("blue"))
    (up,) = host.ran("docker", "compose")  # nothing to build
    assert up[up.index("--project-name") + 1] == "app-blue"
    assert notes == [
        "blue and green both define backend: each color runs as a project of its own (app-blue, app-green)"
    ]


def kept_listing() -> list[Container]:
    return [
        container("g1", "app", "backend_green"),
        container("g2", "app", "frontend_green", "Exited (0) 1 minute ago"),
        container("b1", "app", "backend_blue"),
        container("d1", "app", "db"),
    ]


@pytest.mark.parametrize(
    ("keep", "stopped", "removed"),
    [("stopped", ["g1"], []), ("running", [], []), ("none", ["g1", "g2"], ["g1", "g2"])],
)
def test_the_old_color_is_retired_as_keep_previous_says(
    keep: KeepPrevious, stopped: list[str], removed: list[str]
) -> None:
    host, stacks, _ = lifecycle(kept_listing())
    assert bool(asyncio.run(stacks.left_to_retire("green", keep))) is (keep != "running")
    asyncio.run(stacks.retire("green", 12, keep))
    assert [argv[4:] for argv in host.ran("docker", "stop")] == ([stopped] if stopped else [])
    assert [argv[3:] for argv in host.ran("docker", "rm")] == ([removed] if removed else [])
    assert acted_on(host) <= {"g1", "g2"}
    assert not [argv for argv in host.calls if "down" in argv]


def test_a_color_kept_stopped_has_nothing_left_to_retire_and_starts_only_what_is_stopped() -> None:
    host, stacks, _ = lifecycle([container("g1", "app", "backend_green", "Exited (0) 2 minutes ago")])
    assert asyncio.run(stacks.left_to_retire("green", "stopped")) == []
    assert [c.id for c in asyncio.run(stacks.left_to_retire("green", "none"))] == ["g1"]
    found = asyncio.run(stacks.of("green"))
    assert stacks.stopped(found) == ["g1"]
    asyncio.run(stacks.start(stacks.stopped(found)))
    assert host.ran("docker", "start", "g1")


def test_pre_switch_command_runs_as_argv_through_compose_exec_in_the_color_project() -> None:
    host, stacks, _ = lifecycle([])
    asyncio.run(stacks.exec("blue", "backend_blue", ["python", "manage.py", "migrate", "$(id)"], 30))
    (call,) = host.ran("docker", "compose")
    assert call[call.index("--file") + 2 :] == ["exec", "-T", "backend_blue", "python", "manage.py", "migrate", "$(id)"]


# -- the invariant, over generated layouts and hosts -----------------------------------------------

NAMES = ("db", "redis", "nginx", "backend", "frontend", "worker", "web", "api", "cache", "queue")
LAYOUTS = {
    "seed": ("docker-compose.base.yml", "docker-compose.{color}.yml"),
    "folders": ("deploy/base/compose.yml", "deploy/{color}/compose.yml"),
    "yaml folders": ("compose.yaml", "{color}/compose.yaml"),
    "one basename": ("infra/docker-compose.yml", "{color}/docker-compose.yml"),
}


@dataclass
class Host:
    inputs: dict[str, str]
    current: dict[Stack, ComposeFile]
    earlier: dict[Stack, ComposeFile]
    containers: list[Container]
    truth: dict[str, Stack | None]  # container id -> the stack that made it (None: not this app's)


@st.composite
def hosts(draw: st.DrawFn) -> Host:
    base_file, color_file = LAYOUTS[draw(st.sampled_from(sorted(LAYOUTS)))]
    pool = list(NAMES)
    base = draw(st.lists(st.sampled_from(pool), unique=True, max_size=4))
    rest = [n for n in pool if n not in base]
    colors: dict[Color, list[str]] = {}
    for color in COLORS:
        plain = draw(st.lists(st.sampled_from(rest), unique=True, max_size=3))  # may be shared: then split
        suffixed = draw(st.lists(st.sampled_from([f"{n}_{color}" for n in rest]), unique=True, max_size=3))
        colors[color] = plain + suffixed
    # a service one color ran alone at an earlier commit, in the shared project, that both define now
    taken_up = draw(st.sampled_from([None, *COLORS]))
    if taken_up:
        for color in COLORS:
            colors[color].append("taken")
    current: dict[Stack, ComposeFile] = {
        "base": ComposeFile(tuple(base)),
        **{c: ComposeFile(tuple(s)) for c, s in colors.items()},
    }
    split = bool(set(colors["blue"]) & set(colors["green"]))
    # services each stack ran at an earlier commit and dropped since: names no other stack ever used
    dropped = {s: [f"old_{s}_{i}" for i in range(draw(st.integers(0, 2)))] for s in STACKS}
    earlier: dict[Stack, ComposeFile] = {
        s: ComposeFile((*dropped[s], *(["taken"] if s == taken_up else []))) for s in STACKS
    }
    project, legacy = "myapp", "app"  # app-dir /srv/app: the seed ran it as project "app"
    containers: list[Container] = []
    truth: dict[str, Stack | None] = {}
    pairs: set[tuple[str, str]] = set()

    def add(stack: Stack | None, project: str, service: str, working_dir: str) -> None:
        if (project, service, working_dir) in {(c.project, c.service, c.working_dir) for c in containers}:
            return
        if stack is not None and (project, service) in pairs:
            return
        cid = f"c{len(containers)}"
        running = draw(st.booleans())
        containers.append(Container(cid, f"{project}-{service}-1", running, project, service, working_dir))
        truth[cid] = stack
        if stack is not None:
            pairs.add((project, service))

    for stack in STACKS:
        file = base_file if stack == "base" else color_file.replace("{color}", stack)
        folder = f"{APP}/{file.rsplit('/', 1)[0]}" if "/" in file else APP
        for service in [*current[stack].services, *dropped[stack]]:
            # a split commit runs each color as <project>-<color> only: its containers are there
            in_own = split and stack != "base" and service in current[stack].services
            choices = [f"{project}-{stack}"] if in_own else [project, f"{project}-{stack}", legacy]
            for made_in in draw(st.lists(st.sampled_from(choices), unique=True, max_size=2)):
                add(stack, made_in, service, draw(st.sampled_from([folder, APP])))
            if draw(st.booleans()):
                add(None, "other-app", service, folder)  # another project on the host
            if draw(st.booleans()):
                add(None, project, service, "/srv/another-app")  # the same project name, another app
    if taken_up:  # left running by the earlier commit, where the colors shared the project
        add(taken_up, project, "taken", APP)
    for service in draw(st.lists(st.sampled_from(["mystery", "sidecar"]), unique=True)):
        add(None, project, service, APP)  # a service no file of this app defines
    inputs = {"project-name": project, "base-compose-file": base_file, "compose-file": color_file}
    return Host(inputs, current, earlier, containers, truth)


@settings(max_examples=300, deadline=None)
@given(hosts(), st.sampled_from(COLORS), st.sampled_from(["build", "remove", "retire-none", "retire-stopped"]))
def test_acting_on_one_color_never_names_a_container_of_the_base_or_the_other_color(
    host_state: Host, color: Color, operation: str
) -> None:
    host = FakeHost()
    listing = "".join(line(c) + "\n" for c in host_state.containers)
    host.on(["docker", "ps"], lambda argv, _: Result(0, listing, ""))
    config = load_config(raw(**host_state.inputs))
    stacks = Stacks(host, config, lambda _: None)
    stacks.use_files(host_state.current, [host_state.earlier])
    if operation == "build":
        asyncio.run(stacks.build(color))
    elif operation == "remove":
        asyncio.run(stacks.remove(color, 10))
    else:
        asyncio.run(stacks.retire(color, 10, "none" if operation == "retire-none" else "stopped"))
    mine = {cid for cid, stack in host_state.truth.items() if stack == color}
    running = {c.id for c in host_state.containers if c.running}
    # never the base's, the other color's or another app's; and every one of its own, under any
    # project it ran in (`stopped` stops only the running ones)
    assert acted_on(host) == (mine & running if operation == "retire-stopped" else mine)
    assert not [argv for argv in host.calls if "down" in argv or "--remove-orphans" in argv]


def test_a_colors_builds_run_at_once_and_a_failed_one_is_named_by_its_service() -> None:
    color = "services: {backend_blue: {build: ., depends_on: [frontend_blue]}, frontend_blue: {build: .}}"
    host, stacks, _ = lifecycle([], files(BASE, color, "services: {backend_green: {}}"))
    in_flight, most = 0, 0
    run = host.run

    async def counting(argv: Sequence[str], **kwargs: Any) -> Result:
        nonlocal in_flight, most
        building = "build" in argv
        in_flight += building
        most = max(most, in_flight)
        try:
            await asyncio.sleep(0.05 if building else 0)
            return await run(argv, **kwargs)
        finally:
            in_flight -= building

    host.run = counting  # type: ignore[method-assign]
    asyncio.run(stacks.build("blue"))
    assert most == 2  # both builds in flight at once, depends_on or not
    host.on(
        ["docker", "compose"],
        lambda argv, _: (
            Result(1, "Step 2/2 : RUN false\n", "exit 1\n") if "frontend_blue" in argv else Result(0, "", "")
        ),
    )
    with pytest.raises(DeployError, match="the build of frontend_blue failed") as caught:
        asyncio.run(stacks.build("blue"))
    assert "RUN false" in caught.value.output
