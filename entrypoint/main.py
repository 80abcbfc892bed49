"""Container entry point: GitHub's runner starts this as PID 1 with the inputs in INPUT_* variables."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from bluegreen.config import ConfigError, inputs_from_env, load_config, secret_values
from bluegreen.deploy import Deployer, RunInfo
from bluegreen.report import Reporter


async def _deploy(deployer: Deployer) -> bool:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # The runner cancels with SIGINT, then SIGTERM 7.5 s later: the first one starts the
        # recovery, later ones must not interrupt it.
        loop.add_signal_handler(sig, lambda: task.cancel() if not task.cancelling() else None)
    report = await deployer.run()
    deployer.out.finish(report)
    return report.ok


def main() -> int:
    raw = inputs_from_env(os.environ)
    reporter = Reporter(secret_values(raw))
    try:
        config = load_config(raw)
    except ConfigError as err:
        reporter.error(f"{err.problem}. Fix: {err.fix}", f"Invalid input: {err.input}")
        return 1
    deployer = Deployer(config, reporter, RunInfo.from_env(os.environ))
    return 0 if asyncio.run(_deploy(deployer)) else 1


if __name__ == "__main__":
    sys.exit(main())
