from __future__ import annotations

import asyncio

import pytest

from bluegreen.config import KeepPrevious, load_config
from bluegreen.remote import Result
from bluegreen.stacks import (
    Container,
    Stacks,
    compose_services,
    foreign,
    from_file,
    parse_containers,
    service_of_container,
    shared_names,
)

from .fakes import FakeHost
from .test_config import raw

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


def container(cid: str, project: str, service: str, files: str, status: str = "Up 3 minutes") -> str:
    return "\t".join([cid, f"{project}_{service}", status, project, service, files])


def test_containers_are_told_apart_by_the_file_they_came_from_under_any_project() -> None:
    listing = "\n".join(
        [
            container("a", "app", "db", "/srv/app/docker-compose.base.yml"),
            container("b", "app", "backend_blue", "/srv/app/docker-compose.blue.yml", "Exited (0) 1 minute ago"),
            container("c", "app-green", "backend_green", "/srv/app/docker-compose.green.yml"),
            "not a container line",
        ]
    )
    found = parse_containers(listing)
    assert [c.id for c in found] == ["a", "b", "c"]
    assert found[1] == Container(
        "b", "app_backend_blue", False, "app", "backend_blue", ("/srv/app/docker-compose.blue.yml",)
    )
    assert [c.id for c in from_file(found, "/srv/app/docker-compose.green.yml")] == ["c"]
    assert [c.id for c in foreign(found, "/srv/app/docker-compose.green.yml", "app")] == ["c"]
    assert foreign(found, "/srv/app/docker-compose.base.yml", "app") == []


def test_the_nginx_container_is_found_among_the_base_services() -> None:
    assert compose_services(BASE) == ["db", "nginx", "redis"]
    assert service_of_container(BASE, "hint_system_nginx", "hint_system") == "nginx"
    assert service_of_container(BASE, "hint_system_redis_1", "hint_system") == "redis"
    assert service_of_container(BASE, "hint_system-db-1", "hint_system") == "db"
    assert service_of_container(BASE, "hint_system_ngnix", "hint_system") is None
    assert service_of_container("", "x", "p") is None
    assert service_of_container("services: [a, b]", "a", "p") is None


def test_colors_that_reuse_service_names_cannot_share_a_project() -> None:
    assert (
        shared_names(
            "services: {backend_blue: {}, frontend_blue: {}}", "services: {backend_green: {}, frontend_green: {}}"
        )
        == []
    )
    assert shared_names("services: {backend: {}, worker: {}}", "services: {worker: {}, backend: {}}") == [
        "backend",
        "worker",
    ]


# -- the lifecycle, against a fake host -----------------------------------------------------------

APP = "/srv/app"
BLUE_FILE = "services:\n  backend_blue: {build: .}\n  frontend_blue: {build: .}\nvolumes:\n  static_volume:\n"
GREEN_FILE = "services:\n  backend_green: {build: .}\n  frontend_green: {build: .}\nvolumes:\n  static_volume:\n"


def lifecycle(listing: list[str], blue: str = BLUE_FILE, green: str = GREEN_FILE) -> tuple[FakeHost, Stacks, list[str]]:
    files = {
        f"{APP}/docker-compose.base.yml": BASE,
        f"{APP}/docker-compose.blue.yml": blue,
        f"{APP}/docker-compose.green.yml": green,
    }
    host = FakeHost(files=files)
    host.on(["docker", "ps"], lambda argv, _: Result(0, "\n".join(listing) + "\n", ""))
    notes: list[str] = []
    stacks = Stacks(host, load_config(raw(**{"project-name": "app"})), notes.append)
    return host, stacks, notes


def compose_calls(host: FakeHost) -> list[list[str]]:
    return [argv[argv.index("--file") + 2 :] for argv in host.ran("docker", "compose")]


def test_the_base_starts_only_what_does_not_run_and_never_nginx_before_the_switch() -> None:
    host, stacks, _ = lifecycle([container("a", "app", "db", f"{APP}/docker-compose.base.yml")])
    stacks.nginx_service = "nginx"
    assert asyncio.run(stacks.base_up()) == "started redis"
    assert compose_calls(host) == [["up", "--detach", "--no-recreate", "redis"]]


def test_a_base_that_runs_is_left_alone_whatever_project_made_it() -> None:
    base = f"{APP}/docker-compose.base.yml"
    listing = [container(c, "app-base", s, base) for c, s in (("a", "db"), ("b", "nginx"), ("c", "redis"))]
    host, stacks, notes = lifecycle(listing)
    assert asyncio.run(stacks.base_up()) == "every service already runs"
    assert compose_calls(host) == []
    assert notes == ["base services already running under another project, left as they are: db, nginx, redis"]


def test_a_color_is_built_in_the_shared_project_after_its_old_containers_are_removed() -> None:
    green = f"{APP}/docker-compose.green.yml"
    listing = [
        container("g1", "app", "backend_green", green, "Exited (1)"),
        container("g2", "app-green", "frontend_green", green),
    ]
    host, stacks, notes = lifecycle(listing)
    asyncio.run(stacks.build("green"))
    assert host.ran("docker", "stop", "--time", "10", "g1", "g2") and host.ran("docker", "rm", "--force", "g1", "g2")
    (up,) = host.ran("docker", "compose")
    assert up[up.index("--project-name") + 1] == "app"
    assert up[up.index("--file") + 2 :] == ["up", "--detach", "--build", "--force-recreate", "--wait"]
    assert notes == ["green: adopting containers made by project app-green"]
    assert host.calls.index(host.ran("docker", "rm")[0]) < host.calls.index(up)


def test_colors_that_share_service_names_get_a_project_each() -> None:
    host, stacks, notes = lifecycle([], blue="services: {backend: {}}\n", green="services: {backend: {}}\n")
    asyncio.run(stacks.build("blue"))
    (up,) = host.ran("docker", "compose")
    assert up[up.index("--project-name") + 1] == "app-blue"
    assert notes == [
        "blue and green both define backend: each color runs as a project of its own (app-blue, app-green)"
    ]


def test_stopping_a_color_never_runs_down_and_leaves_the_other_colors_containers() -> None:
    listing = [
        container("b1", "app", "backend_blue", f"{APP}/docker-compose.blue.yml"),
        container("g1", "app", "backend_green", f"{APP}/docker-compose.green.yml"),
    ]
    host, stacks, _ = lifecycle(listing)
    asyncio.run(stacks.remove("green", 30))
    assert host.ran("docker", "stop", "--time", "30", "g1") and host.ran("docker", "rm", "--force", "g1")
    assert not [argv for argv in host.calls if "down" in argv or "b1" in argv]


def kept_listing() -> list[str]:
    green = f"{APP}/docker-compose.green.yml"
    return [
        container("g1", "app", "backend_green", green),
        container("g2", "app", "frontend_green", green, "Exited (0) 1 minute ago"),
        container("b1", "app", "backend_blue", f"{APP}/docker-compose.blue.yml"),
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
    assert not [argv for argv in host.calls if "b1" in argv]


def test_a_color_kept_stopped_has_nothing_left_to_retire_and_starts_only_what_is_stopped() -> None:
    green = f"{APP}/docker-compose.green.yml"
    host, stacks, _ = lifecycle([container("g1", "app", "backend_green", green, "Exited (0) 2 minutes ago")])
    assert asyncio.run(stacks.left_to_retire("green", "stopped")) == []
    assert [c.id for c in asyncio.run(stacks.left_to_retire("green", "none"))] == ["g1"]
    found = asyncio.run(stacks.of("green"))
    assert asyncio.run(stacks.start(found)) == ["g1"]
    assert host.ran("docker", "start", "g1")


def test_pre_switch_command_runs_as_argv_through_compose_exec_in_the_color_project() -> None:
    host, stacks, _ = lifecycle([])
    asyncio.run(stacks.exec("blue", "backend_blue", ["python", "manage.py", "migrate", "$(id)"], 30))
    (call,) = host.ran("docker", "compose")
    assert call[call.index("--file") + 2 :] == ["exec", "-T", "backend_blue", "python", "manage.py", "migrate", "$(id)"]
