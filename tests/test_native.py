"""native/ (veltrix_codec): its Rust unit tests pass, and it stays cargo fmt- and clippy-clean
(`make lint` runs the same two checks)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
NATIVE = Path(__file__).resolve().parents[1] / "native"


def cargo(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("cargo") is None:
        pytest.fail("cargo is not on PATH: native/ needs Rust (rustup.rs)", pytrace=False)
    return subprocess.run(["cargo", *args], cwd=NATIVE, capture_output=True, text=True,
                          timeout=900)


def test_rust_unit_tests_pass() -> None:
    result = cargo("test", "--quiet")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert " 0 failed" in result.stdout


def test_cargo_fmt() -> None:
    result = cargo("fmt", "--check", "--manifest-path", "Cargo.toml")
    assert result.returncode == 0, result.stdout[-4000:]


def test_cargo_clippy() -> None:
    result = cargo("clippy", "--quiet", "--all-targets", "--", "-D", "warnings")
    assert result.returncode == 0, result.stderr[-4000:]
