from __future__ import annotations

from bluegreen.report import Report, Reporter, StepRecord


def test_success_outputs_and_headline() -> None:
    report = Report(ref="main", sha="a" * 40, live="green", target="blue", switched=True)
    report.steps.append(StepRecord("build", "Build and start blue", "ok", 2.5))
    assert report.outputs() == {"active-color": "blue", "previous-color": "green", "deployed-ref": "a" * 40, "switched": "true", "rolled-back": "false"}
    text = report.summary_markdown()
    assert "green → blue" in text and "| Build and start blue | ✅ ok | 2.5s |" in text


def test_rolled_back_failure_keeps_the_previous_color() -> None:
    report = Report(ref="main", sha="b" * 40, live="green", target="blue", switched=True, rolled_back=True, error="public-url failed", failed_step="Switch nginx to blue")
    report.restored.append("nginx upstream switched back to green and reloaded")
    assert report.outputs() == {"active-color": "green", "previous-color": "green", "deployed-ref": "", "switched": "false", "rolled-back": "true"}
    text = report.summary_markdown()
    assert "failed at Switch nginx to blue" in text and "switched back to green" in text and "**Serving now:** green" in text


def test_scrub_masks_secrets() -> None:
    reporter = Reporter(["s3cret", "KEYLINE"])
    assert reporter.scrub("x s3cret y KEYLINE") == "x *** y ***"


def test_rerun_of_a_live_commit() -> None:
    report = Report(ref="main", sha="c" * 40, live="blue", target="blue", already_live=True)
    assert report.headline().endswith("is already live on blue: nothing to redeploy")
    assert report.outputs()["active-color"] == "blue" and report.outputs()["switched"] == "false"
    report.steps.append(StepRecord("stop", "Finish the earlier switch: stop green", "ok", 1.0))
    assert report.headline().endswith("is already live on blue: finished the earlier switch")
