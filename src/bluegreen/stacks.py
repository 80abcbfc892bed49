"""Which containers belong to which stack, whatever project made them (pure parsing, no I/O).

The base and both colors run as one compose project, as the seed's script runs them, so the colors
share the base's default network and named volumes. Containers are recognised by the compose file
they came from (a label compose sets), so a color can be stopped and removed without `down`, which
would take the shared network with it, and so containers made by another project (a host set up by
the previous release, with a project per stack) are adopted."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import yaml

from . import commands
from .commands import Compose, ComposeVariant
from .config import COLORS, Color, Config, KeepPrevious
from .remote import Host, checked

STOP_TIMEOUT_MIN = 10  # the least stop grace a color gets


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
        out.append(
            Container(
                cid,
                name,
                status.startswith("Up"),
                project,
                service,
                tuple(f.strip() for f in files.split(",") if f.strip()),
            )
        )
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


BUILD_TIMEOUT = 1800


class Stacks:
    """The base and the two colors on the host: start, build, stop and adopt them.

    One compose project holds all three files, unless both color files define the same service name
    (then each color runs as <project>-<color>). A color is stopped and removed by container, never
    with `down` or `--remove-orphans`, which would reach the network, the volumes or the services it
    shares with the base and the other color."""

    def __init__(self, host: Host, config: Config, info: Callable[[str], None]) -> None:
        self.host = host
        self.cfg = config
        self.info = info
        self.variant: ComposeVariant = "v2"
        self.split_colors = False
        self.nginx_service = ""  # a first deploy: the base service that makes the nginx container
        self._containers: list[Container] | None = None

    def compose(self, stack: Color | Literal["base"]) -> Compose:
        cfg = self.cfg
        if stack == "base":
            return Compose(self.variant, cfg.project_name, cfg.app_path(cfg.base_compose_file), cfg.app_dir)
        project = f"{cfg.project_name}-{stack}" if self.split_colors else cfg.project_name
        return Compose(self.variant, project, cfg.compose_path(stack), cfg.app_dir)

    async def containers(self, refresh: bool = False) -> list[Container]:
        """The app's containers under any project; listed once (after the lock, before any change)
        unless `refresh`."""
        if self._containers is None or refresh:
            listing = await checked(
                self.host,
                commands.app_containers(self.cfg.app_dir),
                "listing containers",
                "check that docker works for the deploy user",
            )
            self._containers = parse_containers(listing)
        return self._containers

    async def find_nginx_service(self) -> str | None:
        """The base service that makes the nginx container, if the base compose file has one."""
        cfg = self.cfg
        if not cfg.base_compose_file:
            return None
        text = (await self.host.run(commands.read_file(cfg.app_path(cfg.base_compose_file)), check=False)).stdout
        return service_of_container(text, cfg.nginx_container, cfg.project_name)

    async def base_up(self) -> str:
        """Start the base services that do not run; never touch one that does, whatever project made it
        (the previous release ran the base as <name>-base). On a first deploy nginx waits for the switch."""
        stack = self.compose("base")
        fix = f"check {self.cfg.base_compose_file} with 'docker compose config'"
        containers, text = await asyncio.gather(
            self.containers(), checked(self.host, commands.read_file(stack.file), "reading the base compose file", fix)
        )
        running = [c for c in from_file(containers, stack.file) if c.running]
        adopted = sorted({c.service for c in running if c.project != stack.project})
        if adopted:
            self.info(f"base services already running under another project, left as they are: {', '.join(adopted)}")
        up = {c.service for c in running}
        missing = [s for s in compose_services(text) if s not in up and s != self.nginx_service]
        if missing:
            await checked(self.host, stack.up_base(missing), "base compose up", fix, BUILD_TIMEOUT)
        return f"started {', '.join(missing)}" if missing else "every service already runs"

    async def choose_color_projects(self) -> None:
        """One project for everything, unless both color files define the same service name."""
        files = await asyncio.gather(
            *(self.host.run(commands.read_file(self.cfg.compose_path(c)), check=False) for c in COLORS)
        )
        shared = shared_names(files[0].stdout, files[1].stdout)
        self.split_colors = bool(shared)
        if shared:
            name = self.cfg.project_name
            self.info(
                f"blue and green both define {', '.join(shared)}: each color runs as a project of its own "
                f"({name}-blue, {name}-green)"
            )

    async def build(self, color: Color) -> None:
        """Replace whatever `color` has with a fresh build of the checked-out commit."""
        await self.choose_color_projects()
        await self.remove(color, STOP_TIMEOUT_MIN)
        stack = self.compose(color)
        await checked(
            self.host,
            stack.up_color(),
            f"building and starting {color}",
            f"fix the build or {stack.file}; the compose output is above",
            BUILD_TIMEOUT,
        )

    async def remove(self, color: Color, stop_timeout: int, refresh: bool = False) -> None:
        """Stop and remove `color`'s containers, whatever project made them."""
        found = await self.of(color, refresh)
        if not found:
            return
        await self.stop(color, found, stop_timeout)
        await checked(
            self.host,
            commands.remove_containers([c.id for c in found]),
            f"removing {color}'s containers",
            "remove them by hand with docker rm",
        )

    async def stop(self, color: Color, found: list[Container], stop_timeout: int) -> None:
        other = sorted({c.project for c in found} - {self.compose(color).project})
        if other:
            self.info(f"{color}: adopting containers made by project {', '.join(other)}")
        await checked(
            self.host,
            commands.stop_containers([c.id for c in found], stop_timeout),
            f"stopping {color}",
            "stop its containers by hand with docker stop",
            BUILD_TIMEOUT,
        )

    async def retire(self, color: Color, stop_timeout: int, keep: KeepPrevious) -> str:
        """The color that no longer serves, as keep-previous says: stopped but kept, left running, or
        removed. Returns what was done."""
        if keep == "running":
            return "left running"
        left = await self.left_to_retire(color, keep)
        if keep == "none":
            if left:
                await self.remove(color, stop_timeout)
            return f"containers removed, stop timeout {stop_timeout}s"
        if left:
            await self.stop(color, left, stop_timeout)
        return f"containers kept, stop timeout {stop_timeout}s"

    async def left_to_retire(self, color: Color, keep: KeepPrevious) -> list[Container]:
        """The containers `retire` still has to act on: all of them for `none`, the running ones for
        `stopped`, none for `running`. Not empty after a run that died before it retired `color`."""
        found = await self.of(color)
        if keep == "none":
            return found
        return [c for c in found if c.running] if keep == "stopped" else []

    async def start(self, found: list[Container]) -> list[str]:
        """Start the stopped ones of a kept color's containers; returns their ids."""
        stopped = [c.id for c in found if not c.running]
        if stopped:
            await checked(
                self.host,
                commands.start_containers(stopped),
                "starting the kept containers",
                "read 'docker start' output above; deploy the commit again to rebuild the color",
                BUILD_TIMEOUT,
            )
        return stopped

    async def stop_ids(self, ids: list[str]) -> None:
        """Stop containers a failed rollback started (they were stopped before it)."""
        if ids:
            await self.host.run(commands.stop_containers(ids, STOP_TIMEOUT_MIN), check=False, timeout=120)

    async def of(self, color: Color, refresh: bool = False) -> list[Container]:
        """The containers made from `color`'s compose file, under any project."""
        return from_file(await self.containers(refresh), self.cfg.compose_path(color))

    async def exec(self, color: Color, service: str, argv: list[str], timeout: int) -> tuple[int, str]:
        """Run argv in `service` of `color` (compose exec -T: no shell, no TTY); returns the exit
        status (124 on timeout) and the output."""
        result = await self.host.run(self.compose(color).exec(service, argv), check=False, timeout=timeout)
        return result.status, result.stdout + result.stderr

    async def logs(self, color: Color, tail: int) -> str:
        result = await self.host.run(self.compose(color).logs(tail), check=False, timeout=30)
        return result.stdout + result.stderr

    async def start_nginx(self) -> None:
        await checked(
            self.host,
            self.compose("base").up_base([self.nginx_service]),
            f"starting nginx ({self.nginx_service})",
            f"check the nginx service in {self.cfg.base_compose_file}",
            BUILD_TIMEOUT,
        )

    async def stop_nginx(self) -> None:
        await self.host.run(self.compose("base").stop([self.nginx_service]), check=False, timeout=120)
