"""action.yml, the config schema and the README's tables must agree."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from bluegreen.config import INPUTS, NOT_IN_SETTINGS
from bluegreen.report import FleetReport, Report

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
README = (ROOT / "README.md").read_text()


def readme_table(heading: str) -> dict[str, list[str]]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([a-z-]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_action_yml_inputs_match_the_schema() -> None:
    declared = ACTION["inputs"]
    assert list(declared) == [spec.name for spec in INPUTS]
    for spec in INPUTS:
        entry = declared[spec.name]
        assert entry["description"] == spec.description
        # GitHub's required: only what no settings file may hold (a linter flags a step without it);
        # the rest the action itself requires, from with: or the file
        assert entry["required"] is (spec.required and spec.name in NOT_IN_SETTINGS)
        assert entry.get("default", "") == spec.default
        assert ("default" in entry) is not spec.required


def test_readme_documents_every_input_with_its_default_and_description() -> None:
    rows = readme_table("Inputs")
    assert list(rows) == list(ACTION["inputs"])
    for spec in INPUTS:
        entry = ACTION["inputs"][spec.name]
        default, description = rows[spec.name]
        expected = "*required*" if spec.required else f"`{entry['default'] or chr(39) * 2}`"
        assert default == expected, spec.name
        assert description == entry["description"], spec.name


def test_readme_documents_every_output() -> None:
    rows = readme_table("Outputs")
    assert list(rows) == list(ACTION["outputs"])
    for name, entry in ACTION["outputs"].items():
        assert rows[name] == [entry["description"]]
    assert set(FleetReport([("h", Report(ref="x"))]).outputs()) == set(ACTION["outputs"])


def test_action_runs_as_a_docker_container_action() -> None:
    assert ACTION["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert ACTION["branding"]["icon"] and ACTION["branding"]["color"]
