"""Which containers belong to which stack, whatever project made them (pure parsing, no I/O).

The base and both colors run as one compose project, as the seed's script runs them, so the colors
share the base's default network and named volumes. Containers are recognised by the compose file
they came from (a label compose sets), so a color can be stopped and removed without `down`, which
would take the shared network with it, and so containers made by another project (a host set up by
the previous release, with a project per stack) are adopted."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    running: bool
    project: str
    service: str
    config_files: tuple[str, ...]


def parse_containers(text: str) -> list[Container]:
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 6:
            continue
        cid, name, status, project, service, files = fields
        out.append(Container(cid, name, status.startswith("Up"), project, service, tuple(f.strip() for f in files.split(",") if f.strip())))
    return out


def from_file(containers: list[Container], compose_file: str) -> list[Container]:
    """Containers made from `compose_file` (matched by file name), under any project."""
    name = posixpath.basename(compose_file)
    return [c for c in containers if name in {posixpath.basename(f) for f in c.config_files}]


def foreign(containers: list[Container], compose_file: str, project: str) -> list[Container]:
    """Containers made from `compose_file` under a project other than `project`."""
    return [c for c in from_file(containers, compose_file) if c.project != project]


def _services(text: str) -> dict[str, dict[str, object]]:
    data = yaml.safe_load(text) or {}
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict):
        return {}
    return {str(name): spec if isinstance(spec, dict) else {} for name, spec in services.items()}


def compose_services(text: str) -> list[str]:
    """The service names of a compose file."""
    return list(_services(text))


def service_of_container(text: str, container: str, project: str) -> str | None:
    """The service of a compose file whose container is named `container`: by `container_name`, or by
    the name compose gives it in `project` (v1: project_service_1, v2: project-service-1)."""
    for name, spec in _services(text).items():
        if container in (spec.get("container_name"), f"{project}_{name}_1", f"{project}-{name}-1"):
            return name
    return None


def shared_names(blue: str, green: str) -> list[str]:
    """Service names both color files define: in one compose project they would replace each other."""
    return sorted(set(_services(blue)) & set(_services(green)))
