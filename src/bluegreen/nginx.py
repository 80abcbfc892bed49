"""The nginx switch: find what nginx serves, write the upstream in place, test, reload, confirm, drain."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import commands
from .config import COLORS, RELOAD_CONFIRM_SECONDS, Color
from .remote import Host, last_line

POLL = 0.05
SECTION = re.compile(r"^# configuration file (.+):$", re.MULTILINE)  # a file in `nginx -T`
_PID = re.compile(r"^\s*pid\s+([^;#]+);", re.MULTILINE)
DEFAULT_PID_PATH = "/run/nginx.pid"
_SERVER = re.compile(r"(?:^|[;{}\s])server\s+([^\s;{}]+)")


class NginxError(RuntimeError):
    """nginx is missing, refused a config or did not take a reload; carries the fix."""

    def __init__(self, message: str, fix: str) -> None:
        self.fix = fix
        super().__init__(message)


class ConfigRejected(NginxError):
    """nginx -t failed: nothing was reloaded."""


def normalize(text: str) -> str:
    """Config text without comments and with whitespace folded, for comparing files."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return " ".join(" ".join(line.split()) for line in lines if line)


def config_sections(dump: str) -> list[str]:
    """The files of an `nginx -T` dump, each as normalized text."""
    parts = SECTION.split(dump)
    return [normalize(parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def servers(text: str) -> set[str]:
    """The `server` addresses of upstream blocks in a config text."""
    return set(_SERVER.findall(normalize(text)))


def server_targets(text: str) -> list[tuple[str, str]]:
    """The (host, port) each `server` of the upstream text connects to, in a stable order."""
    return [server_target(address) for address in sorted(servers(text))]


def server_target(address: str) -> tuple[str, str]:
    """The (host, port) a `server` address connects to (port 80 if none), or ("unix", path) for a socket."""
    if address.startswith("unix:"):
        return ("unix", address[len("unix:") :])
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        return (host, port.lstrip(":") or "80")
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        return (host, port)
    return (address, "80")


def show_target(target: tuple[str, str]) -> str:
    host, port = target
    if host == "unix":
        return f"unix:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def live_color(dump: str, upstreams: Mapping[Color, str]) -> Color | None:
    """The color whose upstream file nginx has loaded: by whole-file match, else by its server addresses."""
    sections = set(config_sections(dump))
    by_file = [c for c in COLORS if upstreams[c].strip() and normalize(upstreams[c]) in sections]
    if len(by_file) == 1:
        return by_file[0]
    loaded: set[str] = set().union(*(servers(s) for s in sections))
    by_servers = [c for c in COLORS if servers(upstreams[c]) and servers(upstreams[c]) <= loaded]
    if len(by_servers) == 1:
        return by_servers[0]
    return None


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    title: str


def parse_processes(text: str) -> list[Process]:
    out = []
    for line in text.splitlines():
        fields = line.split(" ", 2)
        if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit():
            out.append(Process(int(fields[0]), int(fields[1]), fields[2].strip()))
    return out


def worker_pids(processes: list[Process], master: int | None = None) -> set[int]:
    """Workers of `master`, or of every master (in a container, where there is only ours)."""
    masters = {master} if master else {p.pid for p in processes if p.title.startswith("nginx: master process")}
    return {p.pid for p in processes if p.title.startswith("nginx: worker process") and p.ppid in masters}


def took_reload(processes: list[Process], before: set[int], master: int | None = None) -> bool:
    """A reload has taken when a new worker accepts connections and no worker from `before` still does.
    A worker that got the reload's quit signal says "is shutting down" as it closes its listening
    sockets; until then it may accept a new connection and serve it with the old config."""
    workers = worker_pids(processes, master)
    accepting = {p.pid for p in processes if p.pid in workers and "shutting down" not in p.title}
    return bool(accepting - before) and not accepting & before


def pid_path(dump: str) -> str:
    """Where nginx writes its master's pid: the `pid` directive, else Debian's and Ubuntu's default."""
    match = _PID.search(dump)
    return match.group(1).strip().strip("\"'") if match else DEFAULT_PID_PATH


class Nginx:
    def __init__(self, host: Host, container: str, target: str, sudo: bool = False) -> None:
        self.host = host
        self.container = container
        self.target = target
        self.sudo = sudo  # host nginx with a root-owned master: -t, -T and -s reload through sudo -n
        self._master: int | None = None
        self.reloaded_at = 0.0  # when the last reload signal was sent (monotonic)

    async def is_running(self) -> bool:
        """Whether the nginx container runs (always true for nginx on the host: see check_available)."""
        if not self.container:
            return True
        state = await self.host.run(commands.container_exists(self.container), check=False)
        return state.stdout.strip() == "true"

    async def check_available(self) -> None:
        if self.container:
            if not await self.is_running():
                raise NginxError(
                    f"nginx container '{self.container}' is not running on the host",
                    "set nginx-container to the name 'docker ps' shows for nginx, or start it",
                )
        elif self.sudo:
            probe = await self.host.run(commands.nginx("", "-t", sudo=True), check=False)
            if "password is required" in probe.stderr or "not allowed" in probe.stderr or probe.status == 127:
                raise NginxError(
                    f"the deploy user may not run 'sudo -n nginx -t' on the host: {last_line(probe.stderr)}",
                    "add the sudoers line from docs/host-layout.md (nginx -t, nginx -T and nginx -s reload, NOPASSWD)",
                )
        else:
            probe = await self.host.run(commands.nginx("", "-v"), check=False)
            if not probe.ok:
                raise NginxError(
                    "nginx is not installed on the host (or not on the deploy user's PATH)",
                    "set nginx-container if nginx runs in a container, or install nginx",
                )

    async def unreachable(self, content: str) -> list[str] | None:
        """The `server` addresses of `content` that nginx could not connect to now, tried from its own
        network view (inside its container: its network namespace and DNS); None if the image has no
        tool to try with (bash, nc or perl)."""
        targets = server_targets(content)
        if not targets:
            return []
        result = await self.host.run(commands.probe_servers(self.container, targets), check=False, timeout=30)
        lines = [line.split(" ", 2) for line in result.stdout.splitlines()]
        if not result.ok or ["no-tool"] in lines:
            return None
        failed = {(line[1], line[2]) for line in lines if len(line) == 3 and line[0] == "unreachable"}
        return [show_target(target) for target in targets if target in failed]

    async def dump(self) -> str:
        result = await self.host.run(commands.nginx(self.container, "-T", sudo=self.sudo), check=False)
        if not result.ok:
            raise NginxError(
                f"nginx -T failed: {last_line(result.stderr)}",
                "fix nginx's configuration on the host: nginx -t shows the error",
            )
        return result.stdout

    async def master(self) -> int | None:
        """On the host, other nginx masters may run (in containers, too): ours is the one in the
        pid file. In a container, its own PID namespace holds only ours."""
        if self.container:
            return None
        if self._master is None:
            pid = await self.host.run(commands.read_file(pid_path(await self.dump())), check=False)
            if not pid.stdout.strip().isdigit():
                raise NginxError(
                    "cannot read the nginx master's pid file on the host",
                    "run nginx as a service with its pid file readable by the deploy user, or set nginx-container",
                )
            self._master = int(pid.stdout.strip())
        return self._master

    async def processes(self) -> tuple[list[Process], set[int]]:
        result = await self.host.run(commands.nginx_processes(self.container))
        processes = parse_processes(result.stdout)
        return processes, worker_pids(processes, await self.master())

    async def workers(self) -> set[int]:
        return (await self.processes())[1]

    async def shutting_down(self) -> set[int]:
        """Workers of an older generation that still finish requests."""
        processes, workers = await self.processes()
        return {p.pid for p in processes if p.pid in workers and "shutting down" in p.title}

    async def read_target(self) -> str:
        result = await self.host.run(commands.read_file(self.target), check=False)
        return result.stdout if result.ok else ""

    async def write_target(self, content: str) -> None:
        # On the host, find the master (its pid file is named by `nginx -T`) while the config on disk is
        # still one nginx accepts: after this write, `nginx -T` may fail until the file is put back.
        await self.master()
        await self.host.run(commands.write_file(self.target), input=content)

    async def confirm(self, content: str, before: set[int], start: float) -> float:
        """Wait for a worker generation newer than `before` and for the loaded config to show `content`;
        returns the seconds since `start`."""
        wanted = normalize(content)
        while True:
            (processes, _), dump = await asyncio.gather(self.processes(), self.dump())
            if took_reload(processes, before, await self.master()) and wanted in config_sections(dump):
                return time.monotonic() - start
            if time.monotonic() - start > RELOAD_CONFIRM_SECONDS:
                raise NginxError(
                    f"nginx did not take the reload within {RELOAD_CONFIRM_SECONDS:.0f}s (no new worker generation "
                    "with the new upstream)",
                    "read nginx's error log on the host",
                )
            await asyncio.sleep(POLL)

    async def wait_loaded(self, content: str) -> None:
        """After nginx was started: wait until it runs with `content` loaded."""
        start = time.monotonic()
        wanted = normalize(content)
        while True:
            dump = await self.host.run(commands.nginx(self.container, "-T"), check=False)
            if dump.ok and wanted in config_sections(dump.stdout) and await self.workers():
                return
            if time.monotonic() - start > RELOAD_CONFIRM_SECONDS:
                raise NginxError(
                    f"nginx did not start with the new upstream within {RELOAD_CONFIRM_SECONDS:.0f}s: "
                    f"{last_line(dump.stderr)}",
                    "read the nginx container's log (docker logs) on the host",
                )
            await asyncio.sleep(POLL)

    async def test_and_reload(
        self, content: str, on_reload: Callable[[], None] = lambda: None
    ) -> tuple[set[int], float]:
        """nginx -t and, if it passes, a reload, in one exec (`on_reload` is called just before it);
        then confirm it. Returns the workers from before the reload and the reload time."""
        master = await self.master()
        start = time.monotonic()
        self.reloaded_at = start  # a reload that fails (or is cancelled) may still have taken effect
        on_reload()
        result = await self.host.run(commands.nginx_test_and_reload(self.container, self.sudo, master), check=False)
        if result.status == commands.TEST_FAILED:
            raise ConfigRejected(
                f"nginx -t rejected the config: {last_line(result.stderr)}",
                "fix the upstream file in the commit; the previous upstream was put back",
            )
        if not result.ok:
            raise NginxError(
                f"nginx -s reload failed: {last_line(result.stderr)}", "read nginx's error log on the host"
            )
        self.reloaded_at = time.monotonic()
        listing, after, dump = [*result.stdout.split(commands.RELOAD_MARK + "\n"), "", ""][:3]
        before = worker_pids(parse_processes(listing), master)
        if took_reload(parse_processes(after), before, master) and normalize(content) in config_sections(dump):
            return before, time.monotonic() - start  # confirmed by the same exec
        return before, await self.confirm(content, before, start)

    async def restore(self, previous: str) -> None:
        await self.write_target(previous)
        await self.test_and_reload(previous)

    async def drain(self, old_workers: set[int], timeout: float) -> tuple[float, int]:
        """Wait until no worker of the old generation remains. Returns (seconds, workers left)."""
        start = time.monotonic()
        while True:
            left = old_workers & await self.workers()
            elapsed = time.monotonic() - start
            if not left or elapsed >= timeout:
                return elapsed, len(left)
            await asyncio.sleep(POLL)
