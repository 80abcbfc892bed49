"""A fake host for the step modules' unit tests: files in a dict, a scripted nginx in a container,
and any other command answered by a handler or with success. Records every argv it ran."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bluegreen import commands
from bluegreen.remote import CommandFailed, Result

Handler = Callable[[list[str], str | None], Result]
OK = Result(0, "", "")


@dataclass
class FakeHeld:
    line: str
    released: bool = False

    async def first_line(self) -> str:
        return self.line

    def release(self) -> None:
        self.released = True


@dataclass
class FakeHost:
    files: dict[str, str] = field(default_factory=dict)
    calls: list[list[str]] = field(default_factory=list)
    handlers: list[tuple[list[str], Handler]] = field(default_factory=list)
    held: list[FakeHeld] = field(default_factory=list)
    lock_lines: list[str] = field(default_factory=list)  # what each `start` of the lock prints first

    def on(self, prefix: list[str], handler: Handler) -> None:
        self.handlers.insert(0, (prefix, handler))

    def ran(self, *prefix: str) -> list[list[str]]:
        return [argv for argv in self.calls if argv[: len(prefix)] == list(prefix)]

    async def run(
        self, argv: Sequence[str], *, input: str | None = None, timeout: int = 120, check: bool = True
    ) -> Result:
        argv = list(argv)
        self.calls.append(argv)
        result = self.answer(argv, input)
        if check and not result.ok:
            raise CommandFailed(argv, result.status, result.stdout, result.stderr)
        return result

    async def start(self, argv: Sequence[str], timeout: int) -> FakeHeld:
        self.calls.append(list(argv))
        held = FakeHeld(self.lock_lines.pop(0) if self.lock_lines else "locked")
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
        if argv[:3] == ["sh", "-c", commands.UMASK_TEE_SCRIPT]:
            appending = "-a" in argv
            self.files[path] = (self.files.get(path, "") if appending else "") + (input or "")
            return OK
        if argv[:3] == ["rm", "-f", "--"]:
            self.files.pop(path, None)
            return OK
        if argv[:3] == ["mv", "-f", "--"]:
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
        host.on(["docker", "inspect"], lambda argv, _: Result(0, "true\n", ""))

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
