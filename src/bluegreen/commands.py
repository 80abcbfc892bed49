"""Pure command builders: each returns an argv list (or the shell line that runs it). No I/O here.

Every remote command is an argv; `shell_line` quotes it with shlex so that no value ever reaches the
remote shell unquoted, and wraps it in `timeout` so the host itself enforces the time limit.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Argv = list[str]
ComposeVariant = Literal["v2", "v1"]

# Lists nginx processes as "pid ppid title" lines by reading /proc, so it works in any nginx image
# (no ps needed). A constant: no input is ever interpolated into it.
NGINX_PROCESSES_SCRIPT = (
    "for d in /proc/[0-9]*; do "
    't=$(tr "\\000" " " < "$d/cmdline" 2>/dev/null) || continue; '
    'case "$t" in "nginx: "*) '
    'p=$(sed -n "s/^PPid:[[:space:]]*//p" "$d/status" 2>/dev/null); '
    'echo "${d#/proc/} $p $t";; esac; done'
)


# Runs "$@" but kills it when the SSH session goes away: the session's stdin (kept on fd 3, since a
# background job's stdin is /dev/null) reaches EOF only when the channel closes. Without this, a
# command whose runner was killed would go on running on the host. The watcher holds no output
# pipe, so it never keeps the channel open. A constant: inputs go in "$@".
TIED_TO_SESSION_SCRIPT = (
    'exec 3<&0; "$@" & c=$!; (cat <&3; kill -TERM "$c") >/dev/null 2>&1 & w=$!; '
    'wait "$c"; s=$?; kill "$w" 2>/dev/null; exit "$s"'
)


def shell_line(argv: Sequence[str], timeout: int | None = None, tied: bool = False) -> str:
    """The quoted command line for an SSH exec request: with a host-side timeout, and, if `tied`
    (only for commands that take no stdin), killed when the session ends."""
    if timeout is not None:
        argv = ["timeout", "--kill-after=5", str(timeout), *argv]
    if tied:
        argv = ["sh", "-c", TIED_TO_SESSION_SCRIPT, "sh", *argv]
    return shlex.join(argv)


def docker_server_version() -> Argv:
    """Fails unless the deploy user can reach dockerd (docker group)."""
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def choose_compose(v2_works: bool, v1_found: bool) -> ComposeVariant | None:
    """v2 when the host has it (it supports `up --wait`), else v1, else none."""
    if v2_works:
        return "v2"
    return "v1" if v1_found else None


def compose_detect(variant: ComposeVariant) -> Argv:
    """Succeeds if the host has this Compose. v1 is looked up rather than run: starting its Python
    takes a third of a second, on every deploy."""
    return ["docker", "compose", "version"] if variant == "v2" else ["sh", "-c", "command -v docker-compose"]


@dataclass(frozen=True)
class Compose:
    """Compose commands for one project, for the variant detected on the host."""

    variant: ComposeVariant
    project: str
    file: str
    project_dir: str

    def _base(self) -> Argv:
        head = ["docker", "compose"] if self.variant == "v2" else ["docker-compose"]
        return [*head, "--project-name", self.project, "--project-directory", self.project_dir, "--file", self.file]

    def up_base(self, services: Sequence[str] = ()) -> Argv:
        """Shared infrastructure (all of it, or `services`): create what is missing, never recreate what runs."""
        return [*self._base(), "up", "--detach", "--no-recreate", *services]

    def up_color(self) -> Argv:
        """Build and start one color's services. Never `--remove-orphans` and never `down`: in the
        project the colors share with the base, the other services are not orphans."""
        argv = [*self._base(), "up", "--detach", "--build", "--force-recreate"]
        if self.variant == "v2":
            argv.append("--wait")
        return argv

    def exec(self, service: str, argv: Sequence[str]) -> Argv:
        """Run argv in the service's running container, without a TTY and without a shell."""
        return [*self._base(), "exec", "-T", service, *argv]

    def stop(self, services: Sequence[str]) -> Argv:
        return [*self._base(), "stop", *services]

    def logs(self, tail: int) -> Argv:
        return [*self._base(), "logs", "--no-color", "--tail", str(tail)]


def git_is_checkout(app_dir: str) -> Argv:
    return ["git", "-C", app_dir, "rev-parse", "--is-inside-work-tree"]


def git_fetch(app_dir: str) -> Argv:
    return [
        "git",
        "-C",
        app_dir,
        "fetch",
        "--quiet",
        "--force",
        "--tags",
        "origin",
        "+refs/heads/*:refs/remotes/origin/*",
    ]


def git_fetch_ref(app_dir: str, ref: str) -> Argv:
    return ["git", "-C", app_dir, "fetch", "--quiet", "origin", ref]


def git_resolve(app_dir: str, candidate: str) -> Argv:
    return ["git", "-C", app_dir, "rev-parse", "--verify", "--quiet", candidate + "^{commit}"]


def ref_candidates(ref: str) -> list[str]:
    """Names to try, in order, for a ref after a fetch: the ref itself (a SHA or tag), then the remote branch."""
    return [ref, f"refs/remotes/origin/{ref}", "FETCH_HEAD"]


def git_checkout(app_dir: str, sha: str) -> Argv:
    return ["git", "-C", app_dir, "checkout", "--quiet", "--force", "--detach", sha]


def git_has_file(app_dir: str, sha: str, path: str) -> Argv:
    """Succeeds if the commit has `path` (relative to app-dir)."""
    return ["git", "-C", app_dir, "cat-file", "-e", f"{sha}:./{path}"]


def git_show_file(app_dir: str, sha: str, path: str) -> Argv:
    """A file's text at a commit (relative to app-dir)."""
    return ["git", "-C", app_dir, "show", f"{sha}:./{path}"]


def read_file(path: str) -> Argv:
    return ["cat", "--", path]


# tee with umask 022: a file the action creates on the host is never group- or world-writable,
# whatever the deploy user's umask. A constant: the path and tee's flags come as "$@".
UMASK_TEE_SCRIPT = 'umask 022 && exec tee "$@" >/dev/null'


def write_file(path: str) -> Argv:
    """Write stdin into `path` in place: same inode, so a single-file bind mount sees the change."""
    return ["sh", "-c", UMASK_TEE_SCRIPT, "sh", "--", path]


def append_file(path: str) -> Argv:
    return ["sh", "-c", UMASK_TEE_SCRIPT, "sh", "-a", "--", path]


def nginx_program(container: str, sudo: bool = False) -> Argv:
    """How nginx is called: in its container, on the host, or on the host through `sudo -n` (a
    root-owned master; sudo never prompts)."""
    if container:
        return ["docker", "exec", container, "nginx"]
    return ["sudo", "-n", "nginx"] if sudo else ["nginx"]


def nginx(container: str, *args: str, sudo: bool = False) -> Argv:
    return [*nginx_program(container, sudo), *args]


# One exec for the whole reload: the processes (as NGINX_PROCESSES_SCRIPT lists them), nginx -t and,
# only if it passes, the reload; then up to 10 s until a worker that was not there before accepts
# connections and every one that was there is shutting down (until it says so, it may still accept
# one and serve the old config); then the processes and `nginx -T`, between RELOAD_MARK lines. Exit
# status 3: the test failed, nothing was reloaded; 4: the reload signal failed. "$1" is the master's
# pid, whose workers are watched ("" in a container, where nginx is alone); nginx is called as the
# rest of "$@" (`nginx`, or `sudo -n nginx`), so only -t, -s reload and -T ever run through it. On a
# host, other nginx masters (in containers, too) show in /proc; their workers are not ours. A constant.
RELOAD_MARK = "--bluegreen-reload--"
TEST_AND_RELOAD_SCRIPT = (
    f"m=$1; shift; ps_() {{ {NGINX_PROCESSES_SCRIPT}; }}; "
    'ours() { ps_ | while read -r pid ppid title; do [ -z "$m" ] || [ "$ppid" = "$m" ] && echo "$pid $title"; '
    "done; }; "
    'workers() { ours | while read -r pid title; do case "$title" in "nginx: worker process"*) echo "$pid";; '
    "esac; done; }; "
    'ready() { ours | { n=0; o=0; while read -r pid title; do case "$title" in '
    '"nginx: worker process is shutting down"*) ;; '
    '"nginx: worker process"*) case "$before" in *" $pid "*) o=1;; *) n=1;; esac;; esac; done; '
    '[ "$n" = 1 ] && [ "$o" = 0 ]; }; }; '
    'ps_; before=" $(workers | tr "\\n" " ") "; '
    '"$@" -t >/dev/null || exit 3; "$@" -s reload || exit 4; i=0; '
    'while [ "$i" -lt 500 ]; do ready && break; i=$((i + 1)); sleep 0.02; done; '
    f'echo {RELOAD_MARK}; ps_; echo {RELOAD_MARK}; "$@" -T 2>/dev/null'
)
TEST_FAILED = 3


def nginx_test_and_reload(container: str, sudo: bool = False, master: int | None = None) -> Argv:
    if container:
        return ["docker", "exec", container, "sh", "-c", TEST_AND_RELOAD_SCRIPT, "sh", "", "nginx"]
    return ["sh", "-c", TEST_AND_RELOAD_SCRIPT, "sh", str(master or ""), *nginx_program("", sudo)]


def nginx_processes(container: str) -> Argv:
    argv = ["sh", "-c", NGINX_PROCESSES_SCRIPT]
    return ["docker", "exec", container, *argv] if container else argv


# Tries a TCP connection to each "host port" pair in "$@" (or, for "unix PATH", checks the socket)
# and prints "ok|unreachable HOST PORT" per pair, or "no-tool" if the image has none of bash
# (/dev/tcp), nc or perl. Run inside nginx's container, it sees what nginx sees: its network
# namespace, its DNS (compose service names) and its sockets. A constant: values come as "$@".
PROBE_SERVERS_SCRIPT = (
    "to=; command -v timeout >/dev/null 2>&1 && to='timeout 3'; "
    "if command -v bash >/dev/null 2>&1; then t=bash; elif command -v nc >/dev/null 2>&1; then t=nc; "
    "elif command -v perl >/dev/null 2>&1; then t=perl; else echo no-tool; exit 0; fi; "
    'while [ "$#" -ge 2 ]; do h=$1; p=$2; shift 2; '
    'if [ "$h" = unix ]; then test -S "$p"; '
    "else case $t in "
    'bash) $to bash -c \'exec 3<>"/dev/tcp/$0/$1"\' "$h" "$p" 2>/dev/null;; '
    'nc) $to nc -w 3 "$h" "$p" </dev/null >/dev/null 2>&1;; '
    "perl) perl -MIO::Socket::INET -e 'exit !IO::Socket::INET->new(PeerAddr=>$ARGV[0],PeerPort=>$ARGV[1],Timeout=>3)'"
    ' "$h" "$p";; esac; fi && r=ok || r=unreachable; echo "$r $h $p"; done'
)


def probe_servers(container: str, targets: Sequence[tuple[str, str]]) -> Argv:
    """Whether nginx could connect to each (host, port), from its own network view."""
    argv = ["sh", "-c", PROBE_SERVERS_SCRIPT, "sh", *(value for target in targets for value in target)]
    return ["docker", "exec", container, *argv] if container else argv


def container_exists(container: str) -> Argv:
    return ["docker", "inspect", "--type", "container", "--format", "{{.State.Running}}", container]


def probe_url(url: str, timeout: int) -> Argv:
    """Probe a URL from the host itself (the fallback when the host refuses port forwarding)."""
    return [
        "curl",
        "--silent",
        "--output",
        "/dev/null",
        "--write-out",
        "%{http_code}",
        "--max-time",
        str(timeout),
        "--",
        url,
    ]


def remove_file(path: str) -> Argv:
    return ["rm", "-f", "--", path]


# The action's state directory, with a .gitignore that keeps it out of the app's git status. A
# constant: the path comes as "$1".
STATE_DIR_SCRIPT = 'umask 022 && mkdir -p -- "$1" && { [ -e "$1/.gitignore" ] || echo "*" > "$1/.gitignore"; }'


def make_state_dir(path: str) -> Argv:
    return ["sh", "-c", STATE_DIR_SCRIPT, "sh", path]


def make_dirs(path: str) -> Argv:
    return ["mkdir", "-p", "--", path]


def hold_lock(lock_file: str) -> Argv:
    """Take an exclusive flock on the host and hold it while stdin stays open.

    Prints `locked` once held; exits 1 at once if another deploy holds it. The kernel drops the lock
    when the process ends: at release, when the SSH session dies, or at the host-side timeout."""
    return [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        "1",
        lock_file,
        "sh",
        "-c",
        "echo locked; exec cat >/dev/null",
    ]


# Containers that compose made from files in app-dir, under any project: how hosts set up by the
# seed's script (one directory-named project, fixed container_name) are found and adopted.
CONTAINER_FORMAT = "\t".join(
    [
        "{{.ID}}",
        "{{.Names}}",
        "{{.Status}}",
        '{{.Label "com.docker.compose.project"}}',
        '{{.Label "com.docker.compose.service"}}',
        '{{.Label "com.docker.compose.project.config_files"}}',
    ]
)


def app_containers(app_dir: str) -> Argv:
    return [
        "docker",
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project.working_dir={app_dir}",
        "--format",
        CONTAINER_FORMAT,
    ]


def stop_containers(ids: list[str], stop_timeout: int) -> Argv:
    return ["docker", "stop", "--time", str(stop_timeout), *ids]


def start_containers(ids: list[str]) -> Argv:
    return ["docker", "start", *ids]


def remove_containers(ids: list[str]) -> Argv:
    return ["docker", "rm", "--force", *ids]


def path_exists(path: str) -> Argv:
    return ["test", "-e", path]


def move(source: str, destination: str) -> Argv:
    """rename(2): the inode moves with the name."""
    return ["mv", "-f", "--", source, destination]
