"""The base and the two colors on the host: which containers are whose, and their lifecycle.

**Whose is a container** is compose's own answer: its project label and its service name. A stack
(the base, blue or green) owns the (project, service) pairs its compose file defines at the commit
being deployed, in the project it runs in, plus the pairs it defined at the commits the host ran
before (so a renamed or dropped service is still found and retired), plus the legacy projects
adoption needs (the previous release's `<project>-<stack>`, the seed's directory-named project). A
pair two stacks claim belongs to neither, and a claim at the commit being deployed wins over an
earlier one. File names and paths never decide it. Containers whose compose working directory lies
outside app-dir are never anyone's: another app that happens to use the same project name.

The base and both colors run as one compose project, as the seed's script runs them, so the colors
share the base's default network and named volumes; a color is stopped and removed container by
container, never with `down` (which would take the shared network with it) or `--remove-orphans`.
If both color files define the same service name, each color runs as `<project>-<color>`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import yaml

from . import commands, envfile
from .commands import Compose, ComposeVariant
from .config import (
    COLORS,
    COMMAND_SECONDS,
    COMPOSE_SECONDS,
    STOP_GRACE_MIN_SECONDS,
    Color,
    Config,
    KeepPrevious,
    project_from_dir,
)
from .errors import DeployError, first_few
from .journal import STATE_DIR
from .remote import Host, Result, checked, last_line

PARALLEL_BUILDS = 4  # builds at once: SSH sessions per connection are few (sshd's MaxSessions is 10)
Stack = Literal["base", "blue", "green"]
STACKS: tuple[Stack, Stack, Stack] = ("base", "blue", "green")


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    running: bool
    project: str
    service: str
    working_dir: str = ""


def parse_containers(text: str) -> list[Container]:
    """`docker ps --format commands.CONTAINER_FORMAT` lines. A one-off container (`compose run`) is
    no part of a stack, so it is never listed: never stopped, removed or recorded. Only one labelled
    so is one: compose, too, takes a container without the label for a service's."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 7:
            continue
        cid, name, status, project, service, working_dir, oneoff = fields
        if oneoff != "True":
            out.append(Container(cid, name, status.startswith("Up"), project, service, working_dir))
    return out


class ComposeFileError(ValueError):
    """A compose file that is not YAML, or whose services are not a mapping."""


@dataclass(frozen=True)
class ComposeFile:
    """What the action needs of one compose file: its services and their container names."""

    services: tuple[str, ...] = ()
    container_names: Mapping[str, str] = field(default_factory=dict)  # service -> container_name
    built: Mapping[str, str] = field(default_factory=dict)  # service with a build -> its image: ("" if none)
    pulled: Mapping[str, str] = field(default_factory=dict)  # service with an image: and no build -> that image

    @classmethod
    def parse(cls, text: str) -> ComposeFile:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ComposeFileError(f"it is not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ComposeFileError("it is not a mapping of compose keys")
        services = data.get("services") or {}
        if not isinstance(services, dict):
            raise ComposeFileError("its services: is not a mapping of service names")
        names, built, pulled = {}, {}, {}
        for name, spec in services.items():
            if not isinstance(spec, dict):
                continue
            if isinstance(spec.get("container_name"), str):
                names[str(name)] = spec["container_name"]
            image = spec["image"] if isinstance(spec.get("image"), str) else ""
            if spec.get("build") is not None:
                built[str(name)] = image
            elif image:
                pulled[str(name)] = image
        made = set(built.values())  # a service that runs another's build is not pulled
        pulled = {name: image for name, image in pulled.items() if image not in made}
        return cls(tuple(str(name) for name in services), names, built, pulled)

    def service_of_container(self, container: str, project: str) -> str | None:
        """The service whose container is named `container`: by `container_name`, or by the name
        compose gives it in `project` (v1: project_service_1, v2: project-service-1)."""
        for name in self.services:
            if container in (self.container_names.get(name), f"{project}_{name}_1", f"{project}-{name}-1"):
                return name
        return None


Files = Mapping[Stack, ComposeFile]


def shared_services(files: Files) -> list[str]:
    """Service names both color files define: one compose project cannot hold both."""
    return sorted(set(files["blue"].services) & set(files["green"].services))


def overlaps(
    files: Files, names: Mapping[Stack, str], nginx_container: str, earlier: Sequence[Files] = ()
) -> list[str]:
    """What the compose files define twice, where that would make one stack replace another's
    containers: a color service the base has (or had at an earlier commit: it may still run), when
    the colors share the base's project; a container_name the base has, a container_name both colors
    use, or a color container named like the nginx container. A name compose interpolates (with a
    `$`) is left to compose. Each as a sentence; empty if none."""
    base = files["base"]
    split = bool(shared_services(files))
    based = {service: "" for service in base.services}
    for before in earlier:
        for service in before["base"].services:
            based.setdefault(service, " (at an earlier commit: it may still run)")
    problems = []
    for color in COLORS:
        mine = files[color]
        for service in [] if split else mine.services:
            if service in based:
                problems.append(
                    f"{names[color]} defines '{service}', a service of {names['base']}{based[service]}: deploying "
                    f"{color} would replace the base's {service}"
                )
        for service, container in mine.container_names.items():
            if "$" in container:
                continue
            if container in base.container_names.values():
                problems.append(
                    f"{names[color]} names the container of '{service}' {container}, as {names['base']} does"
                )
            if nginx_container and container == nginx_container:
                problems.append(f"{names[color]} names the container of '{service}' {container}, nginx-container")
    blue, green = ({n for n in files[c].container_names.values() if "$" not in n} for c in COLORS)
    for container in sorted(blue & green):
        problems.append(
            f"{names['blue']} and {names['green']} both name a container {container}: the colors cannot run side "
            "by side"
        )
    return problems


def check_files(
    files: Files, earlier: Sequence[Files], config: Config, target: Color, sha: str, *, pre_switch: bool
) -> None:
    """Refuse, before anything changes, compose files at `sha` that would make one stack replace
    another's containers, or (with `pre_switch`) a pre-switch-command service the target lacks."""
    names = {stack: config.stack_file(stack) for stack in STACKS}
    if problems := overlaps(files, names, config.nginx_container, earlier):
        raise DeployError(
            "; ".join(problems),
            "give each color's services and containers names of their own (backend_blue, backend_green), and leave "
            "shared services (db, redis, nginx) to the base file only; to move a service from the base into the "
            "colors, stop and remove the base's container by hand first",
        )
    if pre_switch and config.pre_switch_command:
        service, _ = config.pre_switch_for(target)
        if service not in files[target].services:
            raise DeployError(
                f"pre-switch-command: '{service}' is not a service of {names[target]} at {sha[:12]} "
                f"(it has: {', '.join(files[target].services) or 'none'})",
                "start pre-switch-command with a service of the color's compose file; {color} becomes blue or green",
            )


Pair = tuple[str, str]  # (compose project, service)


def within(path: str, dirs: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d + "/") for d in dirs)


@dataclass(frozen=True)
class Layout:
    """Which stack owns which (project, service) pair; see the module's docstring."""

    app_dirs: tuple[str, ...]  # app-dir, as given and as the host resolves it (through a symlink)
    project: str  # the project the base and, unless split, both colors run in
    split: bool  # both colors define a service name: each runs as <project>-<color>
    owner: Mapping[Pair, Stack]

    def inside(self, container: Container) -> bool:
        return within(container.working_dir, self.app_dirs)

    def stack_of(self, container: Container) -> Stack | None:
        return self.owner.get((container.project, container.service)) if self.inside(container) else None

    def outside(self, containers: Iterable[Container]) -> list[Container]:
        """Containers of a service this app's compose runs, in the project it runs it in, recorded
        from outside app-dir (as the path reads; see Stacks.check_project_is_ours): compose's `up`
        picks containers by project and service labels alone, so it would recreate or adopt them."""
        pairs = {(self.project_of(stack), service) for (_, service), stack in self.owner.items()}
        return [c for c in containers if (c.project, c.service) in pairs and c.working_dir and not self.inside(c)]

    def members(self, containers: Iterable[Container], stack: Stack) -> list[Container]:
        return [c for c in containers if self.stack_of(c) == stack]

    def project_of(self, stack: Stack) -> str:
        return f"{self.project}-{stack}" if self.split and stack != "base" else self.project


def make_layout(
    app_dirs: Sequence[str], project: str, legacy: Sequence[str], current: Files, earlier: Sequence[Files] = ()
) -> Layout:
    """The owner of every (project, service) pair the stacks claim. `legacy`: other projects a
    host may hold this app under (the seed's directory-named one); `earlier`: the files at the
    commits the host ran before the one being deployed. At a commit where both colors define a
    service name, each color runs, and so claims, only <project>-<color>."""

    def claims(files: Files) -> dict[Pair, set[Stack]]:
        split = bool(shared_services(files))
        out: dict[Pair, set[Stack]] = {}
        for stack in STACKS:
            projects = [f"{project}-{stack}"] if split and stack != "base" else [project, f"{project}-{stack}", *legacy]
            for service in files[stack].services:
                for name in projects:
                    out.setdefault((name, service), set()).add(stack)
        return out

    now = claims(current)
    owner = {pair: next(iter(stacks)) for pair, stacks in now.items() if len(stacks) == 1}
    before: dict[Pair, set[Stack]] = {}
    for files in earlier:
        for pair, stacks in claims(files).items():
            before.setdefault(pair, set()).update(stacks)
    for pair, stacks in before.items():
        if pair not in now and len(stacks) == 1:
            owner[pair] = next(iter(stacks))
    return Layout(tuple(dict.fromkeys(app_dirs)), project, bool(shared_services(current)), owner)


class Stacks:
    """The base and the two colors on the host: start, build, stop and adopt them. Every container
    it acts on is one the layout says is that stack's (see the module's docstring)."""

    def __init__(self, host: Host, config: Config, info: Callable[[str], None]) -> None:
        self.host = host
        self.cfg = config
        self.info = info
        self.variant: ComposeVariant = "v2"
        self.nginx_service = ""  # a first deploy: the base service that makes the nginx container
        self.files: Files = dict.fromkeys(STACKS, ComposeFile())
        self.app_dirs: tuple[str, ...] = (config.app_dir,)  # and as the host resolves it (preflight)
        self.layout = make_layout(self.app_dirs, config.project_name, config.legacy_projects, self.files)
        self.environ: dict[Color, str] = {}  # colors whose env this run wrote: the file their compose loads
        self.replaced: set[str] = set()  # image ids this run took out of use (see `prune`)
        self._containers: list[Container] | None = None

    def use_files(self, current: Files, earlier: Sequence[Files] = ()) -> None:
        """The stacks' compose files at the commit being deployed (and at the ones before it)."""
        cfg = self.cfg
        self.files = current
        self.layout = make_layout(self.app_dirs, cfg.project_name, cfg.legacy_projects, current, earlier)
        if self.layout.split:
            name = cfg.project_name
            self.info(
                f"blue and green both define {', '.join(shared_services(current))}: each color runs as a project of "
                f"its own ({name}-blue, {name}-green)"
            )

    def compose(self, stack: Stack) -> Compose:
        """Compose for one stack's file, its relative paths resolved against that file's folder, as
        `docker compose -f <file>` resolves them; for a color whose env this run wrote, with it."""
        file = self.cfg.app_path(self.cfg.stack_file(stack))
        environ = self.environ.get(stack, "") if stack != "base" else ""
        return Compose(self.variant, self.layout.project_of(stack), file, posixpath.dirname(file), environ)

    async def write_env(self, color: Color, warn: Callable[[str, str], None]) -> None:
        """The `env` input as `color`'s files (envfile), once: before compose first reads the color,
        mode 0600, from stdin. What its env_file leaves out (Compose v1 cannot hold the values) is
        warned of."""
        if not self.cfg.env or color in self.environ:
            return
        if left_out := await self.env_files(color):
            warn(
                f"Compose v1 cannot hold the values of {', '.join(left_out)} in an env_file (a carriage return, "
                f"'${{', or a trailing backslash): .bluegreen/{color}.env leaves them out; they reach {color} "
                "only through ${NAME} in its compose file",
                "env values left out of the env_file",
            )

    async def env_files(self, color: Color) -> list[str]:
        """Write `color`'s env files; returns the names its env_file leaves out."""
        state = self.cfg.app_path(STATE_DIR)
        dotenv, left_out = envfile.dotenv_text(self.cfg.env, self.variant)
        environ = posixpath.join(state, f"{color}.environ")
        await asyncio.gather(
            self.host.run(commands.write_state(posixpath.join(state, f"{color}.env"), "0600"), input=dotenv),
            self.host.run(commands.write_state(environ, "0600"), input=envfile.shell_text(self.cfg.env)),
        )
        self.environ[color] = environ
        return left_out

    async def prune(self) -> str:
        """Remove the images this run took out of use, once nothing uses them: only those left with
        no tag (a rebuilt tag moved off them, or their containers were removed), never forced, so
        docker refuses any a container (a kept one too) still uses; then build cache unused for a
        week. Returns what was freed."""
        freed: list[str] = []
        if self.replaced:
            facts = await self.host.run(commands.image_facts(sorted(self.replaced)), check=False)
            untagged = [f[0] for f in map(str.split, facts.stdout.splitlines()) if len(f) == 2 and f[1] == "0"]
            if untagged:
                done = await self.host.run(commands.remove_images(untagged), check=False)
                if gone := [i for i in untagged if f"Deleted: {i}" in done.stdout]:
                    freed.append(f"{len(gone)} image{'s' if len(gone) > 1 else ''} this run replaced")
        cache = await self.host.run(commands.prune_build_cache(), check=False)
        reclaimed = re.search(r"Total reclaimed space:\s*(\S+)", cache.stdout)
        if reclaimed and reclaimed.group(1) not in ("0B", "0"):
            freed.append(f"build cache unused for a week ({reclaimed.group(1)})")
        return "; ".join(freed) or "nothing to free"

    async def containers(self, refresh: bool = False) -> list[Container]:
        """Every compose container on the host; listed once, the first time asked (after the
        checkout, before any container changes), unless `refresh`."""
        if self._containers is None or refresh:
            listing = await checked(
                self.host,
                commands.compose_containers(),
                "listing containers",
                "check that docker works for the deploy user",
            )
            self._containers = parse_containers(listing)
        return self._containers

    async def check_project_is_ours(self) -> None:
        """Refuse, before anything changes, to run compose in a project that holds another app's
        containers (one whose compose working directory is outside app-dir): two apps in folders of
        the same name get the same default project, and `up` would take the other's containers."""
        outside = self.layout.outside(await self.containers(refresh=True))
        if not outside:
            return
        dirs = sorted({c.working_dir for c in outside})
        reals = (await self.host.run(commands.real_paths(dirs), check=False)).stdout.split("\0")[:-1]
        if len(reals) != len(dirs):  # not one answer a path: trust none
            reals = [""] * len(dirs)
        mine = {d for d, real in zip(dirs, reals, strict=True) if within(real, self.app_dirs)}
        if mine:  # app-dir through another symlink: this app's own, as compose recorded the path it was given
            self.app_dirs = (*self.app_dirs, *sorted(mine))
            self.layout = dataclasses.replace(self.layout, app_dirs=self.app_dirs)
        if foreign := [c for c in outside if c.working_dir not in mine]:
            dirs = sorted({c.working_dir for c in foreign})
            projects = sorted({c.project for c in foreign})
            raise DeployError(
                f"compose project {', '.join(projects)} also holds containers of another app (working directory "
                f"{', '.join(dirs)}): {first_few(sorted(c.name for c in foreign))}; compose would recreate or adopt "
                "them, so nothing was changed",
                f"give this app a project of its own with project-name (e.g. project-name: "
                f"{self.suggested_project()}), or move the other app to another project; if they are this app's "
                "own, started from a folder it has moved out of, recreate them from app-dir (docker compose up -d "
                "--force-recreate SERVICE there) so that compose records it",
            )

    def suggested_project(self) -> str:
        """A project name from app-dir's last two folders: /srv/staging/app gives staging-app."""
        parent, name = posixpath.split(self.cfg.app_dir.rstrip("/"))
        return project_from_dir(f"{posixpath.basename(parent)}-{name}")

    async def of(self, stack: Stack, refresh: bool = False) -> list[Container]:
        """The stack's containers, under any of its projects."""
        return self.layout.members(await self.containers(refresh), stack)

    async def base_up(self) -> str:
        """Start the base services that do not run; never touch one that does, whatever project made it
        (the previous release ran the base as <name>-base). On a first deploy nginx waits for the switch."""
        stack = self.compose("base")
        running = [c for c in await self.of("base") if c.running]
        adopted = sorted({c.service for c in running if c.project != stack.project})
        if adopted:
            self.info(f"base services already running under another project, left as they are: {', '.join(adopted)}")
        up = {c.service for c in running}
        missing = [s for s in self.files["base"].services if s not in up and s != self.nginx_service]
        if missing:
            await checked(
                self.host,
                stack.up_base(missing),
                "base compose up",
                f"check {self.cfg.base_compose_file} with 'docker compose config'",
                COMPOSE_SECONDS,
            )
        return f"started {', '.join(missing)}" if missing else "every service already runs"

    def default_image(self, color: Color) -> Callable[[str], str]:
        """The name compose gives the image it builds for a service of `color` that names none."""
        project, sep = self.compose(color).project, "-" if self.variant == "v2" else "_"
        return lambda service: f"{project}{sep}{service}"

    def built_images(self, color: Color) -> dict[str, str]:
        """The image a build of each of `color`'s services tags: its image:, or the name compose gives it."""
        name = self.default_image(color)
        return {service: image or name(service) for service, image in self.files[color].built.items()}

    async def build(self, color: Color, *, here: bool = True) -> None:
        """Replace whatever `color` has with a fresh build of the checked-out commit: its services'
        builds in parallel (v1: `build --parallel`; v2, which builds a service that depends_on another
        after it: a `build <service>` each, all at once), then `up --no-build`. A failed build is named
        by its service. The images the build moves its tags from are noted as replaced. Not `here`
        (build: runner): the images are already on the host, and only the `up` runs."""
        await self.remove(color, STOP_GRACE_MIN_SECONDS)
        if (names := list(self.built_images(color).values())) and here:
            tagged = await self.host.run(commands.image_ids(names), check=False)
            self.replaced.update(tagged.stdout.split())
        stack = self.compose(color)
        fix = f"fix the build or {self.cfg.compose_file_for(color)}; the compose output is above"
        at_once = asyncio.Semaphore(PARALLEL_BUILDS)
        services = list(self.files[color].built) if here else []
        # v1 builds in parallel in one process (each docker-compose costs a Python start); v2 builds
        # where one service depends_on another one after the other, so each gets a build of its own
        batches = [services] if self.variant == "v1" else [[service] for service in services]

        async def build(batch: list[str]) -> tuple[list[str], Result]:
            async with at_once:
                return batch, await self.host.run(stack.build(batch), check=False, timeout=COMPOSE_SECONDS)

        for batch, result in await asyncio.gather(*(build(batch) for batch in batches if batch)):
            if not result.ok:
                output = "\n".join(part.rstrip() for part in (result.stdout, result.stderr) if part.strip())
                named = re.search(r"Service '([^']+)' failed to build", output)
                service = named.group(1) if named else ", ".join(batch)
                raise DeployError(
                    f"the build of {service} failed: {last_line(result.stderr or result.stdout)}",
                    fix,
                    output,
                    f"building {service}",
                )
        await checked(self.host, stack.up_color(), f"starting {color}", fix, COMPOSE_SECONDS)

    async def remove(self, color: Color, stop_timeout: int, refresh: bool = False) -> None:
        """Stop and remove `color`'s containers, whatever project made them; their images are noted
        as replaced (see `prune`)."""
        found = await self.of(color, refresh)
        if not found:
            return
        images = await self.host.run(commands.container_images([c.id for c in found]), check=False)
        self.replaced.update(line.split()[1] for line in images.stdout.splitlines() if len(line.split()) == 2)
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
            stop_timeout + COMMAND_SECONDS,  # the grace, and then some: never cut by its own limit
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

    @staticmethod
    def stopped(found: list[Container]) -> list[str]:
        """The ids of the containers of `found` that do not run."""
        return [c.id for c in found if not c.running]

    async def start(self, stopped: list[str]) -> None:
        """Start a kept color's stopped containers (`stopped`: their ids)."""
        if stopped:
            await checked(
                self.host,
                commands.start_containers(stopped),
                "starting the kept containers",
                "read 'docker start' output above; deploy the commit again to rebuild the color",
                COMPOSE_SECONDS,
            )

    async def stop_ids(self, ids: list[str]) -> None:
        """Stop containers a failed rollback started (they were stopped before it)."""
        if ids:
            await self.host.run(
                commands.stop_containers(ids, STOP_GRACE_MIN_SECONDS),
                check=False,
                timeout=STOP_GRACE_MIN_SECONDS + COMMAND_SECONDS,
            )

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
            COMPOSE_SECONDS,
        )

    async def stop_nginx(self) -> bool:
        """A first deploy's nginx, stopped again; whether it stopped (if not, it still serves)."""
        stop = self.compose("base").stop([self.nginx_service])
        return (await self.host.run(stop, check=False, timeout=COMPOSE_SECONDS)).ok


def by_stack(texts: Mapping[str, str | None], names: Mapping[Stack, str]) -> dict[Stack, str | None]:
    """Texts keyed by path, as keyed by the stack whose file each is (None: no file)."""
    return {stack: texts.get(path) if path else None for stack, path in names.items()}


def read_files(
    texts: Mapping[Stack, str | None], names: Mapping[Stack, str], *, strict: bool = True
) -> dict[Stack, ComposeFile]:
    """Parse the stacks' compose files (None: the stack has no file). A file that does not parse is
    a DeployError naming it, or, not `strict` (an earlier commit's file), one with no services."""
    out: dict[Stack, ComposeFile] = {}
    for stack in STACKS:
        text = texts.get(stack)
        try:
            out[stack] = ComposeFile.parse(text) if text is not None else ComposeFile()
        except ComposeFileError as err:
            if strict:
                raise DeployError(f"{names[stack]} cannot be read: {err}", f"fix {names[stack]}") from None
            out[stack] = ComposeFile()
    return out
