"""A second real Actions runner: nektos/act runs a workflow that `uses: ./`, as Gitea's and
Forgejo's runners (built on act) would. act reads only canonical workflow commands."""

from __future__ import annotations

import pytest
from lab import lab

from .conftest import Load
from .test_deploy import served

AFTER = """\
echo "outputs: active=${{ steps.deploy.outputs.active-color }} previous=${{ steps.deploy.outputs.previous-color }}"
echo "outputs: switched=${{ steps.deploy.outputs.switched }} ref=${{ steps.deploy.outputs.deployed-ref }}"
if grep -q 'Deployed' "$GITHUB_STEP_SUMMARY"; then echo "summary: written"; fi
"""


@pytest.mark.parametrize("app", [("v2", "bridge")], indirect=True, ids=["v2-bridge"])
def test_act_runs_the_action_with_no_secret_in_its_log(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha = app.version("v2")
    inputs = lab.lab_inputs(ssh_host, app, sha)

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_with_act(inputs, AFTER)

    assert run.status == 0, run.log
    assert "outputs: active=blue previous=green" in run.log and f"outputs: switched=true ref={sha}" in run.log
    assert "summary: written" in run.log
    assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
    assert load.failures == [] and len(load.statuses) > 10
    key_lines = [line.strip() for line in ssh_host.key.splitlines() if line.strip() and not line.startswith("-----")]
    leaked = [line for line in run.log.splitlines() if any(secret in line for secret in key_lines)]
    assert not leaked, leaked[:3]
