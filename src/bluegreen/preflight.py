"""Before anything changes: what the host has (docker, the checkout, Compose v2 or v1, nginx), whether
this is a first deploy (nginx is a base service that does not run yet), and which color nginx serves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from . import commands
from .canary import Held
from .commands import ComposeVariant
from .config import COLORS, Color, Config
from .errors import DeployError
from .nginx import Nginx, NginxError, config_sections, live_color
from .remote import Host, last_line
from .stacks import ComposeFile, ComposeFileError
from .switch import Switch

Warn = Callable[[str, str], None]  # (message, title)


@dataclass(frozen=True)
class HostFacts:
    compose: ComposeVariant
    nginx_service: str  # a first deploy: the base service that makes the nginx container; "" otherwise
    app_dir: str  # app-dir as the host resolves it (through symlinks): compose may record this path


class Preflight:
    def __init__(self, host: Host, config: Config, proxy: Nginx, info: Callable[[str], None], warn: Warn) -> None:
        self.host = host
        self.cfg = config
        self.proxy = proxy
        self.info = info
        self.warn = warn
        self.split_loaded = False  # nginx serves the split of the held canary given to live_color

    async def check_host(self) -> HostFacts:
        """Docker for the deploy user, a git checkout at app-dir, Compose, and nginx; each missing one
        is an error naming the fix."""
        cfg = self.cfg
        docker, checkout, v2, v1, nginx, real = await asyncio.gather(
            self.host.run(commands.docker_server_version(), check=False),
            self.host.run(commands.git_is_checkout(cfg.app_dir), check=False),
            self.host.run(commands.compose_detect("v2"), check=False),
            self.host.run(commands.compose_detect("v1"), check=False),
            self.proxy.is_running(),
            self.host.run(commands.real_path(cfg.app_dir), check=False),
        )
        user = cfg.username
        if docker.status == 127:
            raise DeployError(
                "docker is not installed on the host (or not on the deploy user's PATH)", "install Docker on the host"
            )
        if not docker.ok:
            if "permission denied" in docker.stderr:
                raise DeployError(
                    f"{user} may not use docker on the host",
                    f"add the user to the docker group: usermod -aG docker {user} (then log in again)",
                )
            raise DeployError(
                f"dockerd does not answer on the host: {last_line(docker.stderr)}",
                "start Docker on the host: systemctl start docker",
            )
        if checkout.stdout.strip() != "true":
            if "dubious ownership" in checkout.stderr:
                raise DeployError(
                    f"app-dir {cfg.app_dir} belongs to another user, so git refuses it",
                    f"deploy as the owner of {cfg.app_dir}, or chown it to {user}",
                )
            raise DeployError(
                f"app-dir {cfg.app_dir} is missing or not a git checkout on the host",
                f"clone the app there: git clone <repo> {cfg.app_dir}",
            )
        variant = commands.choose_compose(v2.ok, v1.ok)
        if variant is None:
            raise DeployError(
                "neither 'docker compose' (v2) nor 'docker-compose' (v1) is on the host",
                "install the Docker Compose plugin, or docker-compose",
            )
        self.info(f"compose: {'docker compose (v2)' if variant == 'v2' else 'docker-compose (v1)'}")
        nginx_service = ""
        if not cfg.nginx_container:
            await self.proxy.check_available()
        elif not nginx:
            nginx_service = await self.first_deploy_nginx()
        return HostFacts(variant, nginx_service, real.stdout.strip() or cfg.app_dir)

    async def first_deploy_nginx(self) -> str:
        """On a host where nothing runs yet, the nginx container is a service of the base stack, which
        this deploy starts; anything else (a typo in nginx-container) is an error. Read from the work
        tree here, and again from the commit being deployed once it is known (`nginx_service_in`)."""
        cfg = self.cfg
        base = ComposeFile()
        if cfg.base_compose_file:
            text = (await self.host.run(commands.read_file(cfg.app_path(cfg.base_compose_file)), check=False)).stdout
            with contextlib.suppress(ComposeFileError):
                base = ComposeFile.parse(text)
        service = self.nginx_service_in(base)
        self.info(
            f"first deploy: nginx container '{cfg.nginx_container}' is not running; it is service '{service}' of "
            f"{cfg.base_compose_file}, started after the health gate"
        )
        return service

    def nginx_service_in(self, base: ComposeFile) -> str:
        """The service of the base file that makes the nginx container, or an error saying there is none."""
        cfg = self.cfg
        service = base.service_of_container(cfg.nginx_container, cfg.project_name)
        if service is None:
            where = "base-compose-file is empty"
            if cfg.base_compose_file:
                where = f"no service of {cfg.base_compose_file} makes a container of that name"
            raise NginxError(
                f"nginx container '{cfg.nginx_container}' is not running on the host, and {where}",
                "set nginx-container to the name 'docker ps' shows for nginx (or its container_name in the base "
                "compose file), or start it",
            )
        return service

    async def live_color(self, switch: Switch, nginx_runs: bool, held: Held | None = None) -> Color | None:
        """The color nginx serves, after settling what a dead run left (an upstream set aside for the
        checkout, an unsettled switch). `.active_env` is only a cache; nginx wins. While the canary
        `held` is in place (nginx serves its split), its old color counts as live."""
        cfg = self.cfg
        if await switch.put_back_upstream():
            self.warn(
                f"a previous run died while {cfg.upstream_target} was set aside for git checkout; it was put back",
                "Upstream file restored",
            )
        if settled := await switch.settle_interrupted(nginx_runs):
            self.warn(settled, "Interrupted switch undone")
        return await self.current_live(nginx_runs, held)

    async def current_live(self, nginx_runs: bool, held: Held | None = None) -> Color | None:
        """The color nginx serves now, read only (`live_color` settles what a dead run left first)."""
        cfg = self.cfg
        reads = (cfg.upstream_path("blue"), cfg.upstream_path("green"), cfg.app_path(".active_env"))
        dump, (blue, green, active_env) = await asyncio.gather(
            self.proxy.dump() if nginx_runs else _nothing(),
            asyncio.gather(*(self.host.run(commands.read_file(path), check=False) for path in reads)),
        )
        if held is not None and held.serves(config_sections(dump)):
            self.split_loaded = True
            return held.live
        live = live_color(dump, {"blue": blue.stdout, "green": green.stdout})
        cached = active_env.stdout.strip()
        if cached in COLORS and live and cached != live:
            self.warn(
                f".active_env says {cached} but nginx serves {live}; trusting nginx (a previous run probably died "
                "after the switch)",
                "Live color drift",
            )
        if live is None and cached in COLORS:
            self.warn(
                f"nginx serves neither upstream file; .active_env says {cached}, so {cached} is treated as live",
                "Live color unknown",
            )
            return cached
        return live


async def _nothing() -> str:
    return ""
