from __future__ import annotations

from bluegreen.stacks import Container, compose_services, foreign, from_file, parse_containers, service_of_container, shared_names

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
    assert found[1] == Container("b", "app_backend_blue", False, "app", "backend_blue", ("/srv/app/docker-compose.blue.yml",))
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
    assert shared_names("services: {backend_blue: {}, frontend_blue: {}}", "services: {backend_green: {}, frontend_green: {}}") == []
    assert shared_names("services: {backend: {}, worker: {}}", "services: {worker: {}, backend: {}}") == ["backend", "worker"]
