"""Hosts that really are separate machines, as Kamal's integration suite has them: each a container
with its own dockerd (on its own volume), filesystem and sshd, made from lab/images (the host image
of build.sh). `--privileged` is refused on this machine; the capabilities below are what an inner
dockerd needs instead. Each host publishes its sshd and its nginx (port 8080 inside) on 127.0.0.1
only; a bastion is a host without dockerd; a load balancer (nginx on 127.0.0.1) spreads requests
over the hosts' nginx.

The fleet's app is one origin (on this machine, mounted read-only into every host) cloned on each
host, on the project's bridge network with the seed's ports, which each host has to itself."""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import docker

from bluegreen.config import INPUTS
from bluegreen.shipping import read_saved
from lab import lab

HOST_IMAGE = "bluegreen-lab/host:bookworm"
NETWORK = "bluegreen-lab-hosts"
PREFIX = "bluegreen-lab-host-"
PLUGIN_INSIDE = "/opt/lab/docker-compose"  # the Compose v2 plugin, mounted read-only
PLUGIN_LINK = f"/home/{lab.DEPLOY_USER}/.docker/cli-plugins/docker-compose"
IMAGE_CACHE = Path("/var/cache/bluegreen-lab/images")  # images saved for the hosts' dockerds, by id
WEB_PORT = 8080  # each host's nginx, inside the host
PORTS = {  # the seed's ports: every host has them to itself
    "PUBLIC_PORT": WEB_PORT,
    "DB_PORT": 5432,
    "BLUE_BACKEND": 8001,
    "BLUE_FRONTEND": 3001,
    "GREEN_BACKEND": 8002,
    "GREEN_FRONTEND": 3002,
}
CAPABILITIES = [
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


@dataclass
class Host:
    name: str  # its name on the lab network (and its hostname)
    container: str
    ssh_port: int  # on 127.0.0.1; 0 when its sshd is not published (reached only through a bastion)
    web_port: int  # its nginx (8080 inside) on 127.0.0.1
    host_key: str  # "ssh-ed25519 AAAA..."

    def exec(self, *argv: str, user: str = "", input: str | None = None) -> str:
        who = ["--user", user, "--env", f"HOME=/home/{user}"] if user else []
        return lab.sh(
            "docker",
            "exec",
            *(["--interactive"] if input is not None else []),
            *who,
            self.container,
            *argv,
            input=input,
        )

    def deploy(self, *argv: str, cwd: str = "") -> str:
        """A command as the deploy user (in `cwd`, if given)."""
        line = shlex.join(argv)
        return self.exec("sh", "-c", f"cd {shlex.quote(cwd)} && {line}" if cwd else line, user=lab.DEPLOY_USER)

    def known_hosts_line(self) -> str:
        """Its key as the runner pins it: by the published port, or by name behind a bastion."""
        where = f"[127.0.0.1]:{self.ssh_port}" if self.ssh_port else self.name
        return f"{where} {self.host_key}"

    @property
    def address(self) -> str:
        """The `host` input for it: 127.0.0.1:port, or its name on the lab network behind a bastion."""
        return f"127.0.0.1:{self.ssh_port}" if self.ssh_port else self.name

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def use_compose(self, variant: str) -> None:
        """Compose v2 for the deploy user (the plugin linked in), or only Debian's v1."""
        self.deploy("rm", "-f", PLUGIN_LINK)
        if variant == "v2":
            self.deploy("mkdir", "-p", str(Path(PLUGIN_LINK).parent))
            self.deploy("ln", "-s", PLUGIN_INSIDE, PLUGIN_LINK)

    def compose(self) -> tuple[str, ...]:
        linked = subprocess.run(["docker", "exec", self.container, "test", "-e", PLUGIN_LINK], check=False)
        return ("docker", "compose") if linked.returncode == 0 else ("docker-compose",)

    def reset(self) -> None:
        """Nothing of an earlier test left: no container, network or volume, no app."""
        self.exec(
            "sh",
            "-c",
            "docker ps -aq | xargs -r docker rm -f >/dev/null; docker network prune -f >/dev/null; "
            "docker volume prune -f >/dev/null; rm -rf /home/deploy/apps/*",
        )

    def stop(self) -> None:
        lab.sh("docker", "rm", "--force", "--volumes", self.container)
        with contextlib.suppress(RuntimeError):
            lab.sh("docker", "volume", "rm", f"{self.container}-docker")


def _published(container: str, port: int) -> int:
    return int(lab.sh("docker", "port", container, f"{port}/tcp").splitlines()[0].rsplit(":", 1)[1])


def load_images(host: Host, *images: str) -> None:
    """Give the host's dockerd images of this machine's (no registry can give them): each saved
    once per image id, then loaded."""
    for image in images:
        image_id = lab.sh("docker", "image", "inspect", "--format", "{{.Id}}", image).strip().split(":")[-1]
        tar = IMAGE_CACHE / f"{image_id[:16]}.tar"
        with lab.lab_lock("images"):  # one worker saves it, the others wait and load it
            if not tar.exists():
                IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
                lab.sh("docker", "save", "--output", f"{tar}.part", image)
                Path(f"{tar}.part").rename(tar)
        with tar.open("rb") as stream:
            subprocess.run(
                ["docker", "exec", "--interactive", host.container, "docker", "load"],
                stdin=stream,
                check=True,
                capture_output=True,
            )


def start_host(name: str, authorized_keys: str, *, dockerd: bool = True, publish_ssh: bool = True) -> Host:
    """A machine of its own on the lab network, ready once its dockerd and sshd run."""
    with contextlib.suppress(RuntimeError):
        lab.sh("docker", "network", "create", NETWORK)
    container = f"{PREFIX}{name}"
    with contextlib.suppress(RuntimeError):
        lab.sh("docker", "rm", "--force", "--volumes", container)
    argv = ["docker", "run", "--detach", "--name", container, "--hostname", name]
    argv += ["--network", NETWORK, "--network-alias", name, "--env", f"LAB_AUTHORIZED_KEYS={authorized_keys}"]
    argv += ["--publish", f"127.0.0.1::{WEB_PORT}"] + (["--publish", "127.0.0.1::22"] if publish_ssh else [])
    if dockerd:
        argv += [*CAPABILITIES, "-v", f"{container}-docker:/var/lib/docker"]
        argv += ["-v", f"{lab.LAB_ROOT}:{lab.LAB_ROOT}:ro", "-v", f"{lab.COMPOSE_V2_PLUGIN}:{PLUGIN_INSIDE}:ro"]
    else:
        argv += ["--env", "LAB_DOCKERD=0"]
    lab.LAB_ROOT.mkdir(parents=True, exist_ok=True)
    lab.sh(*argv, HOST_IMAGE)
    lab.wait_for(
        lambda: (
            subprocess.run(["docker", "exec", container, "test", "-e", "/run/lab-ready"], check=False).returncode == 0
        ),
        f"lab host {name} to start",
        90,
    )
    key = lab.sh("docker", "exec", container, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()
    host = Host(
        name,
        container,
        _published(container, 22) if publish_ssh else 0,
        _published(container, WEB_PORT),
        f"{key[0]} {key[1]}",
    )
    if dockerd:
        load_images(host, lab.LAB_IMAGE)
    if publish_ssh:
        lab.wait_port(host.ssh_port)
    return host


# -- the app on every host ------------------------------------------------------------------------


def start_bench_hosts() -> tuple[list[Host], str]:
    """The benchmarks' three hosts (bench-1..3), and the key that logs in to them."""
    lab.build_action_image()
    root = lab.LAB_ROOT / "hosts"
    root.mkdir(parents=True, exist_ok=True)
    key, public = lab.client_key(root, "id_bench")
    return [start_host(f"bench-{n}", public) for n in (1, 2, 3)], key


def fresh_fleet_app(targets: list[Host], compose: str = "v2", also_reset: Sequence[Host] = ()) -> lab.LabApp:
    """A new fleet app, green live on `targets` (each reset first and given `compose`, as are
    `also_reset`, so no earlier test's app is left on them)."""
    for host in [*targets, *(h for h in also_reset if h not in targets)]:
        host.reset()
        host.use_compose(compose)
    app = make_fleet_app()
    for host in targets:
        install(host, app)
    return app


def make_fleet_app() -> lab.LabApp:
    """The bridge-network app with the seed's ports, its nginx published on the host's interfaces
    (so the host's published port reaches it); not cloned on this machine."""
    app = lab.make_app(variant="bridge", ports=dict(PORTS), clone=False)
    base = app.stack_file("base")
    text = (app.work / base).read_text().replace(f'"127.0.0.1:{WEB_PORT}:80"', f'"{WEB_PORT}:80"')
    app.commit("nginx on the host's interfaces", {base: text})
    return app


def install(host: Host, app: lab.LabApp, color: str = "green", dotenv: str = "") -> None:
    """Clone the app on the host and bring it to 'color live' as the seed's script does; `dotenv`
    is the host's own untracked .env (what makes this host's copy differ)."""
    where = str(app.app_dir)
    host.deploy("git", "clone", "--quiet", str(app.origin), where)
    if dotenv:
        host.exec("sh", "-c", f"cat > {shlex.quote(where)}/.env", user=lab.DEPLOY_USER, input=dotenv)
    host.deploy("cp", f"nginx/upstream.{color}.conf", "nginx/conf.d/upstream.conf", cwd=where)
    host.deploy("sh", "-c", f"echo {color} > .active_env", cwd=where)
    compose = [*host.compose(), "--project-name", app.name]
    host.deploy(*compose, "-f", app.stack_file("base"), "up", "-d", "db", cwd=where)
    host.deploy(*compose, "-f", app.stack_file(color), "up", "-d", "--build", cwd=where)
    host.deploy(*compose, "-f", app.stack_file("base"), "up", "-d", cwd=where)
    lab.wait_for(lambda: _answers(host.url("/api/v1/")), f"{host.name} to serve {color}", 60)


def set_dotenv(host: Host, app: lab.LabApp, dotenv: str) -> None:
    host.exec("sh", "-c", f"cat > {shlex.quote(str(app.app_dir))}/.env", user=lab.DEPLOY_USER, input=dotenv)


def _answers(url: str) -> bool:
    try:
        with lab.urllib_open(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def served(host: Host, path: str = "/api/v1/") -> dict[str, str]:
    with lab.urllib_open(host.url(path)) as response:
        data: dict[str, str] = json.loads(response.read())
        return data


def fleet_inputs(hosts: list[Host], app: lab.LabApp, sha: str, key: str, /, **overrides: str) -> dict[str, str]:
    """The action's inputs for `hosts`: one key and one known_hosts text for all of them."""
    health = {
        color: "\n".join(
            f"http://127.0.0.1:{PORTS[f'{color.upper()}_{role}']}{path}"
            for role, path in (("BACKEND", "/api/v1/"), ("FRONTEND", "/"))
        )
        for color in ("blue", "green")
    }
    inputs = {spec.name: spec.default for spec in INPUTS}
    inputs.update(
        {
            "host": "\n".join(h.address for h in hosts),
            "username": lab.DEPLOY_USER,
            "key": key,
            "known-hosts": "\n".join(h.known_hosts_line() for h in hosts),
            "app-dir": str(app.app_dir),
            **app.file_inputs(),
            "ref": sha,
            "project-name": app.name,
            "blue-health-urls": health["blue"],
            "green-health-urls": health["green"],
            "health-timeout": "60",
            "health-interval": "1",
            "nginx-container": app.nginx_container,
            "host-url": f"http://127.0.0.1:{WEB_PORT}/api/v1/",
        }
    )
    inputs.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return inputs


# -- the load balancer in front of the hosts ------------------------------------------------------


@dataclass
class LoadBalancer:
    container: str
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        lab.sh("docker", "rm", "--force", self.container)

    def log(self) -> str:
        return lab.sh("docker", "logs", self.container)


LB_PORT, LB_CONTROL_PORT = 8080, 8081  # the keep-alive load balancer's, on the lab network (as `lb`)
# What each host runs as lb-detach-command / lb-attach-command: the load balancer's control API,
# naming the host as the load balancer knows it (its name on the lab network).
LB_DETACH = f"sh -c 'curl -fsS -X POST http://lb:{LB_CONTROL_PORT}/detach/$(hostname)'"
LB_ATTACH = f"sh -c 'curl -fsS -X POST http://lb:{LB_CONTROL_PORT}/attach/$(hostname)'"


def start_keepalive_load_balancer(hosts: list[Host], latency_ms: int = 20) -> LoadBalancer:
    """A load balancer that keeps connections to the hosts open (lab/lb.py), on the lab network as
    `lb`, its port published on 127.0.0.1; it never retries a failed request on another host, and
    reaches each host `latency_ms` away, each way, as across a real network. Its control API takes
    a host out and puts it back (LB_DETACH, LB_ATTACH)."""
    container = f"bluegreen-lab-lb-{secrets.token_hex(3)}"
    script = Path(__file__).parent / "lb.py"
    servers = [f"{h.name}={h.name}:{WEB_PORT}" for h in hosts]
    lab.sh(
        "docker", "run", "--detach", "--name", container, "--network", NETWORK, "--network-alias", "lb",
        "--publish", f"127.0.0.1::{LB_PORT}", "-v", f"{script}:/lb.py:ro", lab.LAB_IMAGE,
        "python3", "-u", "/lb.py", str(LB_PORT), str(LB_CONTROL_PORT), str(latency_ms), *servers,
    )  # fmt: skip
    balancer = LoadBalancer(container, _published(container, LB_PORT))
    lab.wait_for(lambda: _answers(balancer.url("/api/v1/")), "the keep-alive load balancer to serve", 30)
    return balancer


def start_load_balancer(hosts: list[Host]) -> LoadBalancer:
    """nginx on 127.0.0.1, round robin over the hosts' nginx. It never retries a failed request on
    another host (proxy_next_upstream off): every failure of a host reaches the client."""
    port = lab.free_port()
    servers = "".join(f"server 127.0.0.1:{h.web_port};" for h in hosts)
    config = (
        "worker_processes 1; pid /tmp/lb.pid; error_log /dev/stderr warn; events {} "
        f"http {{ access_log off; upstream fleet {{ {servers} }} server {{ listen 127.0.0.1:{port}; "
        "location / { proxy_pass http://fleet; proxy_next_upstream off; proxy_http_version 1.1; "
        'proxy_set_header Connection ""; } } }'
    )
    container = f"bluegreen-lab-lb-{secrets.token_hex(3)}"
    lab.sh(
        "docker", "run", "--detach", "--name", container, "--network", "host", lab.LAB_IMAGE,
        "sh", "-c", 'printf "%s" "$0" > /tmp/lb.conf && exec nginx -c /tmp/lb.conf -g "daemon off;"', config,
    )  # fmt: skip
    lab.wait_port(port)
    return LoadBalancer(container, port)


# -- images the runner built (build: runner), for the e2e tests and the benchmark -----------------


def runner_image(app: lab.LabApp, service: str, sha: str) -> str:
    """The image id the runner (this machine) built for `service` at `sha`: tagged by commit."""
    tag = f"bluegreen/{app.name}-{service}:{sha[:12]}".lower()
    return lab.sh("docker", "image", "inspect", "--format", "{{.Id}}", tag).strip()


def forget_runner_images(app: lab.LabApp) -> None:
    """The images the action built on this machine (the runner) for `app`: removed with it."""
    found = lab.sh("docker", "images", "--filter", f"reference=bluegreen/{app.name}-*", "-q").split()
    if found:
        lab.sh("docker", "image", "rm", "--force", *dict.fromkeys(found))


def image_id(host: Host, image: str) -> str:
    return host.exec("docker", "image", "inspect", "--format", "{{.Id}}", image).strip()


def journal_images(host: Host, app: lab.LabApp) -> dict[str, dict[str, object]]:
    """The images the host's journal's last entry records."""
    text = host.deploy("cat", f"{app.app_dir}/.bluegreen/journal.jsonl")
    images: dict[str, dict[str, object]] = json.loads(text.strip().splitlines()[-1])["images"]
    return images


@dataclass
class LayerChange:
    changed: int  # bytes of the new image's layers the old one lacks (uncompressed, as docker save gives them)
    overhead: int  # the new image's manifest and config, as the action serves them
    size: int  # all of the new image's layers


def layer_change(old: str, new: str) -> LayerChange:
    """What a host that has `old` lacks of `new`, both images of this machine's docker."""
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as folder:
        before = read_saved(iter(client.api.get_image(old)), Path(folder) / "old")
        after = read_saved(iter(client.api.get_image(new)), Path(folder) / "new")
    layers = json.loads(after.manifest)["layers"]
    changed = sum(layer["size"] for layer in layers if layer["digest"] not in before.blobs)
    return LayerChange(changed, len(after.manifest) + after.blobs[after.image_id].size, after.size)
