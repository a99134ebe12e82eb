"""The code stays ruff- and mypy-clean (pyproject.toml holds both configurations)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True)


def test_ruff() -> None:
    result = run("ruff", "check", "veltrix_ray", "tests", "benchmarks", "scripts")
    assert result.returncode == 0, result.stdout[-4000:]


def test_mypy() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout[-4000:]


def test_pre_commit_runs_what_make_lint_runs() -> None:
    import yaml

    lines = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].splitlines()[1:]
    recipe = " && ".join(line.strip() for line in lines[:next(
        i for i, line in enumerate(lines) if not line.startswith("\t"))])
    make = {c.strip().removeprefix("$(BIN)/") for c in recipe.split("&&")}
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    assert [r["repo"] for r in hooks] == ["local"]  # nothing fetched
    entries = {h["entry"].removeprefix(".venv/bin/") for h in hooks[0]["hooks"]}
    assert entries == make
