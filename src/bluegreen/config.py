"""The one configuration schema: every input is declared, defaulted, validated and documented here.

`INPUTS` is the source of truth for `action.yml` and the README's input table (a test keeps them in
sync). `load_config` turns raw values (from `INPUT_*` variables) into a validated `Config`, or raises
`ConfigError` naming the input and the fix. Nothing here touches the network or the host.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import posixpath
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import asyncssh
import yaml

Color = Literal["blue", "green"]
COLORS: tuple[Color, Color] = ("blue", "green")
Command = Literal["deploy", "rollback", "promote", "abort"]
COMMANDS: tuple[Command, ...] = ("deploy", "rollback", "promote", "abort")
Strategy = Literal["switch", "canary"]
STRATEGIES: tuple[Strategy, ...] = ("switch", "canary")
KeepPrevious = Literal["stopped", "running", "none"]
KEEP_PREVIOUS: tuple[KeepPrevious, ...] = ("stopped", "running", "none")
HostChanges = Literal["refuse", "stash", "discard"]
HOST_CHANGES: tuple[HostChanges, ...] = ("refuse", "stash", "discard")
PullPolicy = Literal["always", "missing", "never"]
PULL_POLICIES: tuple[PullPolicy, ...] = ("always", "missing", "never")
BuildWhere = Literal["host", "runner"]
BUILD_WHERE: tuple[BuildWhere, ...] = ("host", "runner")
OnHostFailure = Literal["rollback-all", "stop"]
ON_HOST_FAILURE: tuple[OnHostFailure, ...] = ("rollback-all", "stop")


def label(host: str, port: int) -> str:
    """A host as the summary and the log name it: name, [v6] or name:port."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 22 else f"{shown}:{port}"


def batch_of(hosts: int, batch_size: tuple[int, bool]) -> int:
    """Hosts switched at once: batch-size as a count, or its percentage of the hosts rounded up."""
    size, percent = batch_size
    return max(1, min(hosts, math.ceil(hosts * size / 100) if percent else size))


def other_color(color: Color) -> Color:
    return "green" if color == "blue" else "blue"


@dataclass(frozen=True)
class InputSpec:
    name: str
    description: str
    default: str = ""
    required: bool = False


INPUTS: tuple[InputSpec, ...] = (
    InputSpec(
        "config",
        "A YAML settings file in the repository (relative to its root; check the repository out first), with the "
        "inputs' names as keys: a deploy and a rollback workflow share it. An input given in with: wins over it, "
        "unless left empty or at its default (GitHub passes defaults as if set): then the file's value counts. "
        "Secrets (key, passphrase, proxy-key, env), the run's own (ref, command, plan) and the switches that turn "
        "a check off (insecure-skip-host-key-check, public-url-insecure) never go in it.",
        "",
    ),
    InputSpec(
        "host",
        "SSH host of the server to deploy to: a name or IP address, with :port if it is not port's ([v6]:port). "
        "Several hosts, separated by commas, spaces or newlines, are one fleet: built and health-checked at once, "
        "switched batch-size at a time, all or nothing (on-host-failure).",
        required=True,
    ),
    InputSpec("port", "SSH port of every host that names none.", "22"),
    InputSpec("username", "SSH user; a member of the docker group, root is not needed.", required=True),
    InputSpec(
        "key", "Private key (OpenSSH, PEM or PKCS#8 text). Parsed in memory, never written to disk.", required=True
    ),
    InputSpec("passphrase", "Passphrase of an encrypted key.", ""),
    InputSpec(
        "known-hosts",
        "known_hosts lines for the host (e.g. the output of ssh-keyscan). This or fingerprint is required.",
        "",
    ),
    InputSpec(
        "fingerprint",
        "One or more SHA256:... host key fingerprints, newline or comma separated; a line as ssh-keygen -lf prints "
        "it is taken whole. This or known-hosts is required.",
        "",
    ),
    InputSpec(
        "insecure-skip-host-key-check",
        "Set to true to connect without checking the host key (a warning is shown on every run).",
        "false",
    ),
    InputSpec(
        "connect-timeout", "How long to wait for each SSH connection attempt. Times are seconds, or 30s, 10m, 1h.", "20"
    ),
    InputSpec(
        "connect-retries", "How many times to retry a failed SSH connection, with backoff (1 s, 2 s, 4 s ...).", "2"
    ),
    InputSpec(
        "proxy-jump",
        "Reach every host through this bastion, user@bastion[:port] (its TCP forwarding, as ssh -J does). Empty "
        "means hosts are reached directly.",
        "",
    ),
    InputSpec("proxy-key", "Private key for proxy-jump's user; empty means key.", ""),
    InputSpec(
        "proxy-known-hosts",
        "known_hosts lines pinning the bastion's host key; empty means known-hosts and fingerprint pin it too.",
        "",
    ),
    InputSpec("app-dir", "Absolute path of the app's git checkout on the host.", required=True),
    InputSpec(
        "ref",
        "Commit SHA, branch or tag to deploy: a branch means origin's branch as just fetched, a tag the tag, never "
        "the host clone's own branches. Empty means the run's GITHUB_SHA.",
        "",
    ),
    InputSpec(
        "command",
        "deploy: build ref into the idle color and switch to it. rollback: switch back to the previous color, at the "
        "commit it last ran, with no build. promote or abort: finish a canary that canary-steps left held: switch to "
        "its new color, or back to the old one and remove the new.",
        "deploy",
    ),
    InputSpec(
        "plan",
        "Set to true to show what a deploy would do instead of deploying: only its read-only steps run, and the "
        "summary shows the plan. Nothing on the host changes, not even the lock or the journal.",
        "false",
    ),
    InputSpec(
        "host-changes",
        "Tracked files changed by hand on the host (edited, deleted or staged) when a checkout would discard them: "
        "refuse (the deploy stops before anything changes, naming them), stash (git stash them under a message "
        "naming the run, shown in the summary and the journal) or discard.",
        "refuse",
    ),
    InputSpec(
        "project-name",
        "Compose project of the base and both colors: one project, so they share its network and volumes. Empty "
        "means app-dir's folder name, as compose names it.",
        "",
    ),
    InputSpec(
        "base-compose-file",
        "Compose file of shared infrastructure, relative to app-dir; brought up with --no-recreate, never restarted. "
        "Empty means none.",
        "docker-compose.base.yml",
    ),
    InputSpec(
        "compose-file",
        "Per-color compose file, relative to app-dir (a folder per stack works: deploy/{color}/compose.yml); {color} "
        "becomes blue or green. Relative paths in it resolve from its own folder, as docker compose -f resolves them.",
        "docker-compose.{color}.yml",
    ),
    InputSpec(
        "build",
        "Where the services with build: are built: host (on each host, from its checkout) or runner (once, with "
        "the runner's docker, from the workspace, which must be checked out at the deployed commit; each host then "
        "gets the image over the action's SSH connection, only the layers it lacks, and builds nothing).",
        "host",
    ),
    InputSpec(
        "pull",
        "Images of the colors' services that name an image: and have no build: (and that no build of the same "
        "color makes), got before the idle color starts: always (pulled, so a tag that moved, such as :latest, "
        "deploys as the new image), missing (only images the host lacks) or never. A failed pull stops the deploy "
        "before any container changes. With several hosts, each tag is resolved to one digest, which every host "
        "pulls. A rollback never pulls.",
        "always",
    ),
    InputSpec(
        "registry",
        "The registry to log in to for pull, host[:port] (ghcr.io, 123456789012.dkr.ecr.eu-west-1.amazonaws.com); "
        "empty means Docker Hub. Only used with registry-username.",
        "",
    ),
    InputSpec(
        "registry-username",
        "Log in to registry as this user for the pulls (with registry-password; for GHCR, github.actor). The login "
        "lives in a directory of its own (mode 0700) for one command and is removed after it: nothing is written to "
        "the deploy user's ~/.docker. Empty means no login.",
        "",
    ),
    InputSpec(
        "registry-password",
        "The password or token for registry-username (for GHCR, secrets.GITHUB_TOKEN with packages: read). It "
        "reaches the host on stdin, never on an argv, and is masked in logs.",
        "",
    ),
    InputSpec(
        "blue-health-urls",
        "URLs of the blue stack as seen from the host, newline or space separated; all must answer 2xx.",
        required=True,
    ),
    InputSpec(
        "green-health-urls",
        "URLs of the green stack as seen from the host, newline or space separated; all must answer 2xx.",
        required=True,
    ),
    InputSpec(
        "health-timeout", "How long to wait for every health URL to answer 2xx (a time, as connect-timeout).", "60"
    ),
    InputSpec(
        "health-interval",
        "Longest pause between health probes (a time); they start 0.25 s apart and back off to this.",
        "2",
    ),
    InputSpec(
        "upstream-file",
        "Per-color nginx upstream file, relative to app-dir; {color} becomes blue or green.",
        "nginx/upstream.{color}.conf",
    ),
    InputSpec(
        "upstream-target",
        "The upstream file nginx includes, relative to app-dir or absolute. Written in place (inode kept).",
        "nginx/conf.d/upstream.conf",
    ),
    InputSpec(
        "nginx-container",
        "Name of the nginx container; nginx commands then run through docker exec. Empty means nginx runs on the host.",
        "",
    ),
    InputSpec(
        "nginx-sudo",
        "nginx on the host only: run nginx -t, nginx -T and nginx -s reload as sudo -n nginx ... (a root-owned "
        "master); nothing else runs as root.",
        "false",
    ),
    InputSpec(
        "public-url",
        "If set, the site as users reach it, fetched from the runner: probed after the switch (with several "
        "hosts, once the whole fleet has switched); an answer public-url-status does not accept switches back. "
        "Its TLS certificate is verified.",
        "",
    ),
    InputSpec(
        "public-url-status",
        "The answers of public-url and host-url that mean up: status classes (2xx) or codes (200 302), space or "
        "comma separated. A redirect is never followed.",
        "2xx 3xx",
    ),
    InputSpec(
        "public-url-insecure",
        "Set to true to fetch public-url without verifying its TLS certificate (a warning is shown on every run).",
        "false",
    ),
    InputSpec(
        "host-url",
        "If set, the site as seen on each host through its own nginx, e.g. http://127.0.0.1:8080/api/v1/, fetched "
        "through the host's SSH connection: probed after that host's switch (an answer public-url-status does "
        "not accept switches it back) and again after each later batch.",
        "",
    ),
    InputSpec(
        "batch-size",
        "With several hosts: how many switch at once, a count or a percentage of the hosts (50%). Every host is "
        "built and health-checked before the first batch switches.",
        "1",
    ),
    InputSpec(
        "on-host-failure",
        "With several hosts, when one fails before the whole fleet has switched: rollback-all (every switched host "
        "goes back to the color it served, so the fleet serves the old version) or stop (switched hosts stay "
        "switched, the rest are left as they were).",
        "rollback-all",
    ),
    InputSpec(
        "pre-switch-command",
        "Run in the new color after its health check and before the switch, e.g. backend_{color} python manage.py "
        "migrate --noinput: the first word is a service of the color's compose file ({color} becomes the color), "
        "the rest the command, split like a shell line but run as argv through compose exec, never by a shell. A "
        "failure restores like a failed health check. Empty means none.",
        "",
    ),
    InputSpec("pre-switch-timeout", "How long pre-switch-command may run before the deploy fails (a time).", "600"),
    InputSpec(
        "lb-detach-command",
        "Run on the host just before its nginx reloads (a switch, or a switch back), to take the host out of a "
        "load balancer that keeps connections open: it must return once no request reaches the host through the "
        "load balancer any more. Split like a shell line, run as argv (write sh -c '...' for a shell), with "
        "BLUEGREEN_HOST (the host as the summary names it: name, or name:port) and BLUEGREEN_COLOR (the color nginx "
        "goes to) in its environment. "
        "Empty means none.",
        "",
    ),
    InputSpec(
        "lb-attach-command",
        "Run on the host once its switch (or switch back) is confirmed, to put it back into the load balancer; "
        "like lb-detach-command. Empty means none.",
        "",
    ),
    InputSpec("lb-timeout", "How long lb-detach-command and lb-attach-command may each run (a time).", "300"),
    InputSpec(
        "env",
        "The app's environment as dotenv lines (NAME=value; a value may be quoted, and quoted may span lines), "
        "usually from a secret. The color being built gets them for ${NAME} in its compose file and as "
        ".bluegreen/<color>.env (mode 0600) for env_file:. Every value of 6 characters or more is masked in logs; "
        "none reaches argv. Empty means none.",
        "",
    ),
    InputSpec(
        "vars",
        "Plain values for the app, as env's lines and delivered as env's (a name set in one of them only), but "
        "never masked: for settings that are no secret (DEBUG=false, a hostname).",
        "",
    ),
    InputSpec(
        "drain-timeout",
        "How long old nginx workers may finish in-flight requests before the old color is stopped (a time).",
        "30",
    ),
    InputSpec(
        "keep-previous",
        "What happens to the old color after a switch and drain: stopped (kept, so a rollback starts it in seconds), "
        "running (a rollback is a pure switch) or none (removed).",
        "stopped",
    ),
    InputSpec(
        "prune",
        "After a successful deploy or rollback, remove the images this run replaced (never one a container "
        "uses, never another project's) and build cache unused for a week: true or false.",
        "true",
    ),
    InputSpec("lock-timeout", "How long to wait for another deploy of the same app-dir to finish (a time).", "600"),
    InputSpec(
        "strategy",
        "switch: all requests move to the healthy new color at once. canary: nginx first sends it canary-steps shares "
        "of the requests, each judged by nginx's own counts of 5xx, then all of them; a bad step switches back.",
        "switch",
    ),
    InputSpec(
        "canary-steps",
        "With strategy: canary, the percentages of requests the new color gets before the full switch, rising, from "
        "1 to 99, each for canary-hold. End with hold to stop at the last one: the job succeeds with the split in "
        "place, and a later command: promote or abort finishes it.",
        "10,50",
    ),
    InputSpec("canary-hold", "How long each canary step lasts (a time).", "60"),
    InputSpec(
        "canary-sticky",
        "Keep a user on one color during a canary: cookie:NAME or header:NAME, whose value nginx hashes (a request "
        "without it is split on its own). Empty means each request is split on its own.",
        "",
    ),
    InputSpec(
        "canary-max-5xx",
        "The largest share of the new color's responses in a canary step that may be 5xx (e.g. 1% or 0.5%): above "
        "it, and worse than the old color's share, the canary is aborted.",
        "1%",
    ),
    InputSpec(
        "canary-min-requests",
        "Responses the new color must give in a canary step for a verdict: with fewer, the step is held once more, "
        "then the canary is aborted as inconclusive. 0 judges whatever came.",
        "20",
    ),
)

_SPEC = {spec.name: spec for spec in INPUTS}


class ConfigError(ValueError):
    """A bad input: names the input, what is wrong, and how to fix it."""

    def __init__(self, name: str, problem: str, fix: str) -> None:
        self.input = name
        self.problem = problem
        self.fix = fix
        super().__init__(f"input '{name}': {problem}. Fix: {fix}")


@dataclass(frozen=True)
class CanaryPlan:
    """strategy: canary's inputs: the shares, each step's length, and the verdict's limits."""

    steps: tuple[int, ...] = (10, 50)  # percent of requests to the new color, rising
    hold: bool = False  # canary-steps ends in hold: the run ends with the last split in place
    seconds: int = 60  # canary-hold
    sticky: str = ""  # the nginx variable whose value keeps a user on one color ("" for none)
    max_5xx: float = 1.0  # percent
    min_requests: int = 20


@dataclass(frozen=True)
class Config:
    host: str  # the host this config deploys to (the first of `hosts`; see `for_host`)
    port: int
    username: str
    key: str
    passphrase: str
    known_hosts: str
    fingerprints: tuple[str, ...]
    insecure_skip_host_key_check: bool
    connect_timeout: int
    connect_retries: int
    app_dir: str
    ref: str
    command: Command
    project_name: str
    base_compose_file: str
    compose_file: str
    health_urls: Mapping[Color, tuple[str, ...]]
    health_timeout: int
    health_interval: int
    upstream_file: str
    upstream_target: str
    nginx_container: str
    nginx_sudo: bool
    public_url: str
    pre_switch_command: tuple[str, ...]  # service word ({color} not yet filled in), then the argv
    pre_switch_timeout: int
    drain_timeout: int
    keep_previous: KeepPrevious
    env: tuple[tuple[str, str], ...]  # (name, value), in the input's order
    prune: bool
    lock_timeout: int
    hosts: tuple[tuple[str, int], ...] = ()  # every host of the fleet: (name, port), in the input's order
    batch_size: tuple[int, bool] = (1, False)  # a count, or (with True) a percentage of the hosts
    on_host_failure: OnHostFailure = "rollback-all"
    host_url: str = ""
    plan: bool = False  # show what a deploy would do, changing nothing (plan.py)
    site_statuses: tuple[str, ...] = ("2xx", "3xx")  # public-url-status: classes (2xx) and codes (302)
    public_url_insecure: bool = False
    proxy_jump: tuple[str, str, int] | None = None  # (user, host, port) of the bastion
    proxy_key: str = ""
    proxy_known_hosts: str = ""
    host_changes: HostChanges = "refuse"
    pull: PullPolicy = "always"
    build: BuildWhere = "host"
    registry: str = ""  # host[:port]; "" is Docker Hub
    registry_username: str = ""
    registry_password: str = ""
    lb_detach_command: tuple[str, ...] = ()  # run on the host, as argv, around each reload of its nginx
    lb_attach_command: tuple[str, ...] = ()
    lb_timeout: int = 300
    strategy: Strategy = "switch"
    canary: CanaryPlan = field(default_factory=lambda: CanaryPlan())
    key_input: str = "key"  # the input `key` came from, for messages ("proxy-key" on the way to the bastion)
    agent_path: str = ""  # the CLI's --ssh-agent: sign with the keys of the ssh-agent listening here, not `key`

    def for_host(self, index: int) -> Config:
        """This config for one host of the fleet. With several hosts, public-url belongs to the fleet,
        which probes it once every host has switched."""
        name, port = self.hosts[index]
        public = self.public_url if len(self.hosts) == 1 else ""
        return replace(self, host=name, port=port, hosts=(self.hosts[index],), public_url=public)

    def batch_count(self) -> int:
        """Hosts switched at once: batch-size as a count, or its percentage of the hosts rounded up."""
        return batch_of(len(self.hosts), self.batch_size)

    def bastion(self) -> Config:
        """The config that reaches proxy-jump: its user and address, proxy-key (else key), and
        proxy-known-hosts (else the hosts' own pins)."""
        assert self.proxy_jump is not None
        user, host, port = self.proxy_jump
        pins: dict[str, object] = {}
        if self.proxy_known_hosts:  # pinned on its own: checked whatever insecure-skip-host-key-check says
            pins = {"known_hosts": self.proxy_known_hosts, "fingerprints": (), "insecure_skip_host_key_check": False}
        return replace(
            self,
            host=host,
            port=port,
            username=user,
            key=self.proxy_key or self.key,
            key_input="proxy-key" if self.proxy_key else "key",
            agent_path="" if self.proxy_key else self.agent_path,
            proxy_jump=None,
            hosts=((host, port),),
            **pins,  # type: ignore[arg-type]
        )

    def site_up(self, code: int) -> bool:
        """Whether public-url or host-url answering `code` means up (public-url-status)."""
        return status_up(code, self.site_statuses)

    @property
    def site_answers(self) -> str:
        """What public-url-status accepts, for a message: "2xx or 3xx"."""
        return " or ".join(self.site_statuses)

    def app_path(self, relative: str) -> str:
        """An input path as an absolute path on the host."""
        return posixpath.join(self.app_dir, relative)

    def compose_file_for(self, color: Color) -> str:
        """compose-file with {color} filled in, relative to app-dir."""
        return self.compose_file.replace("{color}", color)

    def upstream_file_for(self, color: Color) -> str:
        """upstream-file with {color} filled in, relative to app-dir."""
        return self.upstream_file.replace("{color}", color)

    def stack_file(self, stack: Color | Literal["base"]) -> str:
        """The compose file of a stack (base, blue or green), relative to app-dir; "" for a base
        without one."""
        return self.base_compose_file if stack == "base" else self.compose_file_for(stack)

    @property
    def legacy_projects(self) -> tuple[str, ...]:
        """Projects a host may hold this app under besides project-name: the one compose names after
        app-dir, which the seed's script ran under."""
        seed = project_from_dir(self.app_dir)
        return (seed,) if seed != self.project_name else ()

    def upstream_path(self, color: Color) -> str:
        return self.app_path(self.upstream_file_for(color))

    @property
    def upstream_target_path(self) -> str:
        return self.app_path(self.upstream_target)

    def pre_switch_for(self, color: Color) -> tuple[str, list[str]]:
        """pre-switch-command for `color`: the service, and the argv to run in it."""
        service, *argv = (word.replace("{color}", color) for word in self.pre_switch_command)
        return service, argv


def secret_values(raw: Mapping[str, str]) -> list[str]:
    """Values that must never appear in logs: each body line of the key, the passphrase, and each
    value of `env` with each of its lines.

    Taken from the raw inputs, so they are masked before validation prints anything: an `env` that
    does not parse has every line masked (what follows its first `=`, or all of it)."""
    lines = [line.strip() for name in ("key", "proxy-key") for line in raw.get(name, "").splitlines()]
    values = [line for line in lines if line and not line.startswith("-----")]
    values += [raw[name] for name in ("passphrase", "registry-password") if raw.get(name, "")]
    try:
        env_values = [value for _, value in _env(raw.get("env", ""))]
    except ConfigError:
        env_values = [line.partition("=")[2] or line for line in raw.get("env", "").splitlines()]
    for value in env_values:
        values += [value.strip(), *(line.strip() for line in value.splitlines())]
    return [value for value in dict.fromkeys(values) if maskable(value)]


# Values no secret has: masking them would rewrite every line of a job log that holds them.
COMMON_VALUES = frozenset(
    [
        "enabled",
        "disabled",
        "default",
        "production",
        "development",
        "staging",
        "testing",
        "localhost",
        "0.0.0.0",
        "127.0.0.1",
        "warning",
        "critical",
    ]
)


def maskable(value: str) -> bool:
    """Whether `value` is registered as a mask: not one shorter than 6 characters (`1`, `true`, a
    port) or one of COMMON_VALUES. A mask of `1` would turn every 1 in the job's log into ***."""
    return len(value) >= 6 and value.lower() not in COMMON_VALUES


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_CHARS = re.compile(r"^[A-Za-z0-9._/@+{}-]+$")
_URL_BAD = re.compile(r"[\s\"'<>\\^`{|}]")
_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")
_FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}=?$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}$")
_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DOCKER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a container or compose service name
_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off", ""}


# -- time limits ------------------------------------------------------------------------------------
# Every clock of a run, in one place. Inputs set the waits a person chooses (lock-timeout,
# health-timeout, pre-switch-timeout, drain-timeout, connect-timeout); these bound the rest. The deploy
# lock has no clock: its holder on the host lets go when the run's session ends or its beats stop
# (LOCK_SILENCE_SECONDS after the last), so however long a run the inputs allow (a migration of a day),
# nothing takes the lock from it while it lives.
LOCK_BEAT_SECONDS = 5  # how often the run tells the lock's holder on the host that it is alive
LOCK_SILENCE_SECONDS = 60  # the holder lets go after this long without a beat: a runner that vanished
COMPOSE_SECONDS = 1800  # one compose call that builds, starts or stops a stack
COMMAND_SECONDS = 120  # any other host command
CLIENT_SLACK_SECONDS = 15  # the client waits this long past a command's host-side limit, so the host's fires first
CANCEL_GRACE_SECONDS = 5  # a cancelled command: how long to wait for it to stop on the host before going on
PROBE_SECONDS = 5.0  # one health or public-url probe, whole (connect, status line): never past health-timeout
RELOAD_CONFIRM_SECONDS = 15.0  # nginx shows a new worker generation with the new upstream
STOP_GRACE_MIN_SECONDS = 10  # the least stop grace a color gets (its requests in flight)
TEARDOWN_STOP_SECONDS = 2  # a target that never served: stopped fast, inside the runner's cancel window
CANCEL_DRAIN_SECONDS = 3  # a fleet host switched back on a cancel: the drain it gets inside that window
# A recovery that lost its connection takes the lock again: its own dead session's holder may still
# hold it until the silence ends, so it waits that long and a beat more.
RECONNECT_LOCK_SECONDS = LOCK_SILENCE_SECONDS + 2 * LOCK_BEAT_SECONDS


def check_timeouts(*, health_timeout: int, health_interval: int) -> None:
    """The limits the inputs allow, where they meet: each wait fits inside the one it is part of.
    (The fixed ones fit by construction: a stop's command limit is its grace plus COMMAND_SECONDS;
    a probe's deadline is the rest of health-timeout; a command's host-side limit fires before the
    client's; tests/unit/test_config.py checks them over every value the inputs allow.)"""
    if health_interval > health_timeout:
        raise ConfigError(
            "health-interval",
            f"{health_interval}s is longer than health-timeout ({health_timeout}s)",
            "make health-interval at most health-timeout",
        )


def _host(value: str, name: str = "host") -> str:
    candidate = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if not _HOST.match(value) or ".." in value:
        raise ConfigError(
            name,
            f"{value!r} is not a host name or IP address",
            "give a DNS name like deploy.example.com or an address like 203.0.113.7"
            + (", without user@" if name == "host" else ""),
        )
    return value


def _address(name: str, value: str, default_port: int) -> tuple[str, int]:
    """`name`, `name:port`, `[v6]:port`, `[v6]` or a bare IPv6 address."""
    if value.startswith("[") and "]" in value:
        inside, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigError(name, f"{value!r} has text after ']'", "write [v6]:port, e.g. [2001:db8::7]:22")
        host, port = _host(f"[{inside}]", name), rest[1:]
    elif value.count(":") == 1:
        host, port = value.split(":")
        host = _host(host, name)
    else:
        host, port = _host(value, name), ""
    return host, _int(name, port, 1, 65535) if port else default_port


def _hosts(value: str, default_port: int) -> tuple[tuple[str, int], ...]:
    items = [item for item in re.split(r"[,\s]", value) if item]
    if not items:
        raise ConfigError("host", "is required", "give the host to deploy to, e.g. deploy.example.com")
    hosts = tuple(_address("host", item, default_port) for item in items)
    seen: set[tuple[str, int]] = set()
    for host, port in hosts:
        if (host.lower(), port) in seen:  # host names know no case: web-1 and WEB-1 are one machine
            raise ConfigError("host", f"{host}:{port} is listed twice", "list each host once")
        seen.add((host.lower(), port))
    return hosts


def _proxy_jump(value: str) -> tuple[str, str, int] | None:
    if not value:
        return None
    user, at, address = value.rpartition("@")
    if not at or not _USER.match(user):
        raise ConfigError(
            "proxy-jump", f"{value!r} is not user@bastion[:port]", "give the bastion as user@host or user@host:port"
        )
    host, port = _address("proxy-jump", address, 22)
    return user, host, port


def _batch_size(value: str) -> tuple[int, bool]:
    if value.endswith("%"):
        return _int("batch-size", value[:-1], 1, 100), True
    return _int("batch-size", value, 1, 1000), False


def _int(name: str, value: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", value):
        raise ConfigError(name, f"{value!r} is not a whole number", f"give a number from {low} to {high}")
    number = int(value)
    if not low <= number <= high:
        raise ConfigError(name, f"{number} is out of range", f"give a number from {low} to {high}")
    return number


_DURATION = re.compile(r"(?:([0-9]{1,6})h)?(?:([0-9]{1,6})m)?(?:([0-9]{1,9})s?)?")


def _seconds(name: str, value: str, low: int, high: int) -> int:
    """A time in whole seconds: `90`, or with units as people write them: `30s`, `10m`, `1h`, `1m30s`."""
    text = value.strip().lower()
    match = _DURATION.fullmatch(text)
    if not text or not match or (not match[3] and text[-1] not in "hm"):
        raise ConfigError(
            name, f"{value!r} is not a duration", f"give seconds (e.g. {low}, {high}) or a time like 30s, 10m or 1h"
        )
    seconds = int(match[1] or 0) * 3600 + int(match[2] or 0) * 60 + int(match[3] or 0)
    if not low <= seconds <= high:
        raise ConfigError(name, f"{value} ({seconds} s) is out of range", f"give from {low} to {high} seconds")
    return seconds


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, f"{value!r} is not a boolean", "use true or false")


def _relative_path(name: str, value: str, *, need_color: bool = False, allow_absolute: bool = False) -> str:
    if not value:
        raise ConfigError(name, "is empty", f"give a path relative to app-dir, e.g. {_SPEC[name].default}")
    if _CONTROL.search(value):
        raise ConfigError(name, "contains a control character or newline", "give a single-line path")
    if value.startswith("-"):
        raise ConfigError(name, f"{value!r} starts with '-'", "give a path that does not start with '-'")
    if not _PATH_CHARS.match(value):
        raise ConfigError(
            name,
            f"{value!r} has characters other than letters, digits and . _ / @ + -",
            "rename the file, or give a path without spaces or shell characters",
        )
    if value.startswith("/") and not allow_absolute:
        raise ConfigError(name, f"{value!r} is absolute", "give a path relative to app-dir")
    if ".." in value.split("/"):
        raise ConfigError(name, f"{value!r} contains '..'", "give a path inside app-dir without '..'")
    if need_color and "{color}" not in value:
        raise ConfigError(
            name,
            f"{value!r} has no {{color}} placeholder",
            "put {color} where blue or green goes, e.g. " + _SPEC[name].default,
        )
    stripped = value.replace("{color}", "")
    if "{" in stripped or "}" in stripped:
        raise ConfigError(name, f"{value!r} has a placeholder other than {{color}}", "use only {color}")
    return posixpath.normpath(value)


def _app_dir(value: str) -> str:
    if not value:
        raise ConfigError(
            "app-dir", "is required", "give the absolute path of the app's git checkout on the host, e.g. /srv/app"
        )
    if _CONTROL.search(value):
        raise ConfigError("app-dir", "contains a control character or newline", "give a single-line absolute path")
    if not value.startswith("/"):
        raise ConfigError("app-dir", f"{value!r} is not absolute", "give an absolute path, e.g. /srv/app")
    if not _PATH_CHARS.match(value) or "{" in value or "}" in value:
        raise ConfigError(
            "app-dir",
            f"{value!r} has characters other than letters, digits and . _ / @ + -",
            "give the path without spaces or shell characters",
        )
    if ".." in value.split("/"):
        raise ConfigError("app-dir", f"{value!r} contains '..'", "give the path without '..'")
    normal = posixpath.normpath(value)
    if normal == "/":
        raise ConfigError("app-dir", "is the root directory", "give the app's own directory, e.g. /srv/app")
    return normal


def _url(name: str, value: str) -> str:
    if _CONTROL.search(value) or _URL_BAD.search(value):
        raise ConfigError(
            name,
            f"{value!r} has whitespace, quotes or other characters a URL cannot hold",
            "give one URL per line, percent-encoding special characters",
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"{value!r} is not an http(s) URL", "give a URL like http://127.0.0.1:8001/health")
    if parts.username or parts.password:
        raise ConfigError(name, f"{value!r} carries credentials", "remove user:password@ from the URL")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(name, f"{value!r} has an invalid port", "give a port from 1 to 65535") from None
    return value


def _urls(name: str, value: str, required: bool = True) -> tuple[str, ...]:
    urls = tuple(_url(name, item) for item in value.split())
    if not urls and required:
        raise ConfigError(name, "is required", "give at least one URL, e.g. http://127.0.0.1:8001/health")
    return urls


def _plan(value: str, command: str) -> bool:
    plan = _bool("plan", value)
    if plan and command != "deploy":
        raise ConfigError("plan", f"is for deploys, and command is {command}", "set command: deploy, or plan: false")
    return plan


def _statuses(value: str) -> tuple[str, ...]:
    """HTTP status classes (2xx) and codes (302), space or comma separated."""
    items = tuple(item.lower() for item in re.split(r"[,\s]", value) if item)
    for item in items:
        if not re.fullmatch(r"[1-5](?:xx|[0-9]{2})", item):
            raise ConfigError(
                "public-url-status", f"{item!r} is not an HTTP status or class", "give classes or codes: 2xx 301 302"
            )
    if not items:
        raise ConfigError("public-url-status", "is empty", "give the answers that mean up, e.g. 2xx 3xx")
    return items


def status_up(code: int, statuses: Sequence[str]) -> bool:
    """Whether HTTP status `code` is one `statuses` (public-url-status) accepts."""
    return any(str(code) == s or (s.endswith("xx") and str(code)[:1] == s[0]) for s in statuses)


def _fingerprints(value: str) -> tuple[str, ...]:
    """SHA256:... fingerprints, comma or newline separated; a line as `ssh-keygen -lf` prints it
    (`256 SHA256:... root@web (ED25519)`) gives its fingerprint."""
    items = []
    for item in (item.strip() for item in re.split(r"[,\n]", value) if item.strip()):
        words = [word for word in item.split() if word.startswith("SHA256:")]
        items.append(words[0] if len(words) == 1 else item)
    for item in items:
        if not _FINGERPRINT.match(item):
            raise ConfigError(
                "fingerprint",
                f"{item!r} is not a SHA256 host key fingerprint",
                "give SHA256:<43 base64 characters>, as printed by ssh-keygen -lf on the host key",
            )
    return tuple(item.rstrip("=") for item in items)


def _known_hosts(value: str) -> str:
    """Each line must be a known_hosts entry: [marker] hosts keytype base64-key [comment]."""
    for number, line in enumerate(value.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):
            fields = fields[1:]
        try:
            asyncssh.import_public_key(f"{fields[1]} {fields[2]}")
        except (IndexError, asyncssh.KeyImportError):
            raise ConfigError(
                "known-hosts",
                f"line {number} is not a known_hosts entry",
                "give lines as printed by 'ssh-keyscan -p PORT HOST': host, key type, base64 key",
            ) from None
    return value


_Choice = TypeVar("_Choice", bound=str)


def _choice(name: str, value: str, choices: tuple[_Choice, ...]) -> _Choice:
    for choice in choices:
        if value == choice:
            return choice
    raise ConfigError(name, f"{value!r} is not one of {', '.join(choices)}", f"give one of {', '.join(choices)}")


def _words(name: str, value: str) -> tuple[str, ...]:
    """A command line split like a shell splits it (it is run as argv, never by a shell)."""
    if _CONTROL.search(value):
        raise ConfigError(name, "contains a newline or control character", "give the command on one line")
    try:
        return tuple(shlex.split(value))
    except ValueError as err:
        raise ConfigError(name, f"{value!r} cannot be split into words ({err})", "close every quote") from None


def _pre_switch_command(value: str) -> tuple[str, ...]:
    """A service name, then the command: split like a shell line, never run by a shell."""
    name = "pre-switch-command"
    if not value:
        return ()
    words = _words(name, value)
    if len(words) < 2:
        raise ConfigError(
            name,
            f"{value!r} has no command after the service",
            "give the service, then the command, e.g. backend_{color} python manage.py migrate --noinput",
        )
    if not _DOCKER_NAME.match(words[0].replace("{color}", "blue")):
        raise ConfigError(
            name,
            f"the first word {words[0]!r} is not a compose service name",
            "start with the service to run it in, e.g. backend_{color}",
        )
    return words


def _check_lb_hooks(
    detach: tuple[str, ...], attach: tuple[str, ...], hosts: tuple[tuple[str, int], ...], batch_size: tuple[int, bool]
) -> None:
    """The load balancer hooks come as a pair, and never take every host out at once."""
    if bool(detach) != bool(attach):
        missing = "lb-attach-command" if detach else "lb-detach-command"
        raise ConfigError(missing, "is required with the other load balancer hook", "set both, or neither")
    if not detach:
        return
    if len(hosts) < 2:
        raise ConfigError(
            "lb-detach-command",
            "would take the only host out of the load balancer: downtime at every switch",
            "with one host, let the load balancer retry an idempotent request on a closed idle connection "
            "(nginx: proxy_next_upstream error) and leave the hooks empty",
        )
    if batch_of(len(hosts), batch_size) >= len(hosts):
        raise ConfigError(
            "batch-size",
            f"switches all {len(hosts)} hosts at once, so lb-detach-command would take every host out of the load "
            "balancer together",
            f"give a batch-size smaller than {len(hosts)}",
        )


def _host_command(name: str, value: str) -> tuple[str, ...]:
    """A command run on the host: split like a shell line, run as argv, never by a shell."""
    if not value:
        return ()
    words = _words(name, value)
    if not words or words[0].startswith("-") or "=" in words[0]:
        raise ConfigError(
            name, f"{value!r} does not start with a command", "start with the program, e.g. sh -c 'curl -fsS ...'"
        )
    return words


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names that steer the compose process (or the shell that starts it) rather than the app.
_ENV_RESERVED = re.compile(r"^(?:DOCKER_.*|COMPOSE_.*|LD_.*|PATH|HOME|SHELL|IFS|ENV|BASH_ENV|PWD|USER)$")
_DOUBLE_QUOTED_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _closing_quote(text: str, quote: str) -> int:
    """Where `text` (after an opening quote) closes it: the first `'`, or the first unescaped `"`."""
    if quote == "'":
        return text.find("'")
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    return -1


def _unescape(text: str) -> str:
    out, chars = [], iter(text)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(_DOUBLE_QUOTED_ESCAPES.get(following, "\\" + following))
        else:
            out.append(char)
    return "".join(out)


def _env(text: str, name_: str = "env") -> tuple[tuple[str, str], ...]:
    """dotenv lines: NAME=value (`export ` allowed), blank lines and `#` lines skipped. An unquoted
    value is the rest of the line, trimmed (a `#` in it is kept); a single-quoted one is literal, a
    double-quoted one knows the escapes \\n \\r \\t \\" \\\\; quoted values may span lines. Errors
    name the line, never its value."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: dict[str, tuple[int, str]] = {}
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line.removeprefix("export ").lstrip()
        name, equals, rest = line.partition("=")
        name = name.strip()
        if not equals:
            raise ConfigError(name_, f"line {number} has no '='", "write NAME=value, one variable a line")
        if not _ENV_NAME.match(name):
            raise ConfigError(
                name_,
                f"line {number}: the name is not a variable name",
                "use letters, digits and _, not starting with a digit",
            )
        if _ENV_RESERVED.match(name):
            raise ConfigError(
                name_,
                f"line {number}: {name} steers docker or the shell, not the app",
                "set it on the host if you mean it; env is for the app's own variables",
            )
        if name in out:
            raise ConfigError(name_, f"line {number} sets {name} again (line {out[name][0]})", "set each name once")
        rest = rest.strip()
        if rest[:1] in ("'", '"'):
            quote, body, parts = rest[0], rest[1:], []
            while (end := _closing_quote(body, quote)) < 0:
                if index >= len(lines):
                    raise ConfigError(name_, f"line {number}: its quote is never closed", f"close it with {quote}")
                parts.append(body)
                body = lines[index]
                index += 1
            parts.append(body[:end])
            if body[end + 1 :].strip():
                raise ConfigError(
                    name_, f"line {index}: text after the closing quote", "quote the whole value, or none of it"
                )
            value = "\n".join(parts)
            rest = _unescape(value) if quote == '"' else value
        out[name] = (number, rest)
    return tuple((name, value) for name, (_, value) in out.items())


def _app_env(env: str, plain: str) -> tuple[tuple[str, str], ...]:
    """The app's variables: env's (secret) and vars' (plain), a name in one of them only."""
    secret, public = _env(env), _env(plain, "vars")
    if both := sorted({name for name, _ in secret} & {name for name, _ in public}):
        raise ConfigError("vars", f"sets {', '.join(both)}, which env sets too", "set each name in env or in vars")
    return secret + public


def _utf8(raw: Mapping[str, str]) -> None:
    """Every input is UTF-8 text. Bytes that are not (a Latin-1 .env read by the CLI) reach Python as
    lone surrogates, which no SSH channel or log can carry: refused by input and line, never shown."""
    for name in _SPEC:
        value = raw.get(name, "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            line = value.count("\n", 0, err.start) + 1
            raise ConfigError(
                name,
                f"line {line} is not UTF-8 text" if "\n" in value.strip() else "is not UTF-8 text",
                "save the value (or the file it comes from) as UTF-8",
            ) from None


def project_from_dir(app_dir: str) -> str:
    """The project name compose itself gives files in app-dir (what the seed's script ran under)."""
    name = re.sub(r"[^a-z0-9_-]+", "", posixpath.basename(app_dir).lower()).lstrip("-_")
    return name[:63] or "app"


# A registry as docker login takes it: a host name or address, with :port (no scheme, no path).
_REGISTRY = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*(?::[0-9]{1,5})?$"
)
_REGISTRY_USER = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_.@+=$-]{0,255}$")  # _json_key, robot$name; no blank


_STICKY = re.compile(r"^(cookie:[A-Za-z0-9_]{1,64}|header:[A-Za-z0-9_-]{1,64})$")


def _canary(get: Callable[[str], str]) -> CanaryPlan:
    """canary-steps, canary-hold, canary-sticky, canary-max-5xx and canary-min-requests."""
    words = [w for w in re.split(r"[\s,]+", get("canary-steps").strip().lower()) if w]
    hold = bool(words) and words[-1] == "hold"
    steps: list[int] = []
    for word in words[:-1] if hold else words:
        if not word.rstrip("%").isdigit() or not 1 <= int(word.rstrip("%")) <= 99:
            raise ConfigError(
                "canary-steps", f"{word!r} is not a percentage from 1 to 99", "give rising percentages, e.g. 10,50"
            )
        if steps and int(word.rstrip("%")) <= steps[-1]:
            raise ConfigError("canary-steps", f"{word} does not rise after {steps[-1]}", "give rising percentages")
        steps.append(int(word.rstrip("%")))
    if not steps:
        raise ConfigError("canary-steps", "has no percentage", "give at least one, e.g. 10,50 or 10,hold")
    sticky = get("canary-sticky")
    if sticky and not _STICKY.match(sticky):
        raise ConfigError(
            "canary-sticky",
            f"{sticky!r} is not cookie:NAME or header:NAME",
            "give e.g. cookie:session or header:X-User (a cookie's name in letters, digits and _)",
        )
    kind, _, name = sticky.partition(":")
    variable = f"$cookie_{name}" if kind == "cookie" else f"$http_{name.lower().replace('-', '_')}" if name else ""
    limit = get("canary-max-5xx")
    try:
        max_5xx = float(limit.removesuffix("%"))
    except ValueError:
        max_5xx = -1.0
    if not 0 <= max_5xx <= 100:
        raise ConfigError("canary-max-5xx", f"{limit!r} is not a percentage from 0 to 100", "give e.g. 1% or 0.5%")
    return CanaryPlan(
        steps=tuple(steps),
        hold=hold,
        seconds=_seconds("canary-hold", get("canary-hold"), 1, 86400),
        sticky=variable,
        max_5xx=max_5xx,
        min_requests=_int("canary-min-requests", get("canary-min-requests"), 0, 1_000_000),
    )


def _registry(registry: str, username: str, password: str) -> dict[str, str]:
    """registry, registry-username and registry-password: a login needs a user and a password
    together; a registry without a user is an error rather than a silent anonymous pull."""
    registry = registry.lower()
    if registry in ("docker.io", "index.docker.io", "registry-1.docker.io"):  # Docker Hub, as docker names it
        registry = ""
    if registry and not _REGISTRY.match(registry):
        raise ConfigError(
            "registry",
            f"{registry!r} is not a registry host",
            "give the registry's host and, if not 443, its port, with no https:// and no path: ghcr.io, "
            "registry.example.com:5000",
        )
    if username and not _REGISTRY_USER.match(username):
        raise ConfigError(
            "registry-username",
            f"{username!r} is not a registry user name",
            "give the user name alone (letters, digits, and . _ - @ + = $), e.g. ${{ github.actor }}",
        )
    if "\n" in password or "\r" in password:
        raise ConfigError("registry-password", "holds a line break", "give the password or token alone, on one line")
    if username and not password:
        raise ConfigError(
            "registry-password",
            "is empty, but registry-username is set",
            "set registry-password from a secret (for GHCR: ${{ secrets.GITHUB_TOKEN }}), or clear registry-username",
        )
    if password and not username:
        raise ConfigError(
            "registry-username", "is empty, but registry-password is set", "set the user the password belongs to"
        )
    if registry and not username:
        raise ConfigError(
            "registry-username",
            f"is empty, but registry is set ({registry})",
            "set registry-username and registry-password to log in, or clear registry (public images need no login)",
        )
    return {"registry": registry, "registry_username": username, "registry_password": password}


# Inputs only a deploy needs; `bluegreen status` runs without them.
DEPLOY_ONLY = ("ref", "blue-health-urls", "green-health-urls")


def _given(raw: Mapping[str, str], name: str) -> str:
    """An input's value as given ("" for none): stripped, but for the key, whose text is kept whole."""
    value = raw.get(name, "")
    return value if name == "key" else value.strip()


# What a missing input's error says; "is required" for the rest.
_MISSING = {
    "known-hosts": (
        "neither known-hosts nor fingerprint is set",
        "pin the host key: set known-hosts to the output of 'ssh-keyscan -p PORT HOST' or fingerprint to 'SHA256:...'",
    ),
    "ref": ("is empty and GITHUB_SHA is not set", "set ref to a commit, branch or tag"),
}


def missing_inputs(raw: Mapping[str, str], *, for_deploy: bool = True, agent: bool = False) -> list[str]:
    """Every input a run needs that `raw` lacks, in the schema's order, so that all are reported at
    once: the required ones (but `key` with an ssh-agent to sign); known-hosts, for a host key pin
    (it or fingerprint, unless insecure-skip-host-key-check); ref, for a deploy."""
    missing = [
        spec.name
        for spec in INPUTS
        if spec.required
        and not _given(raw, spec.name)
        and (for_deploy or spec.name not in DEPLOY_ONLY)
        and not (agent and spec.name == "key")
    ]
    insecure = _given(raw, "insecure-skip-host-key-check").lower() in _TRUE
    if not _given(raw, "known-hosts") and not _given(raw, "fingerprint") and not insecure:
        missing.append("known-hosts")
    if for_deploy and _given(raw, "command") in ("", "deploy") and not _given(raw, "ref"):
        missing.append("ref")
    return sorted(missing, key=[spec.name for spec in INPUTS].index)


def load_config(raw: Mapping[str, str], *, for_deploy: bool = True, agent_path: str = "") -> Config:
    """Validate raw input values (keyed by input name) into a Config. Unknown keys are ignored.
    `agent_path`: the CLI's ssh-agent, which signs instead of `key`."""

    _utf8(raw)
    if missing := missing_inputs(raw, for_deploy=for_deploy, agent=bool(agent_path)):
        problem, fix = _MISSING.get(missing[0], ("is required", f"set '{missing[0]}' in the step's with: block"))
        others = f" (missing too: {', '.join(missing[1:])})" if missing[1:] else ""
        raise ConfigError(missing[0], problem + others, fix)

    def get(name: str) -> str:
        value = _given(raw, name)
        if not value:
            return "" if not for_deploy and name in DEPLOY_ONLY else _SPEC[name].default
        return value

    app_dir = _app_dir(get("app-dir"))
    username = get("username")
    if not _USER.match(username):
        raise ConfigError(
            "username", f"{username!r} is not a valid user name", "give the login name of the deploy user, e.g. deploy"
        )
    known_hosts = _known_hosts(get("known-hosts"))
    fingerprints = _fingerprints(get("fingerprint"))
    insecure = _bool("insecure-skip-host-key-check", get("insecure-skip-host-key-check"))
    if not known_hosts and not fingerprints and not insecure:  # given, but only separators: no pin all the same
        raise ConfigError("known-hosts", *_MISSING["known-hosts"])
    command = _choice("command", get("command"), COMMANDS)
    ref = get("ref")
    if ref and (not _REF.match(ref) or ".." in ref or "@{" in ref or ref.endswith((".lock", "/", "."))):
        raise ConfigError(
            "ref", f"{ref!r} is not a valid git ref or commit", "give a commit SHA, a branch or a tag name"
        )
    project = get("project-name") or project_from_dir(app_dir)
    if not _PROJECT.match(project):
        raise ConfigError(
            "project-name",
            f"{project!r} is not a valid compose project name",
            "use lower-case letters, digits, '-' and '_', starting with a letter or digit",
        )
    base = raw.get("base-compose-file", _SPEC["base-compose-file"].default).strip()
    nginx_container = get("nginx-container")
    if nginx_container and not _DOCKER_NAME.match(nginx_container):
        raise ConfigError(
            "nginx-container",
            f"{nginx_container!r} is not a container name",
            "give the name shown by 'docker ps', e.g. app_nginx_1",
        )
    nginx_sudo = _bool("nginx-sudo", get("nginx-sudo"))
    if nginx_sudo and nginx_container:
        raise ConfigError(
            "nginx-sudo",
            f"is for nginx on the host, but nginx-container is set ({nginx_container})",
            "remove nginx-sudo (docker exec needs no sudo), or clear nginx-container",
        )
    public_url = get("public-url")
    host_url = get("host-url")
    proxy_known_hosts = get("proxy-known-hosts")
    if proxy_known_hosts:
        try:
            _known_hosts(proxy_known_hosts)
        except ConfigError as err:
            raise ConfigError("proxy-known-hosts", err.problem, err.fix) from None
    port = _int("port", get("port"), 1, 65535)
    hosts = _hosts(get("host"), port)
    proxy_jump = _proxy_jump(get("proxy-jump"))
    for name in ("proxy-key", "proxy-known-hosts"):
        if raw.get(name, "").strip() and proxy_jump is None:
            raise ConfigError(
                name, "is set but proxy-jump is empty", f"set proxy-jump to user@bastion, or clear {name}"
            )
    health_timeout = _seconds("health-timeout", get("health-timeout"), 1, 3600)
    health_interval = _seconds("health-interval", get("health-interval"), 1, 600)
    check_timeouts(health_timeout=health_timeout, health_interval=health_interval)
    strategy = _choice("strategy", get("strategy"), STRATEGIES)
    canary = _canary(get)
    detach = _host_command("lb-detach-command", get("lb-detach-command"))
    attach = _host_command("lb-attach-command", get("lb-attach-command"))
    batch_size = _batch_size(get("batch-size"))
    _check_lb_hooks(detach, attach, hosts, batch_size)
    on_host_failure = _choice("on-host-failure", get("on-host-failure"), ON_HOST_FAILURE)
    if strategy == "canary" and canary.hold and len(hosts) > 1 and on_host_failure == "stop":
        raise ConfigError(
            "canary-steps",
            "ends in hold, and on-host-failure: stop would leave some hosts held and others not",
            "set on-host-failure: rollback-all (every host holds, or none), or drop hold",
        )
    if strategy == "canary" and canary.hold and batch_of(len(hosts), batch_size) < len(hosts):
        raise ConfigError(
            "canary-steps",
            "ends in hold, and batch-size switches the fleet in more than one batch",
            "set batch-size: 100% (a held canary holds every host), or drop hold",
        )
    return Config(
        host=hosts[0][0],
        port=hosts[0][1],
        username=username,
        key=get("key"),
        passphrase=raw.get("passphrase", ""),
        known_hosts=known_hosts,
        fingerprints=fingerprints,
        insecure_skip_host_key_check=insecure,
        connect_timeout=_seconds("connect-timeout", get("connect-timeout"), 1, 600),
        connect_retries=_int("connect-retries", get("connect-retries"), 0, 10),
        app_dir=app_dir,
        ref=ref,
        command=command,
        project_name=project,
        base_compose_file=_relative_path("base-compose-file", base) if base else "",
        compose_file=_relative_path("compose-file", get("compose-file"), need_color=True),
        health_urls={
            "blue": _urls("blue-health-urls", get("blue-health-urls"), for_deploy),
            "green": _urls("green-health-urls", get("green-health-urls"), for_deploy),
        },
        health_timeout=health_timeout,
        health_interval=health_interval,
        upstream_file=_relative_path("upstream-file", get("upstream-file"), need_color=True),
        upstream_target=_relative_path("upstream-target", get("upstream-target"), allow_absolute=True),
        nginx_container=nginx_container,
        nginx_sudo=nginx_sudo,
        public_url=_url("public-url", public_url) if public_url else "",
        pre_switch_command=_pre_switch_command(get("pre-switch-command")),
        lb_detach_command=detach,
        lb_attach_command=attach,
        lb_timeout=_seconds("lb-timeout", get("lb-timeout"), 1, 86400),
        pre_switch_timeout=_seconds("pre-switch-timeout", get("pre-switch-timeout"), 1, 86400),
        drain_timeout=_seconds("drain-timeout", get("drain-timeout"), 0, 3600),
        keep_previous=_choice("keep-previous", get("keep-previous"), KEEP_PREVIOUS),
        env=_app_env(raw.get("env", ""), raw.get("vars", "")),
        prune=_bool("prune", get("prune")),
        lock_timeout=_seconds("lock-timeout", get("lock-timeout"), 0, 86400),
        hosts=hosts,
        batch_size=batch_size,
        on_host_failure=on_host_failure,
        host_url=_url("host-url", host_url) if host_url else "",
        plan=_plan(get("plan"), command),
        site_statuses=_statuses(get("public-url-status")),
        public_url_insecure=_bool("public-url-insecure", get("public-url-insecure")),
        proxy_jump=proxy_jump,
        proxy_key=raw.get("proxy-key", "").strip(),
        proxy_known_hosts=proxy_known_hosts,
        host_changes=_choice("host-changes", get("host-changes"), HOST_CHANGES),
        pull=_choice("pull", get("pull"), PULL_POLICIES),
        build=_choice("build", get("build"), BUILD_WHERE),
        **_registry(get("registry"), get("registry-username"), raw.get("registry-password", "").strip("\r\n")),
        strategy=strategy,
        canary=canary,
        agent_path=agent_path,
    )


# Inputs a settings file never holds: secrets belong in the repository's secrets; a ref, a command
# or a plan is the run's own; and what turns a check off stays in the workflow, where a reviewer
# sees it (a file's value overrides a with: value left at its default, which GitHub passes as set).
SECRETS = ("key", "passphrase", "proxy-key", "env", "registry-password")
RUNS_OWN = ("config", "ref", "command", "plan")
CHECKS_OFF = ("insecure-skip-host-key-check", "public-url-insecure")
NOT_IN_SETTINGS = SECRETS + RUNS_OWN + CHECKS_OFF


def _setting(value: object) -> str | None:
    """A settings file's value as an input's text: a list is one item a line (hosts, URLs); None if
    it is neither text, a number, true/false nor a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, list):
        items = [None if isinstance(item, list) else _setting(item) for item in value]
        return None if None in items else "\n".join(item for item in items if item is not None)
    return None


def with_settings_file(raw: Mapping[str, str], folder: Path) -> dict[str, str]:
    """`raw`, every input it leaves empty or at its default taken from the settings file `config`
    names (relative to `folder`: the workspace, or the CLI's working directory), when it names one.
    At its default counts as not given: GitHub passes an input's default as if the step had set it.
    The file is validated as a whole first: an unknown key, a secret, or a value that is not text
    is an error naming it; nothing is read from a file with one."""
    name = _given(raw, "config")
    if not name:
        return dict(raw)
    fix = "give the settings file's path relative to the repository's root, and check the repository out first"
    try:
        text = (folder / Path(name).expanduser()).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("config", f"{name} cannot be read ({err.strerror or 'not a file'})", fix) from None
    except UnicodeDecodeError:
        raise ConfigError("config", f"{name} is not UTF-8 text", "save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError("config", f"{name} is not valid YAML{where}", "fix its syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{name} is not a mapping", "write one 'input-name: value' a line")
    settings = {}
    for key, value in data.items():
        if key not in _SPEC:
            close = difflib.get_close_matches(str(key), list(_SPEC), 1)
            raise ConfigError(
                "config",
                f"{name} sets {str(key)!r}, which is no input",
                f"did you mean {close[0]}?" if close else "use the inputs' names (README, Inputs)",
            )
        if key in NOT_IN_SETTINGS:
            why = {key: "is a secret" for key in SECRETS} | {key: "turns a check off" for key in CHECKS_OFF}
            raise ConfigError(
                "config",
                f"{name} sets {key}, which " + why.get(key, "is the run's own, never a setting"),
                f"give {key} in the step's with: block" + (", from the repository's secrets" if key in SECRETS else ""),
            )
        if (setting := _setting(value)) is None:
            kind = "nothing" if value is None else f"a {type(value).__name__}"
            raise ConfigError("config", f"{name} sets {key} to {kind}", "give text, a number, true/false or a list")
        settings[key] = setting
    merged = dict(raw)
    for key, setting in settings.items():
        if _given(raw, key) in ("", _SPEC[key].default):
            merged[key] = setting
    return merged


def inputs_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Raw input values as GitHub's runner passes them: INPUT_<NAME>, upper case, hyphens kept.

    An empty `ref` falls back to the run's GITHUB_SHA."""
    raw = {spec.name: environ.get("INPUT_" + spec.name.upper(), "") for spec in INPUTS}
    if not raw["ref"].strip():
        raw["ref"] = environ.get("GITHUB_SHA", "")
    if "INPUT_BASE-COMPOSE-FILE" not in environ:
        raw["base-compose-file"] = _SPEC["base-compose-file"].default
    return raw
