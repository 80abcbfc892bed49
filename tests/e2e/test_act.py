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
if grep -qE 'Deployed|Rolled back' "$GITHUB_STEP_SUMMARY"; then echo "summary: written"; fi
"""


@pytest.mark.parametrize("app", [("v2", "bridge")], indirect=True, ids=["v2-bridge"])
def test_act_runs_a_deploy_with_pre_switch_command_then_a_rollback_with_no_secret_in_its_log(
    action_image: str, ssh_host: lab.SshHost, app: lab.LabApp
) -> None:
    app.bootstrap("green")
    sha2 = app.version("v2")
    assert lab.run_action(lab.lab_inputs(ssh_host, app, sha2)).status == 0  # blue v2; green kept
    sha3 = app.version("v3")
    deploy = lab.lab_inputs(ssh_host, app, sha3, pre_switch_command="backend_{color} echo migrating {color}")
    rollback = lab.lab_inputs(ssh_host, app, "", command="rollback")
    key_lines = [line.strip() for line in ssh_host.key.splitlines() if line.strip() and not line.startswith("-----")]

    with Load(app.public_url("/api/v1/")) as load:
        run = lab.run_with_act(deploy, AFTER)
        assert run.status == 0, run.log
        assert "outputs: active=green previous=blue" in run.log and f"outputs: switched=true ref={sha3}" in run.log
        assert "summary: written" in run.log and "migrating green" in run.log
        assert served(app) == {"role": "backend", "color": "green", "version": "v3"}
        logs = [run.log]

        run = lab.run_with_act(rollback, AFTER)
        assert run.status == 0, run.log
        assert "outputs: active=blue previous=green" in run.log and f"outputs: switched=true ref={sha2}" in run.log
        assert "summary: written" in run.log
        assert served(app) == {"role": "backend", "color": "blue", "version": "v2"}
        logs.append(run.log)
    assert load.failures == [] and len(load.statuses) > 10
    leaked = [line for log in logs for line in log.splitlines() if any(secret in line for secret in key_lines)]
    assert not leaked, leaked[:3]
