"""Container entry point: GitHub's runner starts this as PID 1 with the inputs in INPUT_* variables."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bluegreen.config import ConfigError, inputs_from_env, load_config, secret_values, with_settings_file
from bluegreen.fleet import Fleet, deploy_with_signals
from bluegreen.lock import RunInfo
from bluegreen.plan import plan_fleet
from bluegreen.report import EXIT_USAGE, GitHubReporter


def main() -> int:
    raw = inputs_from_env(os.environ)
    reporter = GitHubReporter(secret_values(raw))
    try:
        config = load_config(with_settings_file(raw, Path(os.environ.get("GITHUB_WORKSPACE", "."))))
    except ConfigError as err:
        reporter.error(str(err), f"Invalid input: {err.input}")
        return EXIT_USAGE
    if config.plan:
        return asyncio.run(plan_fleet(config, reporter))
    report = asyncio.run(deploy_with_signals(Fleet(config, reporter, RunInfo.from_env(os.environ))))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
