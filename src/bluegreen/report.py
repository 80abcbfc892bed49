"""Reporting: the job summary, annotations, log groups and step outputs.

Workflow commands come from `workflow` (their one canonical form); github-action-utils writes the
step outputs and the job summary."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import github_action_utils as gha

from . import workflow
from .config import Color
from .health import HealthReport

if TYPE_CHECKING:
    from .canary import StepResult
    from .images import ImageRecord


@dataclass
class StepRecord:
    name: str
    title: str
    status: str = "running"
    seconds: float = 0.0
    detail: str = ""


# How a run ends, as its exit status (the CLI's and the action's): documented in the README.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNRECOVERED = 0, 1, 2, 3


@dataclass
class Report:
    ref: str
    command: str = "deploy"  # or "rollback"
    sha: str = ""
    live: Color | None = None
    target: Color | None = None
    steps: list[StepRecord] = field(default_factory=list)
    health: HealthReport | None = None
    switched: bool = False
    rolled_back: bool = False
    already_live: bool = False
    first_deploy: bool = False
    exposed: float = 0.0  # a switch made and undone: seconds from the reload until nginx served the old upstream again
    error: str = ""
    fix: str = ""
    failed_step: str = ""
    restored: list[str] = field(default_factory=list)
    host_changes: list[str] = field(default_factory=list)  # what host-changes did with hand edits
    warnings: list[str] = field(default_factory=list)
    logs: str = ""
    pre_switch: tuple[str, int, str] | None = None  # pre-switch-command: the command, its exit status, its last lines
    pruned: str = ""  # what the prune step freed
    adopted: bool = False  # a rollback to a color the action adopted: its commit is the checkout's, not verified
    journal: list[dict[str, object]] = field(default_factory=list)
    uncertain: str = ""  # why this run cannot tell what nginx serves (the lock was lost mid-switch)
    unfinished: str = ""  # why the recovery did not finish, or did not run (the lock was lost)
    images: list[ImageRecord] = field(default_factory=list)  # the target's pulled images (images.py)
    canary: list[StepResult] = field(default_factory=list)  # strategy: canary's steps, as judged
    held: int = 0  # the share a canary is held at as the run ends (a hold, a failed promote or abort)

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def exit_code(self) -> int:
        """EXIT_OK; EXIT_FAILED: failed, and the host restored; EXIT_UNRECOVERED: failed, and the
        recovery did not finish (or what nginx serves is unknown): look at the host."""
        if self.ok:
            return EXIT_OK
        return EXIT_UNRECOVERED if self.unfinished or self.uncertain else EXIT_FAILED

    @property
    def active_color(self) -> Color | None:
        if self.uncertain:
            return None
        if self.already_live:
            return self.live
        return self.target if self.serves_new else self.live

    @property
    def serves_new(self) -> bool:
        """The switch this run made stands: nginx serves the new color."""
        return self.switched and not self.rolled_back

    @property
    def deployed_ref(self) -> str:
        """What now serves because of this run: nothing for a held canary or an abort (the old color
        serves the commit it ran before)."""
        return self.sha if self.ok and not self.held and self.command != "abort" else ""

    def outputs(self) -> dict[str, str]:
        return {
            "active-color": self.active_color or "",
            "previous-color": self.live or "",
            "deployed-ref": self.deployed_ref,
            "switched": str(self.serves_new).lower(),
            "rolled-back": str(self.rolled_back).lower(),
        }

    def headline(self) -> str:
        arrow = f"{self.live or 'none'} → {self.target or '?'}"
        short = self.sha[:12] or self.ref
        if self.already_live and self.command == "abort":
            return f"### ✅ The canary of `{short}` was aborted on this host already: {self.live} serves"
        if self.already_live:
            finished = any(step.name == "stop" for step in self.steps)
            return f"### ✅ `{short}` is already live on {self.live}: " + (
                "finished the earlier switch" if finished else "nothing to redeploy"
            )
        if self.ok and self.held:
            return (
                f"### ⏸️ Canary of `{short}` held at {self.held}%: {arrow} not completed; finish it with command: "
                "promote or command: abort"
            )
        if self.command in ("promote", "abort"):
            what = "Promoted" if self.command == "promote" else "Aborted"
            if self.ok:
                done = arrow if self.command == "promote" else f"{self.live} serves again, the new color is removed"
                return f"### ✅ {what} the canary of `{short}`: {done}"
            failed = self.failed_step or "start"
            return f"### ❌ {self.command.capitalize()} of the canary of `{short}` failed at {failed}"
        if self.ok and self.first_deploy:
            return f"### ✅ First deploy of `{short}`: {self.target} serves, nginx started"
        if self.command == "rollback":
            if self.ok and self.adopted:
                return (
                    f"### ✅ Rolled back to `{short}` (the commit the checkout had when the action adopted "
                    f"{self.target}; not verified): {arrow}"
                )
            if self.ok:
                return f"### ✅ Rolled back to `{short}`: {arrow}"
            if not self.sha:
                return f"### ❌ Rollback refused: {self.live or 'nothing'} keeps serving"
            return f"### ❌ Rollback to `{short}` failed at {self.failed_step or 'start'}: {arrow} not completed"
        if self.ok:
            return f"### ✅ Deployed `{short}`: {arrow}"
        return f"### ❌ Deploy of `{short}` failed at {self.failed_step or 'start'}: {arrow} not completed"

    def summary_markdown(self) -> str:
        lines = [self.headline(), ""]
        if not self.ok:
            lines += [f"**Cause:** {self.error}", ""]
            if self.fix:
                lines += [f"**Fix:** {self.fix}", ""]
            serving = self.active_color or "unknown" + (f" ({self.uncertain})" if self.uncertain else "")
            lines += [
                f"**Serving now:** {serving}"
                + (
                    f" ({STILL_HELD if self.held and not self.unfinished else 'previous color kept'})"
                    if self.active_color and not self.serves_new
                    else ""
                ),
                "",
            ]
            if self.restored:
                lines += ["**Restored:**", *[f"- {item}" for item in self.restored], ""]
        if self.host_changes:
            lines += ["**Changes made on the host (host-changes):**", *[f"- {i}" for i in self.host_changes], ""]
        lines += ["| step | status | duration |", "| --- | --- | --- |"]
        icons = {"ok": "✅", "failed": "❌", "skipped": "⏭️", "running": "⏹️"}
        for step in self.steps:
            detail = f" ({step.detail})" if step.detail else ""
            lines.append(
                f"| {step.title}{detail} | {icons.get(step.status, step.status)} {step.status} | {step.seconds:.1f}s |"
            )
        total = sum(step.seconds for step in self.steps)
        lines += [f"| **total** | | **{total:.1f}s** |", ""]
        if self.health:
            lines += [
                f"**Health of {self.target}** (via {self.health.via})",
                "",
                "| URL | result | attempts | healthy after |",
                "| --- | --- | --- | --- |",
            ]
            for item in self.health.results:
                after = f"{item.seconds:.1f}s" if item.healthy else "—"
                lines.append(
                    f"| `{item.url}` | {'✅' if item.healthy else '❌'} {item.last} | {item.attempts} | {after} |"
                )
            lines += [*[f"> {note}" for note in self.health.notes], ""]
        if self.canary:
            lines += canary_table(self.canary, self.live, self.target)
        if self.images:
            lines += [
                f"**Images of {self.target}**",
                "",
                "| service | image | id | digest | size | from | time |",
                "| --- | --- | --- | --- | --- | --- | --- |",
            ]
            for r in self.images:
                digest = r.digest.partition("@")[2][:19] or "—"
                lines.append(
                    f"| {r.service} | `{r.image}` | `{r.id.removeprefix('sha256:')[:12]}` | `{digest}` | "
                    f"{size_text(r.size)} | {got(r)} | {r.seconds:.1f}s |"
                )
            lines.append("")
        if self.pre_switch:
            command, status, tail = self.pre_switch
            lines += [
                f"**pre-switch-command** `{command}` in {self.target}: exit {status}",
                "",
                "```",
                tail or "(no output)",
                "```",
                "",
            ]
        if self.pruned:
            lines += [f"**Freed:** {self.pruned}", ""]
        if self.warnings:
            lines += ["**Warnings:**", *[f"- {w}" for w in self.warnings], ""]
        if self.logs:
            lines += [
                f"<details><summary>Last log lines of {self.target}</summary>",
                "",
                "```",
                self.logs.rstrip(),
                "```",
                "</details>",
                "",
            ]
        if self.journal:
            lines += [
                "**Recent deploys on this host**",
                "",
                "| time | ref | switch | result |",
                "| --- | --- | --- | --- |",
            ]
            for entry in self.journal:
                lines.append(
                    f"| {entry.get('time', '')} | `{str(entry.get('ref', ''))[:12]}` | {entry.get('from') or 'none'} "
                    f"→ {entry.get('to')} | {entry.get('result')} |"
                )
            lines.append("")
        return "\n".join(lines)


STILL_HELD = "the canary still held"  # what a failed promote or abort left: the split it started from


def canary_table(steps: list[StepResult], live: Color | None, target: Color | None) -> list[str]:
    """The canary's steps: share, duration, each color's responses and 5xx (p99 where logged), verdict."""

    def p99(value: float | None) -> str:
        return f"{value * 1000:.0f} ms" if value is not None else "—"

    lines = [
        f"**Canary of {target}** (nginx's counts)",
        "",
        f"| share | duration | {target}: responses / 5xx | {live}: responses / 5xx | p99 {target} / {live} | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for step in steps:
        verdict = "✅ passed" if step.verdict == "passed" else f"❌ {step.verdict}"
        lines.append(
            f"| {step.share}% | {step.seconds:.0f}s | {step.new.responses} / {step.new.errors} | "
            f"{step.old.responses} / {step.old.errors} | {p99(step.new.p99)} / {p99(step.old.p99)} | {verdict} |"
        )
    return [*lines, ""]


def got(record: ImageRecord) -> str:
    """Where the host got an image from, for the summary."""
    if record.sent >= 0:
        return f"the runner ({size_text(record.sent)} sent)"
    return "the registry" if record.pulled else "the host (already there)"


def size_text(size: int) -> str:
    """Bytes as docker shows them: 12.3MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f}{unit}"
    return f"{size}B"


@dataclass
class FleetReport:
    """Every host's report, and the fleet's verdict: one headline, one row per host, then each host's
    own summary. A fleet of one host reports as that host does (plus hosts-json)."""

    hosts: list[tuple[str, Report]]  # (host, its report), in the input's order
    error: str = ""  # the fleet's own failure: public-url once every host switched
    on_host_failure: str = "rollback-all"
    failed_host: str = ""  # the host whose failure ended the fleet ("public-url" for the fleet's own)

    @property
    def ok(self) -> bool:
        return not self.error and all(report.ok for _, report in self.hosts)

    @property
    def exit_code(self) -> int:
        """The worst of the hosts' (the codes grow worse: EXIT_UNRECOVERED over EXIT_FAILED); the fleet's
        own failure is EXIT_FAILED."""
        return max([*(report.exit_code for _, report in self.hosts), EXIT_FAILED if self.error else EXIT_OK])

    def host_rows(self) -> list[dict[str, object]]:
        """hosts-json: each host's outputs, its booleans as JSON ones."""
        rows: list[dict[str, object]] = []
        for host, report in self.hosts:
            one = report.outputs()
            rows.append(
                {
                    "host": host,
                    "active-color": one["active-color"],
                    "deployed-ref": one["deployed-ref"],
                    "switched": report.serves_new,
                    "rolled-back": report.rolled_back,
                    "images": {r.service: r.id for r in report.images},
                }
            )
        return rows

    def outputs(self) -> dict[str, str]:
        """active-color, deployed-ref and switched describe the fleet: a color every host serves (else
        empty), the ref if the whole fleet deployed it, whether every host switched."""
        hosts_json = json.dumps(self.host_rows())
        if len(self.hosts) == 1 and not self.error:
            return {**self.hosts[0][1].outputs(), "hosts-json": hosts_json}
        reports = [report for _, report in self.hosts]
        active = {r.active_color for r in reports}
        previous = {r.live for r in reports}
        return {
            "active-color": (active.pop() or "") if len(active) == 1 else "",
            "previous-color": (previous.pop() or "") if len(previous) == 1 else "",
            "deployed-ref": reports[0].deployed_ref if self.ok and len({r.sha for r in reports}) == 1 else "",
            "switched": str(all(r.serves_new for r in reports)).lower(),
            "rolled-back": str(any(r.rolled_back for r in reports)).lower(),
            "hosts-json": hosts_json,
        }

    def headline(self) -> str:
        if len(self.hosts) == 1 and not self.error:
            return self.hosts[0][1].headline()
        reports = [report for _, report in self.hosts]
        first = reports[0]
        short = next((r.sha for r in reports if r.sha), "")[:12] or first.ref
        what = {"rollback": "Rollback", "promote": "Promote", "abort": "Abort"}.get(first.command, "Deploy")
        count = f"{len(self.hosts)} hosts"
        if self.ok and any(r.held for r in reports):
            return (
                f"### ⏸️ Canary of `{short}` held at {first.held}% on {count}: finish it with command: promote or abort"
            )
        if self.ok and first.command in ("promote", "abort"):
            done = "Promoted" if first.command == "promote" else "Aborted"
            arrows = {f"{r.live or 'none'} → {r.active_color or '?'}" for r in reports}
            return f"### ✅ {done} the canary of `{short}` on {count}: {', '.join(sorted(arrows))}"
        if self.ok:
            arrows = {f"{r.live or 'none'} → {r.active_color or '?'}" for r in reports}
            done = "Rolled back" if first.command == "rollback" else "Deployed"
            return f"### ✅ {done} `{short}` on {count}: {', '.join(sorted(arrows))}"
        serving = {r.active_color for r in reports}
        holds = [bool(r.held and not r.unfinished) for r in reports]
        if first.command in ("promote", "abort") and all(holds):
            after = f"every host still holds the canary ({first.live} with {first.held}% to {first.target})"
        elif first.command in ("promote", "abort"):
            after = "the fleet is split: " + ", ".join(
                f"{h} still holds the canary" if held else f"{h} serves {r.active_color or 'an unknown color'}"
                for (h, r), held in zip(self.hosts, holds, strict=True)
            )
        elif len(serving) == 1 and not any(r.serves_new or r.uncertain for r in reports):
            after = f"every host serves what it served before ({serving.pop() or 'nothing'})"
        else:
            after = "the fleet is split: " + ", ".join(
                f"{h} serves {r.active_color or ('unknown' if r.uncertain else 'nothing')}" for h, r in self.hosts
            )
        return f"### ❌ {what} of `{short}` on {count} failed ({self.failed_host or 'a host'}): {after}"

    def summary_markdown(self) -> str:
        if len(self.hosts) == 1 and not self.error:
            return self.hosts[0][1].summary_markdown()
        lines = [self.headline(), ""]
        if self.error:
            lines += [f"**Cause:** {self.error}", ""]
        lines += [
            f"on-host-failure: {self.on_host_failure}",
            "",
            "| host | serves | before | ref | switched | result |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for host, report in self.hosts:
            result = "✅ ok" if report.ok else f"❌ {report.failed_step or 'failed'}"
            switched = "switched back" if report.rolled_back else ("yes" if report.switched else "no")
            lines.append(
                f"| {host} | {report.active_color or '—'} | {report.live or '—'} | `{report.sha[:12] or report.ref}` "
                f"| {switched} | {result} |"
            )
        lines.append("")
        for host, report in self.hosts:
            lines += [f"#### {host}", "", report.summary_markdown().replace("### ", "##### ", 1), ""]
        return "\n".join(lines)


def printable(text: str) -> str:
    """Text any UTF-8 stream can take: what is not UTF-8 (bytes the environment or a file decoded as
    lone surrogates) as backslash escapes, so that printing it never raises."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Reporter:
    """Where a deploy reports to. Every text it prints takes one way out, `emit`: scrubbed of secrets,
    then guarded (`workflow.guarded`), so that nothing from the repository or the host (a service name,
    a ref, a file's content, command output) can act as a workflow command. Only the workflow commands
    the action itself formats (`workflow`) are printed as commands."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        self.secrets = sorted({printable(s) for s in secret_values if s}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        text = printable(text)
        for value in self.secrets:
            text = text.replace(value, "***")
        return text

    def emit(self, text: str, *, always_guard: bool = False) -> None:
        for line in workflow.guarded(self.scrub(text), always_guard):
            self.write(line)

    def write(self, line: str) -> None:
        print(line, flush=True)

    def summary(self, markdown: str) -> None:
        """Text for the job summary (the CLI prints it)."""
        self.emit(markdown)

    def info(self, message: str) -> None:
        self.emit(message)

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        yield

    def step_done(self, step: StepRecord) -> None:
        detail = f" ({step.detail})" if step.detail else ""
        self.emit(f"{step.title}: {step.status} in {step.seconds:.1f}s{detail}")

    def host_output(self, label: str, text: str) -> None:
        """Text captured on the host, always between stop-commands markers."""
        if text.strip():
            self.emit(f"{label}:")
            self.emit(text.rstrip(), always_guard=True)

    def warning(self, message: str, title: str) -> None:
        self.emit(f"warning: {title}: {message}")

    def error(self, message: str, title: str) -> None:
        self.emit(f"error: {title}: {message}")

    def finish(self, report: FleetReport) -> None:
        self.emit(report.summary_markdown())


class HostReporter(Reporter):
    """One host's reports in a fleet: every line and annotation names the host, through the fleet's
    reporter. Hosts deploy at once, so their steps are not log groups (groups cannot interleave)."""

    def __init__(self, parent: Reporter, host: str) -> None:
        super().__init__([])
        self.parent = parent
        self.host = host
        self.secrets = parent.secrets

    def write(self, line: str) -> None:
        self.parent.write(line)

    def info(self, message: str) -> None:
        self.parent.info(f"[{self.host}] {message}")

    def step_done(self, step: StepRecord) -> None:
        detail = f" ({step.detail})" if step.detail else ""
        self.parent.info(f"[{self.host}] {step.title}: {step.status} in {step.seconds:.1f}s{detail}")

    def host_output(self, label: str, text: str) -> None:
        self.parent.host_output(f"[{self.host}] {label}", text)

    def warning(self, message: str, title: str) -> None:
        self.parent.warning(message, f"{title} ({self.host})")

    def error(self, message: str, title: str) -> None:
        self.parent.error(message, f"{title} ({self.host})")


class GitHubReporter(Reporter):
    """Workflow commands on stdout (masks first), outputs to GITHUB_OUTPUT, the job summary to GITHUB_STEP_SUMMARY."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        super().__init__(secret_values)
        for value in self.secrets:
            self.write(workflow.add_mask(value))

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        self.write(workflow.group(self.scrub(title)))
        try:
            yield
        finally:
            self.write(workflow.endgroup())

    def warning(self, message: str, title: str) -> None:
        self.write(workflow.warning(self.scrub(message), self.scrub(title)))

    def error(self, message: str, title: str) -> None:
        self.write(workflow.error(self.scrub(message), self.scrub(title)))

    def summary(self, markdown: str) -> None:
        self.emit(markdown)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            gha.append_job_summary(self.scrub(markdown))

    def finish(self, report: FleetReport) -> None:
        if os.environ.get("GITHUB_OUTPUT"):
            for name, value in report.outputs().items():
                gha.set_output(name, value)
        if os.environ.get("GITHUB_STEP_SUMMARY"):
            gha.append_job_summary(self.scrub(report.summary_markdown()))
        else:
            self.emit(report.summary_markdown())


class ConsoleReporter(Reporter):
    """For the CLI: on a terminal, a step list with a spinner and durations; plain lines otherwise."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(
        self, secret_values: Iterable[str], stream: TextIO | None = None, errors: TextIO | None = None
    ) -> None:
        super().__init__(secret_values)
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr  # errors and warnings: a terminal user's pipe keeps them apart
        self.tty = self.stream.isatty()
        self.color = self.tty and not os.environ.get("NO_COLOR")  # https://no-color.org
        self._lock = threading.Lock()
        self._spinning = ""
        self._to = self.stream

    def write(self, line: str) -> None:
        with self._lock:
            if self._spinning:
                self.stream.write("\r\033[2K")
                self.stream.flush()
            self._to.write(line + "\n")
            self._to.flush()

    def to_errors(self, text: str) -> None:
        self._to = self.errors
        try:
            self.emit(text)
        finally:
            self._to = self.stream

    def warning(self, message: str, title: str) -> None:
        self.to_errors(f"warning: {title}: {message}")

    def error(self, message: str, title: str) -> None:
        self.to_errors(f"error: {title}: {message}")

    def info(self, message: str) -> None:
        self.emit(("  " if self.tty else "") + message)

    def host_output(self, label: str, text: str) -> None:
        """On a terminal, guarded only where a line could act as a command (in a CI log it then is)."""
        if text.strip():
            self.emit(f"{label}:\n{text.rstrip()}")

    @contextmanager
    def group(self, title: str) -> Iterator[None]:
        if not self.tty:
            yield
            return
        done = threading.Event()

        def spin() -> None:
            frame = 0
            while not done.wait(0.1):
                with self._lock:
                    self.stream.write(f"\r\033[2K{self.FRAMES[frame % len(self.FRAMES)]} {self.scrub(title)}")
                    self.stream.flush()
                frame += 1

        self._spinning = title
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        try:
            yield
        finally:
            done.set()
            spinner.join()
            with self._lock:
                self.stream.write("\r\033[2K")
            self._spinning = ""

    def step_done(self, step: StepRecord) -> None:
        if not self.tty:
            super().step_done(step)
            return
        mark = {"ok": self.paint("32", "✓"), "failed": self.paint("31", "✗")}.get(step.status, "·")
        detail = " " + self.paint("2", f"({step.detail})") if step.detail else ""
        self.emit(f"{mark} {step.title}{detail} {self.paint('2', f'{step.seconds:.1f}s')}")

    def paint(self, code: str, text: str) -> str:
        """ANSI color on a terminal, unless NO_COLOR is set."""
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def finish(self, report: FleetReport) -> None:
        self.emit("")
        self.emit(report.headline().lstrip("# "))
        if report.error:
            self.emit(f"cause: {report.error}")
        for host, one in report.hosts:
            where = f"{host}: " if len(report.hosts) > 1 else ""
            if not one.ok:
                self.emit(f"{where}cause: {one.error}" + (f"\n{where}fix:   {one.fix}" if one.fix else ""))
            for item in one.restored:
                self.emit(f"{where}restored: {item}")
        for name, value in report.outputs().items():
            self.emit(f"{name}={value}")
