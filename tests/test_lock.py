"""requirements.lock pins what pyproject.toml asks for, inside its ranges (`make lock`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, list[Version]]:
    """name -> versions: a universal lock may pin a package twice, per Python version."""
    pins: dict[str, list[Version]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*(?:;\s*(.+))?$", line):
            pins.setdefault(canonicalize_name(match[1]), []).append(Version(match[2]))
    return pins


def wanted() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    build = [line for line in (ROOT / "requirements-build.in").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    return [Requirement(r) for r in
            [*project["dependencies"], *extras["dev"], *extras["local"], *build]]


def test_every_requirement_is_locked_inside_its_range() -> None:
    pins = locked()
    for req in wanted():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements.lock: run `make lock`"
        for version in pins[name]:
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside pyproject.toml's {req}: "
                "run `make lock`")


def test_the_lock_says_how_it_is_made() -> None:
    text = (ROOT / "requirements.lock").read_text()
    assert "make lock" in text.splitlines()[1]
    assert "--universal" not in text  # the custom command is shown, not uv's own
