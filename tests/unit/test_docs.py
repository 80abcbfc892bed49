"""action.yml, the config schema and the docs' tables must agree, the README must stay short, and
every link between the docs must lead to a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bluegreen.config import INPUTS, NOT_IN_SETTINGS
from bluegreen.report import FleetReport, Report

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
README = (ROOT / "README.md").read_text()
INPUTS_DOC = (ROOT / "docs/inputs.md").read_text()
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def table(text: str, heading: str) -> dict[str, list[str]]:
    """The rows of the table under `## heading`, by the name in their first cell."""
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([a-z0-9-]+)` \| (.*) \|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def expected_default(name: str) -> str:
    spec = next(spec for spec in INPUTS if spec.name == name)
    return "*required*" if spec.required else f"`{ACTION['inputs'][name]['default'] or chr(39) * 2}`"


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


def test_docs_inputs_documents_every_input_with_its_default_and_description() -> None:
    rows = table(INPUTS_DOC, "Inputs")
    assert list(rows) == list(ACTION["inputs"])
    for name, entry in ACTION["inputs"].items():
        default, description = rows[name]
        assert default == expected_default(name), name
        assert description == entry["description"], name


def test_readme_lists_every_input_in_order_with_its_default() -> None:
    rows = table(README, "Inputs")
    assert list(rows) == list(ACTION["inputs"])
    for name, cells in rows.items():
        assert len(cells) == 2 and cells[1], name  # a default and a short description
        assert cells[0] == expected_default(name), name


def test_readme_documents_every_output() -> None:
    rows = table(README, "Outputs")
    assert list(rows) == list(ACTION["outputs"])
    for name, entry in ACTION["outputs"].items():
        assert rows[name] == [entry["description"]]
    assert set(FleetReport([("h", Report(ref="x"))]).outputs()) == set(ACTION["outputs"])


def test_readme_is_at_most_3000_words() -> None:
    assert len(README.split()) <= 3000


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(doc: Path) -> None:
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.MULTILINE | re.DOTALL)  # no links in code
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert broken == []


def test_action_runs_as_a_docker_container_action() -> None:
    assert ACTION["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert ACTION["branding"]["icon"] and ACTION["branding"]["color"]
