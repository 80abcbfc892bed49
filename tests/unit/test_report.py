from __future__ import annotations

import io
import re
import sys

import pytest
from lab.runner_log import runner_commands

from bluegreen.report import ConsoleReporter, FleetReport, GitHubReporter, HostReporter, Report, Reporter, StepRecord


def test_success_outputs_and_headline() -> None:
    report = Report(ref="main", sha="a" * 40, live="green", target="blue", switched=True)
    report.steps.append(StepRecord("build", "Build and start blue", "ok", 2.5))
    assert report.outputs() == {
        "active-color": "blue",
        "previous-color": "green",
        "deployed-ref": "a" * 40,
        "switched": "true",
        "rolled-back": "false",
    }
    text = report.summary_markdown()
    assert "green → blue" in text and "| Build and start blue | ✅ ok | 2.5s |" in text


def test_rolled_back_failure_keeps_the_previous_color() -> None:
    report = Report(
        ref="main",
        sha="b" * 40,
        live="green",
        target="blue",
        switched=True,
        rolled_back=True,
        error="public-url failed",
        failed_step="Switch nginx to blue",
    )
    report.restored.append("nginx upstream switched back to green and reloaded")
    assert report.outputs() == {
        "active-color": "green",
        "previous-color": "green",
        "deployed-ref": "",
        "switched": "false",
        "rolled-back": "true",
    }
    text = report.summary_markdown()
    assert (
        "failed at Switch nginx to blue" in text
        and "switched back to green" in text
        and "**Serving now:** green" in text
    )


def test_scrub_masks_secrets() -> None:
    reporter = Reporter(["s3cret", "KEYLINE"])
    assert reporter.scrub("x s3cret y KEYLINE") == "x *** y ***"


def test_text_that_is_not_utf8_prints_escaped_and_its_secret_stays_masked(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "caf\udce9s3cret"
    reporter = GitHubReporter([secret])
    reporter.error(f"it failed on {secret} and \udcff", "Deploy failed")
    out = capsys.readouterr().out
    assert "s3cret" not in out.replace("::add-mask::caf\\udce9s3cret", "")
    assert "it failed on *** and \\udcff" in out


def test_rerun_of_a_live_commit() -> None:
    report = Report(ref="main", sha="c" * 40, live="blue", target="blue", already_live=True)
    assert report.headline().endswith("is already live on blue: nothing to redeploy")
    assert report.outputs()["active-color"] == "blue" and report.outputs()["switched"] == "false"
    report.steps.append(StepRecord("stop", "Finish the earlier switch: stop green", "ok", 1.0))
    assert report.headline().endswith("is already live on blue: finished the earlier switch")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_reporter_on_a_terminal_shows_a_step_list() -> None:
    stream = FakeTerminal()
    out = ConsoleReporter(["s3cret"], stream)
    with out.group("Build and start blue"):
        out.info("building s3cret")
    out.step_done(StepRecord("build", "Build and start blue", "ok", 1.25, "2 services"))
    out.finish(FleetReport([("h", Report(ref="main", sha="a" * 40, live="green", target="blue", switched=True))]))
    text = stream.getvalue()
    assert "✓" in text and "Build and start blue" in text and "1.2s" in text and "(2 services)" in text
    assert "s3cret" not in text and "building ***" in text
    assert "Deployed" in text and "active-color=blue" in text


def test_console_reporter_writes_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    out = ConsoleReporter([], stream)
    with out.group("Health-check blue"):
        pass
    out.step_done(StepRecord("health", "Health-check blue", "failed", 3.0))
    assert stream.getvalue() == "Health-check blue: failed in 3.0s\n"


def test_a_rollback_says_so_and_a_refused_one_names_what_keeps_serving() -> None:
    done = Report(ref="", command="rollback", sha="c" * 40, live="blue", target="green", switched=True)
    assert done.headline() == f"### ✅ Rolled back to `{'c' * 12}`: blue → green"
    assert done.outputs()["deployed-ref"] == "c" * 40 and done.outputs()["active-color"] == "green"
    refused = Report(ref="", command="rollback", live="blue", target="green", error="nothing to roll back to")
    assert refused.headline() == "### ❌ Rollback refused: blue keeps serving"
    assert refused.outputs()["switched"] == "false" and refused.outputs()["active-color"] == "blue"


def test_the_summary_holds_the_last_lines_of_pre_switch_command() -> None:
    report = Report(ref="main", sha="d" * 40, live="green", target="blue", switched=True)
    report.pre_switch = ("backend_blue python manage.py migrate", 0, "Applying app.0002... OK")
    text = report.summary_markdown()
    assert "**pre-switch-command** `backend_blue python manage.py migrate` in blue: exit 0" in text
    assert "Applying app.0002... OK" in text


# -- no line the action prints can act as a workflow command ------------------------------------

HOSTILE = [
    "svc\n::set-output name=deployed-ref::$(id)",
    "x\r::add-mask::visible",
    "  ::warning title=forged::pwned",
    "text ##[set-output name=switched;]true",
    "\n::stop-commands::pwn\n::error::after stop",
    "\x1c::notice::file separator",
    "tab\t##[group]legacy",
]


def test_no_text_from_outside_reaches_the_log_as_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    """Every printer, fed a newline (or CR, or the legacy form) plus a command: the runner acts only on
    what the action itself formats, and on the stop-commands guards around the hostile text."""
    github = GitHubReporter([])
    for out in (github, HostReporter(github, "web-1")):
        for text in HOSTILE:
            out.info(f"service {text}")
            out.host_output(f"output of {text}", text)
            out.step_done(StepRecord("x", f"Run in {text}", "ok", 1.0, text))
            with out.group(f"Build {text}"):
                out.warning(text, f"title {text}")
                out.error(text, text)
    report = Report(ref="main", error=HOSTILE[0], fix=HOSTILE[1], live="green", target="blue")
    report.warnings.extend(HOSTILE)
    report.restored.append(HOSTILE[4])
    for fleet in (FleetReport([("web-1", report)]), FleetReport([("web-1", report), ("web-2", report)])):
        github.finish(fleet)  # no GITHUB_STEP_SUMMARY: the summary goes to the log
        ConsoleReporter([], sys.stdout).finish(fleet)
    for text in HOSTILE:
        ConsoleReporter([], sys.stdout).info(text)
    log = capsys.readouterr().out
    acted = [(name, data) for name, data, _ in runner_commands(log)]
    names = {name for name, _ in acted}
    assert names <= {"group", "endgroup", "warning", "error", "stop-commands", "resume"}, acted
    assert not [data for name, data in acted if name in ("set-output", "add-mask", "notice")]
    stops = [data for name, data in acted if name == "stop-commands"]
    assert stops and all(re.fullmatch(r"[0-9a-f]{32}", token) for token in stops)  # only the action's own tokens
    assert ("resume", stops[-1]) in acted  # and each block ended: commands work again after it


def test_plain_text_is_printed_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    GitHubReporter([]).info("compose: docker compose (v2)")
    assert capsys.readouterr().out == "compose: docker compose (v2)\n"


def test_the_exit_status_says_ok_failed_and_restored_or_recovery_not_finished() -> None:
    ok = Report(ref="main", sha="a" * 40, live="green", target="blue", switched=True)
    restored = Report(ref="main", error="health failed", restored=["blue containers removed"])
    unfinished = Report(ref="main", error="health failed", unfinished="docker rm failed")
    unknown = Report(ref="main", error="lost the deploy lock", uncertain="nginx may serve blue")
    assert [r.exit_code for r in (ok, restored, unfinished, unknown)] == [0, 1, 3, 3]
    assert FleetReport([("web-1", ok), ("web-2", restored), ("web-3", unfinished)]).exit_code == 3
    assert FleetReport([("web-1", ok), ("web-2", restored)]).exit_code == 1
    assert FleetReport([("web-1", ok), ("web-2", ok)], error="public-url failed").exit_code == 1
