"""A fake host for the step modules' unit tests: files in a dict, a scripted nginx in a container,
and any other command answered by a handler or with success. Records every argv it ran."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from bluegreen import commands
from bluegreen.remote import CommandFailed, Result
from bluegreen.stacks import ComposeFile, Container

Handler = Callable[[list[str], str | None], Result]
OK = Result(0, "", "")


@dataclass
class FakeHeld:
    line: str
    released: bool = False

    beats: int = 0
    ended: bool = False  # the holder let go on the host (its beats stopped reaching it)

    async def first_line(self) -> str:
        return self.line

    def beat(self) -> None:
        self.beats += 1

    def exited(self) -> bool:
        return self.ended

    def release(self) -> None:
        self.released = True


@dataclass
class FakeHost:
    files: dict[str, str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    handlers: list[tuple[list[str], Handler]] = field(default_factory=list)
    held: list[FakeHeld] = field(default_factory=list)
    lock_lines: list[str] = field(default_factory=list)  # what each `start` of the lock prints first
    delays: list[tuple[list[str], float]] = field(default_factory=list)  # commands that take this long

    holder: commands.Holder | None = None
    lapse: Callable[[], str] | None = None

    def tie_to(self, holder: commands.Holder | None, lapse: Callable[[], str] | None = None) -> None:
        self.holder, self.lapse = holder, lapse

    def slow(self, prefix: list[str], seconds: float) -> None:
        self.delays.append((prefix, seconds))

    def on(self, prefix: list[str], handler: Handler) -> None:
        self.handlers.insert(0, (prefix, handler))

    def ran(self, *prefix: str) -> list[list[str]]:
        return [argv for argv in self.calls if argv[: len(prefix)] == list(prefix)]

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: int = 120,
        check: bool = True,
        hold_stdin: bool = False,
    ) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        for prefix, seconds in self.delays:
            if argv[: len(prefix)] == prefix:
                await asyncio.sleep(seconds)
        result = self.answer(argv, input)
        if check and not result.ok:
            raise CommandFailed(argv, result.status, result.stdout, result.stderr)
        return result

    async def start(self, argv: Sequence[str]) -> FakeHeld:
        self.calls.append(list(argv))
        held = FakeHeld(self.lock_lines.pop(0) if self.lock_lines else "locked 4242 1000")
        self.held.append(held)
        return held

    def answer(self, argv: list[str], input: str | None) -> Result:
        for prefix, handler in self.handlers:
            if argv[: len(prefix)] == prefix:
                return handler(argv, input)
        path = argv[-1]
        if argv[:2] == ["cat", "--"]:
            return (
                Result(0, self.files[path], "") if path in self.files else Result(1, "", f"cat: {path}: No such file")
            )
        if argv[:3] in (["sh", "-c", commands.UMASK_TEE_SCRIPT], ["sh", "-c", commands.WRITE_STATE_SCRIPT]):
            self.files[argv[4]] = input or ""
            return OK
        if argv[:3] == ["sh", "-c", commands.APPEND_LINE_SCRIPT]:
            before = self.files.get(path, "")
            self.files[path] = before + ("\n" if before and not before.endswith("\n") else "") + (input or "")
            return OK
        if argv[:3] == ["rm", "-f", "--"]:
            self.files.pop(path, None)
            return OK
        if argv[:3] == ["mv", "-fT", "--"]:
            self.files[argv[4]] = self.files.pop(argv[3])
            return OK
        if argv[:2] == ["test", "-e"]:
            return OK if path in self.files else Result(1, "", "")
        if argv[:1] == ["tail"]:
            lines = self.files.get(path, "").splitlines()[-int(argv[2]) :]
            return Result(0, "".join(line + "\n" for line in lines), "")
        return OK


class FakeNginx:
    """nginx in container `web`: `-T` shows the target file on disk (as the real one does), a reload
    starts a new worker generation, `-t` rejects an upstream with an empty server."""

    def __init__(self, host: FakeHost, target: str) -> None:
        self.host = host
        self.target = target
        self.generation = 1
        self.reloads = 0
        exec_ = ["docker", "exec", "web"]
        host.on([*exec_, "nginx", "-T"], self.dump)
        host.on([*exec_, "sh", "-c", commands.NGINX_PROCESSES_SCRIPT], self.processes)
        host.on([*exec_, "sh", "-c", commands.TEST_AND_RELOAD_SCRIPT], self.test_and_reload)
        host.on(commands.container_exists("web")[:6], lambda argv, _: Result(0, "true\n", ""))

    def workers(self) -> set[int]:
        return {self.generation * 10 + 1, self.generation * 10 + 2}

    def test(self, argv: list[str], _: str | None) -> Result:
        if "server ;" in self.host.files.get(self.target, ""):
            return Result(1, "", 'nginx: [emerg] invalid number of arguments in "server" directive')
        return Result(0, "", "nginx: configuration file /etc/nginx/nginx.conf test is successful")

    def dump(self, argv: list[str], _: str | None) -> Result:
        text = f"# configuration file {self.target}:\n{self.host.files.get(self.target, '')}\n"
        return Result(0, "# configuration file /etc/nginx/nginx.conf:\nhttp { include conf.d/*.conf; }\n\n" + text, "")

    def reload(self, argv: list[str], _: str | None) -> Result:
        self.reloads += 1
        self.generation += 1  # the old workers exit at once: nothing in flight
        return OK

    def test_and_reload(self, argv: list[str], _: str | None) -> Result:
        listing = self.processes(argv, None).stdout
        tested = self.test(argv, None)
        if not tested.ok:
            return Result(3, listing, tested.stderr)
        self.reload(argv, None)
        mark = commands.RELOAD_MARK + "\n"
        return Result(0, listing + mark + self.processes(argv, None).stdout + mark + self.dump(argv, None).stdout, "")

    def processes(self, argv: list[str], _: str | None) -> Result:
        lines = ["1 0 nginx: master process nginx"] + [
            f"{pid} 1 nginx: worker process" for pid in sorted(self.workers())
        ]
        return Result(0, "\n".join(lines) + "\n", "")


CANARY_ADDRESSES = {"backend_blue": "10.0.0.2", "backend_green": "10.0.0.1"}


class FakeCanaryLog:
    """The canary's log in nginx's container `web`: each upstream name resolves to one address, and
    every read of the log finds `per_read` new responses of each color; `failing`'s first `errors`
    of each read are 500s."""

    def __init__(self, host: FakeHost, per_read: int = 10, failing: str = "", errors: int = 0) -> None:
        self.per_read, self.failing, self.errors = per_read, failing, errors
        self.reads = 0
        host.on(commands.resolve_names("web", [])[:6], self.resolve)
        host.on(commands.file_size("web", "")[:6], lambda argv, _: Result(0, "0\n", ""))
        host.on(commands.read_from("web", "", 0)[:4], self.read)

    def resolve(self, argv: list[str], _: str | None) -> Result:
        return Result(0, "".join(f"{name} {CANARY_ADDRESSES[name]}\n" for name in argv[7:]), "")

    def read(self, argv: list[str], _: str | None) -> Result:
        self.reads += 1
        lines = [
            f"{address}:8000|{500 if name == f'backend_{self.failing}' and i < self.errors else 200}|0.010\n"
            for name, address in CANARY_ADDRESSES.items()
            for i in range(self.per_read)
        ]
        return Result(0, "".join(lines), "")


# -- a whole app on a fake host, for the orchestrator's unit tests --------------------------------


@dataclass
class FakeConn:
    closed: bool = False

    def is_closed(self) -> bool:
        return self.closed


@dataclass
class FakeRemote(FakeHost):
    """A FakeHost that also stands in for a Remote: no port forwarding (probes run as curl on the host)."""

    conn: FakeConn = field(default_factory=FakeConn)
    forwarding: bool = False

    async def can_forward(self, host: str, port: int) -> bool:
        return self.forwarding

    async def close(self) -> None:
        self.conn.closed = True


class FakeRepo:
    """The app's clone on a fake host: commits (sha -> {path: text}), origin's refs as just fetched
    (full name -> sha), local branches, and HEAD. Answers the git commands the action runs; a
    checkout writes the commit's files into the work tree (host.files)."""

    def __init__(
        self,
        host: FakeHost,
        app: str,
        commits: dict[str, dict[str, str]],
        refs: dict[str, str],
        head: str,
    ) -> None:
        self.host, self.app, self.commits, self.refs, self.head = host, app, commits, refs, head
        self.checkouts: list[str] = []
        git = ["git", "-C", app]
        host.on([*git, "rev-parse", "--is-inside-work-tree"], lambda argv, _: Result(0, "true\n", ""))
        host.on([*git, "rev-parse", "--verify", "--quiet"], self.rev_parse)
        host.on([*git, "cat-file", "--batch"], self.cat_file)
        host.on([*git, "diff", "--cached", "-R"], self.added)
        host.on([*git, "ls-tree"], self.ls_tree)
        host.on([*git, "checkout"], self.checkout)
        host.on(["sh", "-c", commands.IN_THE_WAY_SCRIPT], self.in_the_way)
        for path, text in commits[head].items():
            host.files[f"{app}/{path}"] = text

    def rev_parse(self, argv: list[str], _: str | None) -> Result:
        name = argv[-1].removesuffix("^{commit}")
        sha = self.head if name == "HEAD" else self.refs.get(name) or (name if name in self.commits else "")
        if not sha and len(name) >= 7:
            sha = next((s for s in self.commits if s.startswith(name)), "")
        return Result(0, sha + "\n", "") if sha else Result(1, "", "")

    def cat_file(self, argv: list[str], stdin: str | None) -> Result:
        out = []
        for spec in (stdin or "").splitlines():
            sha, _, path = spec.partition(":./")
            text = self.commits.get(sha, {}).get(path)
            out.append(f"{spec} missing\n" if text is None else f"{'f' * 40} blob {len(text.encode())}\n{text}\n")
        return Result(0, "".join(out), "")

    def added(self, argv: list[str], _: str | None) -> Result:
        new = [p for p in self.commits[argv[-1]] if p not in self.commits[self.head]]
        return Result(0, "".join(p + "\0" for p in new), "")

    def ls_tree(self, argv: list[str], _: str | None) -> Result:
        sha, under = argv[-3], argv[-1]
        paths = [p for p in self.commits[sha] if p == under or p.startswith(under + "/")]
        return Result(0, "".join(p + "\0" for p in paths), "")

    def checkout(self, argv: list[str], _: str | None) -> Result:
        sha = argv[-1]
        for path in self.commits[self.head]:
            self.host.files.pop(f"{self.app}/{path}", None)
        for path, text in self.commits[sha].items():
            self.host.files[f"{self.app}/{path}"] = text
        self.head = sha
        self.checkouts.append(sha)
        return OK

    def in_the_way(self, argv: list[str], stdin: str | None) -> Result:
        found = []
        for item in (stdin or "").split("\0"):
            kind, _, path = item.partition(":")
            full = f"{self.app}/{path}"
            if kind == "f" and full in self.host.files:
                found.append(item)
        return Result(0, "".join(p + "\0" for p in found), "")


def status(c: Container) -> str:
    return "Up 1 minute" if c.running else "Exited (0)"


class FakeDocker:
    """dockerd and Compose v2 on a fake host: compose up makes a container per service of its file
    (read from the work tree), building a new image for each service with a build (its tag moves);
    docker stop/rm/start act by id, docker ps lists them all; images are removed only when no
    container uses them, never forced."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.containers: list[Container] = []
        self.image_of: dict[str, str] = {}  # container id -> image id
        self.tags: dict[str, str] = {}  # tag -> image id
        self.images: set[str] = set()
        self.made = 0
        host.on(["docker", "ps"], self.ps)
        host.on(["docker", "compose"], self.compose)
        host.on(["docker", "stop"], lambda argv, _: self.each(argv, lambda c: replace(c, running=False)))
        host.on(["docker", "start"], lambda argv, _: self.each(argv, lambda c: replace(c, running=True)))
        host.on(["docker", "rm"], lambda argv, _: self.each(argv, lambda c: None))
        host.on(["docker", "inspect", "--type", "container"], self.inspect_containers)
        host.on(["docker", "image", "inspect"], self.inspect_images)
        host.on(["docker", "image", "rm"], self.remove_images)
        host.on(["docker", "builder", "prune"], lambda argv, _: Result(0, "Total reclaimed space: 0B\n", ""))

    def add(self, container: Container, image: str) -> None:
        self.containers.append(container)
        self.image_of[container.id] = image
        self.images.add(image)

    def ps(self, argv: list[str], _: str | None) -> Result:
        lines = [
            "\t".join([c.id, c.name, status(c), c.project, c.service, c.working_dir, "False"]) for c in self.containers
        ]
        return Result(0, "".join(line + "\n" for line in lines), "")

    def each(self, argv: list[str], change: Callable[[Container], Container | None]) -> Result:
        ids = set(argv)
        kept = []
        for c in self.containers:
            changed = change(c) if c.id in ids else c
            if changed is not None:
                kept.append(changed)
        self.containers = kept
        return OK

    def inspect_containers(self, argv: list[str], _: str | None) -> Result:
        ids = argv[6:]
        return Result(0, "".join(f"{c} {self.image_of[c]}\n" for c in ids if c in self.image_of), "")

    def inspect_images(self, argv: list[str], _: str | None) -> Result:
        fmt, names = argv[4], argv[5:]
        found = [self.tags.get(n, n) for n in names if self.tags.get(n, n) in self.images]
        if fmt == "{{.Id}}":
            return Result(0 if len(found) == len(names) else 1, "".join(i + "\n" for i in found), "")
        lines = [f"{i} {sum(1 for t in self.tags.values() if t == i)}" for i in found]
        return Result(0, "".join(line + "\n" for line in lines), "")

    def remove_images(self, argv: list[str], _: str | None) -> Result:
        used = {self.image_of[c.id] for c in self.containers}
        out, err = [], []
        for image in argv[3:]:
            if image in used:
                err.append(f"Error response from daemon: conflict: unable to delete {image} (image is being used)")
            elif image in self.images:
                self.images.discard(image)
                out.append(f"Deleted: {image}")
        return Result(1 if err else 0, "".join(line + "\n" for line in out), "".join(line + "\n" for line in err))

    def compose(self, argv: list[str], _: str | None) -> Result:
        if argv[2:3] == ["version"]:
            return OK
        project, folder, file = (
            argv[argv.index(flag) + 1] for flag in ("--project-name", "--project-directory", "--file")
        )
        verb = argv[argv.index("--file") + 2]
        compose_file = ComposeFile.parse(self.host.files[file]) if file in self.host.files else ComposeFile()
        named = [a for a in argv[argv.index("--file") + 3 :] if not a.startswith("-")]
        if verb == "build":
            for service in named:
                self.made += 1
                self.tags[compose_file.built[service] or f"{project}-{service}"] = image = f"sha256:{self.made:064x}"
                self.images.add(image)
        if verb == "up":
            for service in named or compose_file.services:
                self.containers = [c for c in self.containers if (c.project, c.service) != (project, service)]
                self.made += 1
                tag = compose_file.built.get(service) or f"{project}-{service}"
                image = self.tags.get(tag, "sha256:" + "b" * 64)
                cid = f"id{self.made}"
                self.add(Container(cid, f"{project}-{service}-1", True, project, service, folder), image)
        return OK
