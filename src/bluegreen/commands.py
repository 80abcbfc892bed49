"""Pure command builders: each returns an argv list (or the shell line that runs it). No I/O here.

Every remote command is an argv; `shell_line` quotes it with shlex so that no value ever reaches the
remote shell unquoted, and wraps it in `timeout` so the host itself enforces the time limit.
"""

from __future__ import annotations

import posixpath
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
# pipe, so it never keeps the channel open. A constant: the command comes as "$@".
TIED_TO_SESSION_SCRIPT = (
    'exec 3<&0; "$@" & c=$!; (cat <&3; kill -TERM "$c") >/dev/null 2>&1 & w=$!; '
    'wait "$c"; s=$?; kill "$w" 2>/dev/null; exit "$s"'
)

# The start time of process "$1" (field 22 of /proc/PID/stat, after the command name in parentheses,
# which may hold spaces), in clock ticks since boot: with the pid, it names one process for good (a
# pid can be reused, a pid and its start time cannot). Empty if there is no such process.
START_TIME_FUNCTION = (
    'st() { s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0; s=${s##*) }; set -- $s; echo "${20}"; }; '
)

# The deploy lock's holder (see HOLD_LOCK_SCRIPT) and the commands of the run that holds it.
#
# A command of the run is `flock -o -s <busy> sh -c GUARD_SCRIPT sh <holder file> <token> CMD...`:
# with a shared flock on the busy file held for as long as CMD runs, it checks, in the same shell and
# before CMD does anything, that the holder file still names this run's holder (its pid and start
# time: the token) and that this very process still lives. Otherwise it exits LOCK_LOST_STATUS with
# LOCK_LOST_MARK, and CMD never starts. A constant: the file, the token and CMD come as "$@".
LOCK_LOST_STATUS = 97
LOCK_LOST_MARK = "bluegreen: this run no longer holds the deploy lock"
GUARD_SCRIPT = (
    START_TIME_FUNCTION
    + "f=$1; t=$2; shift 2; p=${t%% *}; "
    + 'if [ "$(cat -- "$f" 2>/dev/null)" != "$t" ] || [ "$p $(st "$p")" != "$t" ]; then '
    + f'echo "{LOCK_LOST_MARK}" >&2; exit {LOCK_LOST_STATUS}; fi; exec "$@"'
)


@dataclass(frozen=True)
class Holder:
    """The deploy lock's holder on the host, as HOLD_LOCK_SCRIPT names it: the run's commands are
    guarded by it (GUARD_SCRIPT)."""

    state_dir: str
    token: str  # "<pid> <start time>"

    @property
    def file(self) -> str:
        return posixpath.join(self.state_dir, "holder")

    @property
    def busy(self) -> str:
        return posixpath.join(self.state_dir, "busy")


def shell_line(
    argv: Sequence[str], timeout: int | None = None, tied: bool = False, holder: Holder | None = None
) -> str:
    """The quoted command line for an SSH exec request: with a host-side timeout; if `tied` (only
    for commands that take no stdin), killed when the session ends; with `holder`, run only while
    that holder holds the deploy lock, which waits for it before it lets go (GUARD_SCRIPT)."""
    if timeout is not None:
        argv = ["timeout", "--kill-after=5", str(timeout), *argv]
    if tied:
        argv = ["sh", "-c", TIED_TO_SESSION_SCRIPT, "sh", *argv]
    if holder is not None:
        argv = ["flock", "-o", "-s", holder.busy, "sh", "-c", GUARD_SCRIPT, "sh", holder.file, holder.token, *argv]
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


# Runs "$@" with the variables of the sh file "$1" (envfile.shell_text: export lines, values quoted
# with shlex) in its environment, for ${NAME} in a compose file. The values never reach an argv. A
# constant: the file and the command come as "$@".
LOAD_ENV_SCRIPT = '. "$1" && shift && exec "$@"'


@dataclass(frozen=True)
class Compose:
    """Compose commands for one project, for the variant detected on the host. With `environ` (the
    path of a color's envfile.shell_text file), compose runs with those variables set."""

    variant: ComposeVariant
    project: str
    file: str
    project_dir: str
    environ: str = ""

    def _base(self) -> Argv:
        head = ["docker", "compose"] if self.variant == "v2" else ["docker-compose"]
        loader = ["sh", "-c", LOAD_ENV_SCRIPT, "sh", self.environ] if self.environ else []
        return [
            *loader,
            *head,
            "--project-name",
            self.project,
            "--project-directory",
            self.project_dir,
            "--file",
            self.file,
        ]

    def up_base(self, services: Sequence[str] = ()) -> Argv:
        """Shared infrastructure (all of it, or `services`): create what is missing, never recreate what runs."""
        return [*self._base(), "up", "--detach", "--no-recreate", *services]

    def build(self, services: Sequence[str]) -> Argv:
        """Build `services`; on v1 in parallel (v2 builds them in parallel unless one depends_on another)."""
        return [*self._base(), "build", *(["--parallel"] if self.variant == "v1" else []), *services]

    def up_color(self) -> Argv:
        """Start one color's services from fresh containers, from the images `build` made (v2 waits
        for their own healthchecks too). Never `--remove-orphans` and never `down`: in the project the
        colors share with the base, the other services are not orphans."""
        argv = [*self._base(), "up", "--detach", "--force-recreate", "--no-build"]
        return [*argv, "--wait"] if self.variant == "v2" else argv

    def exec(self, service: str, argv: Sequence[str]) -> Argv:
        """Run argv in the service's running container, without a TTY and without a shell."""
        return [*self._base(), "exec", "-T", service, *argv]

    def stop(self, services: Sequence[str]) -> Argv:
        return [*self._base(), "stop", *services]

    def logs(self, tail: int) -> Argv:
        return [*self._base(), "logs", "--no-color", "--tail", str(tail)]

    def config(self) -> Argv:
        """The file as compose reads it, variables filled in (for the images it names)."""
        return [*self._base(), "config"]


def real_path(path: str) -> Argv:
    """The path as the host resolves it, through every symlink (compose may record this one)."""
    return ["realpath", "--", path]


# Each path "$@" as the host resolves it, each ended by a NUL; an empty one for a path that no longer
# exists. A constant: the paths come as "$@".
REAL_PATHS_SCRIPT = 'for p; do realpath -ez -- "$p" 2>/dev/null || printf "\\0"; done'


def real_paths(paths: Sequence[str]) -> Argv:
    return ["sh", "-c", REAL_PATHS_SCRIPT, "sh", *paths]


def git_is_checkout(app_dir: str) -> Argv:
    return ["git", "-C", app_dir, "rev-parse", "--is-inside-work-tree"]


def git_head(app_dir: str) -> Argv:
    """The commit the checkout has now (fails on a repository with no commit)."""
    return ["git", "-C", app_dir, "rev-parse", "--verify", "--quiet", "HEAD^{commit}"]


def git_fetch(app_dir: str) -> Argv:
    """Every branch of origin into refs/remotes/origin/* and every tag, moved ones too; those deleted
    on origin are pruned, so a name never resolves to a commit origin no longer has."""
    return [
        "git",
        "-C",
        app_dir,
        "fetch",
        "--quiet",
        "--force",
        "--prune",
        "origin",
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
    ]


def git_fetch_ref(app_dir: str, ref: str) -> Argv:
    """One ref or commit that the branches and tags do not bring (a pull request head, a SHA)."""
    return ["git", "-C", app_dir, "fetch", "--quiet", "origin", ref]


def git_ls_remote(app_dir: str, names: Sequence[str]) -> Argv:
    """What origin's refs `names` point at now, `<sha>\t<name>` a line (a tag's `<name>^{}` line is
    its commit); reads origin, changes nothing in the clone."""
    return ["git", "-C", app_dir, "ls-remote", "--quiet", "origin", *names]


def git_resolve(app_dir: str, name: str) -> Argv:
    """The commit `name` (a full ref name, a SHA or FETCH_HEAD) points at; fails if none."""
    return ["git", "-C", app_dir, "rev-parse", "--verify", "--quiet", name + "^{commit}"]


def git_checkout(app_dir: str, sha: str) -> Argv:
    return ["git", "-C", app_dir, "checkout", "--quiet", "--force", "--detach", sha]


def git_changes(app_dir: str) -> Argv:
    """Tracked files changed on the host, staged or not (untracked ones are another check's):
    NUL-separated `XY PATH` entries, a rename or copy followed by its source path."""
    return [  # --no-optional-locks: status would rewrite the index to refresh it; a read changes nothing
        "git", "-C", app_dir, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=no",
        "--no-renames",
        "--ignore-submodules=all",  # a checkout never touches a submodule's tree, so nothing there is lost
    ]  # fmt: skip


def git_blobs_at(app_dir: str, sha: str, paths: Sequence[str]) -> Argv:
    """`<mode> blob <id>\\t<path>` entries, NUL-separated, for `paths` at `sha`."""
    return ["git", "-C", app_dir, "--literal-pathspecs", "ls-tree", "-z", sha, "--", *paths]


# What git would store for each path "$@" of the work tree, a line each: `l <blob id>` for a symlink
# (its target, which is what git stores for a link), `x <blob id>` for an executable file, `f <blob id>`
# for another file, an empty line where there is neither. A constant: the paths come as "$@".
HASH_FILES_SCRIPT = (
    'cd -- "$1" && shift && for p; do '
    'if [ -L "$p" ]; then printf "l "; printf %s "$(readlink -- "$p")" | git hash-object --stdin || echo; '
    'elif [ -f "$p" ]; then if [ -x "$p" ]; then printf "x "; else printf "f "; fi; '
    'git hash-object -- "$p" 2>/dev/null || echo; '
    "else echo; fi; done"
)


def git_hash_files(app_dir: str, paths: Sequence[str]) -> Argv:
    return ["sh", "-c", HASH_FILES_SCRIPT, "sh", app_dir, *paths]


def git_stash(app_dir: str, message: str, paths: Sequence[str]) -> Argv:
    """Stash the changes of `paths` (staged and not), under `message`; untracked files stay put."""
    identity = ["-c", "user.name=bluegreen", "-c", "user.email=bluegreen@localhost"]
    # --literal-pathspecs: a path is the path, never a glob (a file named `nginx/*.conf` must not
    # take the live upstream file with it)
    return [
        "git", "-C", app_dir, "--literal-pathspecs", *identity, "stash", "push", "--quiet", "--message", message,
        "--", *paths,
    ]  # fmt: skip


def git_stash_top(app_dir: str) -> Argv:
    """The newest stash's commit, after git_stash."""
    return ["git", "-C", app_dir, "rev-parse", "--verify", "--quiet", "refs/stash"]


def git_read_blobs(app_dir: str) -> Argv:
    """`git cat-file --batch`: stdin names `<sha>:./<path>`, a line each; stdout has each blob (a
    symlink followed inside the repository), or why there is none (sync.parse_blobs reads it)."""
    return ["git", "-C", app_dir, "cat-file", "--batch", "--follow-symlinks"]


def git_tracked(app_dir: str, paths: Sequence[str]) -> Argv:
    """Of `paths`, the ones the index tracks, and the tracked files below those that are folders."""
    return ["git", "-C", app_dir, "ls-files", "-z", "--", *paths]


def git_untracked(app_dir: str, paths: Sequence[str]) -> Argv:
    """The files at or below `paths` that the index does not track, ignored ones included."""
    return ["git", "-C", app_dir, "ls-files", "-z", "--others", "--", *paths]


def git_added_paths(app_dir: str, sha: str) -> Argv:
    """The paths `sha` tracks that the index does not, NUL-separated: what a checkout of it creates."""
    return ["git", "-C", app_dir, "diff", "--cached", "-R", "--name-only", "-z", "--no-renames", "--diff-filter=A", sha]


def git_tracked_under(app_dir: str, sha: str, path: str) -> Argv:
    """The paths `sha` tracks at or below `path`, NUL-separated."""
    return ["git", "-C", app_dir, "ls-tree", "-r", "-z", "--name-only", sha, "--", path]


# Reads NUL-separated "f:PATH" and "d:PATH" items on stdin, paths relative to "$1", and prints, NUL-
# separated, the items in the way of a checkout: an f: path that exists in any form (file, folder,
# symlink); a d: path (a folder the checkout needs) that exists as anything but a real folder. A
# constant: the paths come on stdin.
IN_THE_WAY_SCRIPT = (
    'cd -- "$1" || exit 2; exec xargs -0 -r sh -c \''
    "for a do p=${a#?:}; case $a in "
    'f:*) if [ -e "$p" ] || [ -L "$p" ]; then printf "%s\\0" "$a"; fi;; '
    'd:*) if [ -L "$p" ] || { [ -e "$p" ] && [ ! -d "$p" ]; }; then printf "%s\\0" "$a"; fi;; '
    "esac; done' sh"
)


def paths_in_the_way(app_dir: str) -> Argv:
    return ["sh", "-c", IN_THE_WAY_SCRIPT, "sh", app_dir]


def read_file(path: str) -> Argv:
    return ["cat", "--", path]


# tee with umask 022: a file the action creates on the host is never group- or world-writable,
# whatever the deploy user's umask. A constant: the path comes as "$1".
UMASK_TEE_SCRIPT = 'umask 022 && exec tee -- "$1" >/dev/null'


def write_file(path: str) -> Argv:
    """Write stdin into `path` in place: same inode, so a single-file bind mount sees the change.
    For the upstream target only: the action's own state goes through write_state."""
    return ["sh", "-c", UMASK_TEE_SCRIPT, "sh", path]


# The action's state files are replaced, never written through: stdin goes to a new file beside "$1",
# which is then renamed over it, so a symlink at "$1" (one a commit put there) is replaced, not
# followed. Its mode is "$2" (0644, or 0600 for the app's env). A constant: path and mode come as
# "$1" and "$2".
WRITE_STATE_SCRIPT = (
    'umask 077 && t=$(mktemp -- "$1.XXXXXX") && '
    '{ cat > "$t" && chmod "$2" -- "$t" && mv -fT -- "$t" "$1" || { s=$?; rm -f -- "$t"; exit "$s"; }; }'
)


def write_state(path: str, mode: str = "0644") -> Argv:
    return ["sh", "-c", WRITE_STATE_SCRIPT, "sh", path, mode]


# Appends stdin to "$1" as a line of its own: a newline first where a torn write (a connection lost
# mid-append) left the file without one, so the next record is never glued onto it. Refuses a
# symlink at "$1" (exit 3). umask 022. A constant: the path comes as "$1".
APPEND_LINE_SCRIPT = (
    'if [ -L "$1" ]; then echo "$1 is a symlink; the action never writes through one" >&2; exit 3; fi; '
    'umask 022 && { if [ -s "$1" ] && [ -n "$(tail -c 1 -- "$1")" ]; then echo; fi; cat; } >> "$1"'
)


def append_line(path: str) -> Argv:
    return ["sh", "-c", APPEND_LINE_SCRIPT, "sh", path]


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
    return _in_nginx(container, ["sh", "-c", PROBE_SERVERS_SCRIPT, "sh", *(v for target in targets for v in target)])


def _in_nginx(container: str, argv: Argv) -> Argv:
    """`argv` where nginx is: in its container, or on the host."""
    return ["docker", "exec", container, *argv] if container else argv


# Each name's addresses as nginx's resolver (the libc's) gives them, "name address" per line; "no-tool"
# if there is no getent. A constant: the names come as "$@".
RESOLVE_NAMES_SCRIPT = (
    "command -v getent >/dev/null 2>&1 || { echo no-tool; exit 0; }; "
    'for n do getent ahosts "$n" | while read -r a rest; do echo "$n $a"; done; done'
)


def resolve_names(container: str, names: Sequence[str]) -> Argv:
    """The addresses each upstream server name resolves to, from nginx's own view (the canary's count)."""
    return _in_nginx(container, ["sh", "-c", RESOLVE_NAMES_SCRIPT, "sh", *names])


def file_size(container: str, path: str) -> Argv:
    return _in_nginx(container, ["sh", "-c", 'wc -c < "$1" 2>/dev/null || echo 0', "sh", path])


def read_from(container: str, path: str, offset: int) -> Argv:
    """A file from byte `offset` on (nothing if it does not exist yet)."""
    return _in_nginx(container, ["tail", "-c", f"+{offset + 1}", "--", path])


def remove_in_nginx(container: str, path: str) -> Argv:
    return _in_nginx(container, remove_file(path))


def container_exists(container: str) -> Argv:
    return ["docker", "inspect", "--type", "container", "--format", "{{.State.Running}}", container]


def probe_url(url: str, timeout: int) -> Argv:
    """Probe a URL from the host itself (the fallback when the host refuses port forwarding): as the
    port forward's probe does, TLS unverified (the host's own ports, whose certificate names the
    site) and no redirect followed."""
    return [
        "curl",
        "--silent",
        "--insecure",
        "--proto",
        "=http,https",
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


# The action's state directory, with a .gitignore that keeps it out of the app's git status. It must
# be a folder of its own, and nothing in it a symlink (exit 3 otherwise): the lock, the journal and the
# marker are never opened through a link a commit put there. A constant: the path comes as "$1".
STATE_DIR_SCRIPT = (
    'd=$1; if [ -L "$d" ] || { [ -e "$d" ] && [ ! -d "$d" ]; }; then '
    'echo "$d is a symlink or a file, not the action\'s own folder" >&2; exit 3; fi; '
    'umask 022 && mkdir -p -- "$d" || exit 1; '
    'for f in "$d"/* "$d"/.[!.]*; do if [ -L "$f" ]; then echo "$f is a symlink" >&2; exit 3; fi; done; '
    '[ -e "$d/.gitignore" ] || echo "*" > "$d/.gitignore"'
)


NOT_OURS = 3  # STATE_DIR_SCRIPT's (and APPEND_LINE_SCRIPT's) exit status for a symlink where state goes


def make_state_dir(path: str) -> Argv:
    return ["sh", "-c", STATE_DIR_SCRIPT, "sh", path]


def make_dirs(path: str) -> Argv:
    return ["mkdir", "-p", "--", path]


# Holds the deploy lock (an flock on "$1/lock", taken by hold_lock) while the action's beats keep
# coming: a line on stdin at least every "$2" seconds (config.LOCK_SILENCE_SECONDS). It names itself
# in "$1/holder" ("<pid> <start time>", the token the run's commands check, GUARD_SCRIPT) and prints
# `locked <token>`. It lets go at EOF (the action released it, or its SSH session ended) and when the
# beats stop (a runner that vanished or was paused): first it removes its name, so no further command
# of the run starts, then it waits until every command of the run that did start has ended (their
# shared flocks on "$1/busy"), and only then exits, and the kernel drops the lock. So no command of a
# run ever runs beside the next holder's. A holder killed outright (OOM, an admin's kill) cannot wait
# so: a new holder takes the lock only if no command of an earlier run still runs (busy is free),
# else it exits 1 as if the lock were held. No clock ends it while the action lives. A constant.
HOLD_LOCK_SCRIPT = (
    START_TIME_FUNCTION
    + 'd=$1; flock -n "$d/busy" true || exit 1; me="$$ $(st $$)"; '
    + 'printf "%s\\n" "$me" > "$d/holder.$$" && mv -fT -- "$d/holder.$$" "$d/holder" || exit 1; '
    + 'echo "locked $me"; while timeout "$2" sh -c "read -r _"; do :; done; '
    + '[ "$(cat -- "$d/holder" 2>/dev/null)" = "$me" ] && rm -f -- "$d/holder"; exec flock "$d/busy" true'
)


def hold_lock(state_dir: str, silence: int) -> Argv:
    """Take an exclusive flock on <state_dir>/lock and hold it while the action lives (HOLD_LOCK_SCRIPT).
    Prints `locked <pid> <start time>` once held; exits 1 at once if another deploy holds it."""
    return [
        "flock",
        "--nonblock",
        "--conflict-exit-code",
        "1",
        posixpath.join(state_dir, "lock"),
        "sh",
        "-c",
        HOLD_LOCK_SCRIPT,
        "sh",
        state_dir,
        str(silence),
    ]


# Whether the deploy lock is held, from its holder's name (HOLD_LOCK_SCRIPT): "held <pid> <start
# time>" if that process still lives, else "free". Reads only (no lock is taken, no file made).
LOCK_STATE_SCRIPT = (
    START_TIME_FUNCTION
    + 't=$(cat -- "$1/holder" 2>/dev/null); p=${t%% *}; '
    + 'if [ -n "$p" ] && [ "$p $(st "$p")" = "$t" ]; then echo "held $t"; '
    # no live holder named, yet the lock or the busy file is locked (/proc/locks names a locked file by
    # its device, as major:minor in hex, and inode): a holder letting go, which waits for its run's last
    # commands, or commands of a holder killed outright
    + "else for f in lock busy; do s=$(stat -c '%d %i' -- \"$1/$f\" 2>/dev/null) || continue; "
    + 'd=${s% *}; k=$(printf "%02x:%02x:%s" $(((d >> 8) & 4095)) $(((d & 255) | ((d >> 12) & 1048320))) "${s#* }"); '
    + 'grep -q " $k " /proc/locks && { echo "held letting-go"; exit 0; }; done; echo free; fi'
)


def lock_state(state_dir: str) -> Argv:
    return ["sh", "-c", LOCK_STATE_SCRIPT, "sh", state_dir]


# Every container compose made, with what tells whose it is (stacks.Layout): its project and service
# labels, its project's working directory, and whether `compose run` made it (a one-off).
CONTAINER_FORMAT = "\t".join(
    [
        "{{.ID}}",
        "{{.Names}}",
        "{{.Status}}",
        '{{.Label "com.docker.compose.project"}}',
        '{{.Label "com.docker.compose.service"}}',
        '{{.Label "com.docker.compose.project.working_dir"}}',
        '{{.Label "com.docker.compose.oneoff"}}',
    ]
)


def compose_containers() -> Argv:
    return [
        "docker",
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        CONTAINER_FORMAT,
    ]


def stop_containers(ids: list[str], stop_timeout: int) -> Argv:
    return ["docker", "stop", "--time", str(stop_timeout), *ids]


def start_containers(ids: list[str]) -> Argv:
    return ["docker", "start", *ids]


def remove_containers(ids: list[str]) -> Argv:
    return ["docker", "rm", "--force", *ids]


def container_images(ids: Sequence[str]) -> Argv:
    """`<container id> <image id>` per container."""
    return ["docker", "inspect", "--type", "container", "--format", "{{.Id}} {{.Image}}", *ids]


def image_ids(names: Sequence[str]) -> Argv:
    """The image id each name (or id) is, a line each; names with no image are left out (exit 1)."""
    return ["docker", "image", "inspect", "--format", "{{.Id}}", *names]


def image_facts(ids: Sequence[str]) -> Argv:
    """`<id> <number of tags>` per image."""
    return ["docker", "image", "inspect", "--format", "{{.Id}} {{len .RepoTags}}", *ids]


def remove_images(ids: Sequence[str]) -> Argv:
    """Never forced: docker refuses an image a container (even a stopped one) uses."""
    return ["docker", "image", "rm", *ids]


BUILD_CACHE_AGE = "168h"  # build cache unused this long is removed after a deploy (prune: true)


def prune_build_cache() -> Argv:
    """BuildKit's cache that no build has used for a week; host-wide, since docker keeps no
    per-project cache (see the README)."""
    return ["docker", "builder", "prune", "--force", "--filter", f"until={BUILD_CACHE_AGE}"]


def path_exists(path: str) -> Argv:
    return ["test", "-e", path]


def move(source: str, destination: str) -> Argv:
    """rename(2): the inode moves with the name; a symlink at `destination` is replaced, not followed."""
    return ["mv", "-fT", "--", source, destination]


# -- images from a registry (images.py) -----------------------------------------------------------

PULL_LOGIN_FAILED = "bluegreen: registry login failed"
PULL_FAILED = "bluegreen: pull failed:"
PULL_MISSING = "bluegreen: not on the host:"

PULL_DONE = "bluegreen-pulled"  # stdout: `bluegreen-pulled <tag> <digest>` for each image pulled

# Gets the colors' images as pull says. Its first line of stdin is the registry password (empty for
# no login); then "$1" the policy (always, missing, never), "$2" the registry ("" for Docker Hub),
# "$3" the user ("" for no login), then pairs of what to pull and the name to give it (the fleet's
# digest for a tag, then that tag; or the tag twice). The rest of stdin ties it to the SSH session:
# its end (the run cancelled, the connection gone) stops the pulls, as TIED_TO_SESSION_SCRIPT does.
#
# The login happens at the first pull from the registry, into a fresh DOCKER_CONFIG directory
# (mktemp: mode 0700) holding only that login (`auths` set first, so docker never hands it to a
# credential helper), used only for pulls from that registry (the deploy user's own config, logins
# and context stay for the rest), removed when the script ends, however it ends: a signal, a closed
# pipe (SIGPIPE is ignored) or its time limit; only a SIGKILL leaves it. The password reaches
# `docker login` through a pipe from the shell's printf, never an argv. A constant: the values come
# as "$@", the password on stdin.
PULL_SCRIPT = (
    "IFS= read -r pw || :; policy=$1; registry=$2; user=$3; shift 3; exec 3<&0; "
    # is "$1" on the registry the login is for?
    'ours() { f=${1%%/*}; if [ -n "$registry" ]; then [ "$f" = "$registry" ] && [ "$f" != "$1" ]; return; fi; '
    '[ "$f" = "$1" ] && return 0; case "$f" in docker.io|index.docker.io) return 0;; *.*|*:*|localhost) return 1;; '
    "esac; return 0; }; "
    'login() { [ -n "$cfg" ] && return 0; if [ -z "${DOCKER_HOST:-}" ]; then '
    "DOCKER_HOST=$(docker context inspect --format '{{.Endpoints.docker.Host}}' 2>/dev/null) || DOCKER_HOST=; "
    "export DOCKER_HOST; fi; "
    'cfg=$(mktemp -d "${TMPDIR:-/tmp}/bluegreen-login.XXXXXX") || exit 1; '
    'printf \'{"auths": {"%s": {}}}\\n\' "${registry:-https://index.docker.io/v1/}" > "$cfg/config.json" || exit 1; '
    'if [ -n "$registry" ]; then out=$(printf "%s" "$pw" | docker --config "$cfg" login --username "$user" '
    '--password-stdin "$registry" 2>&1); else out=$(printf "%s" "$pw" | docker --config "$cfg" login '
    '--username "$user" --password-stdin 2>&1); fi || '
    f'{{ printf "%s\\n" "$out" >&2; echo "{PULL_LOGIN_FAILED}" >&2; exit 4; }}; }}; '
    # the cleanup ignores further signals (timeout sends its own TERM too), so rm is never cut short
    "main() { cfg=; trap '' PIPE; trap 'trap \"\" HUP INT TERM; rm -rf -- \"$cfg\"' EXIT; "
    "trap 'trap \"\" HUP INT TERM; exit 143' HUP INT TERM; "
    'while [ "$#" -ge 2 ]; do ref=$1; tag=$2; shift 2; '
    'if [ "$policy" != always ] && docker image inspect -- "$tag" >/dev/null 2>&1; then continue; fi; '
    f'if [ "$policy" = never ]; then echo "{PULL_MISSING} $tag" >&2; exit 6; fi; '
    'if [ -n "$user" ] && ours "$ref"; then login; out=$(docker --config "$cfg" pull -- "$ref" 2>&1); '
    'else out=$(docker pull -- "$ref" 2>&1); fi || '
    f'{{ printf "%s\\n" "$out" >&2; echo "{PULL_FAILED} $ref" >&2; exit 5; }}; '
    "dg=$(printf '%s\\n' \"$out\" | sed -n 's/^Digest: //p' | tail -n 1); "
    f'echo "{PULL_DONE} $tag $dg"; '
    'if [ "$ref" != "$tag" ]; then docker tag "$ref" "$tag" || exit 1; fi; done; }; '
    # the end of stdin stops every process of the command (its group); this shell waits for main's
    # cleanup, whatever signal comes
    'main "$@" & c=$!; (cat <&3 >/dev/null; kill -TERM 0) 2>/dev/null & w=$!; '
    'trap \'\' HUP INT TERM; wait "$c"; s=$?; kill "$w" 2>/dev/null; exit "$s"'
)


def pull_images(policy: str, registry: str, user: str, pairs: Sequence[tuple[str, str]]) -> Argv:
    """Pull each (what, as) pair as PULL_SCRIPT does; its stdin: the password line (empty for
    none), then held open for as long as it runs (remote.Remote.run's hold_stdin)."""
    return ["sh", "-c", PULL_SCRIPT, "sh", policy, registry, user, *(word for pair in pairs for word in pair)]


def parse_pulled(stdout: str) -> dict[str, str]:
    """PULL_SCRIPT's report: tag -> the digest the registry served for it ("" if unknown)."""
    out = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) in (2, 3) and fields[0] == PULL_DONE:
            out[fields[1]] = fields[2] if len(fields) == 3 else ""
    return out


def untag(names: Sequence[str]) -> Argv:
    """Remove image names; an image that keeps another name stays."""
    return ["docker", "image", "rm", *names]


def server_platform() -> Argv:
    """The host's dockerd's os/architecture, as an image's config names it (linux/amd64)."""
    return ["docker", "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"]


IMAGE_RECORD_FORMAT = "{{.Id}}\t{{.Size}}\t{{json .RepoDigests}}"


def image_records(names: Sequence[str]) -> Argv:
    """`<id>\\t<size>\\t<repo digests as JSON>` per image name, in order; a missing one fails."""
    return ["docker", "image", "inspect", "--format", IMAGE_RECORD_FORMAT, *names]
