"""The error a deploy step raises: what failed, how to fix it, and the host's output if there was any."""

from __future__ import annotations

from collections.abc import Sequence

SHOWN = 10  # items an error names before "and N more"


class DeployError(RuntimeError):
    def __init__(self, message: str, fix: str = "", output: str = "", what: str = "") -> None:
        self.fix = fix
        self.output = output  # what the failing host command printed, shown between stop-commands markers
        self.what = what
        super().__init__(message)


class LockLost(DeployError):
    """This run no longer holds the deploy lock (or may not): it changes nothing more on the host."""

    def __init__(self, app_dir: str, reason: str) -> None:
        super().__init__(
            f"lost the deploy lock on {app_dir}: {reason}; another deploy may own the host; nothing more was changed",
            "rerun the job: a rerun deploys the same commit and resumes from any state; keep the runner from "
            "pausing mid-deploy (a suspended VM or laptop), and check the network between runner and host",
        )
        self.reason = reason


class FleetStopped(DeployError):
    """This host may not switch (`switched=False`), or must switch back: another host (`failed`)
    failed first (`cause`). The message of a host that switches back is written after its recovery,
    from what happened (deploy.Deployer.after_switch_back)."""

    def __init__(self, cause: str, failed: str, host: str, *, switched: bool, why: str = "") -> None:
        self.cause, self.failed, self.host, self.switched = cause, failed, host, switched
        self.why = why  # why a switched host goes back: "on-host-failure is rollback-all, so " or its own host-url
        what = f"{why}{host} switches back" if switched else f"{host} did not switch"
        super().__init__(f"{cause}; {what}", f"fix what failed on {failed} and rerun the job")


def describe(err: BaseException) -> str:
    """An unexpected error as its type and message, never its repr: a repr can hold the whole object
    it failed on (an env file, a key), escaped so that no mask matches it. Printing goes through the
    reporter, which scrubs it and escapes what is not UTF-8 (report.printable)."""
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def first_few(items: Sequence[str]) -> str:
    """What an error names: the first SHOWN items, and how many more there are."""
    more = len(items) - SHOWN
    return ", ".join(items[:SHOWN]) + (f" and {more} more" if more > 0 else "")
