"""Which containers belong to which stack, whatever project made them (pure parsing, no I/O).

A host set up by the seed's script runs all three compose files under one directory-named project,
often with fixed `container_name`s. Those containers are recognised by the compose file they came
from, so the first deploy can leave the base alone and replace or stop a color cleanly."""

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


def foreign(containers: list[Container], compose_file: str, project: str) -> list[Container]:
    """Containers made from `compose_file` (matched by file name) under a project other than
    `project` (every such container if `project` is empty)."""
    name = posixpath.basename(compose_file)
    return [c for c in containers if c.project != project and name in {posixpath.basename(f) for f in c.config_files}]


def compose_services(text: str) -> list[str]:
    """The service names of a compose file."""
    data = yaml.safe_load(text) or {}
    services = data.get("services") if isinstance(data, dict) else None
    return [str(name) for name in services] if isinstance(services, dict) else []
