"""The layering the design promises: config knows no stage, light entry points stay light."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_config_imports_no_runtime_sink_source_or_ray() -> None:
    mods = loaded_after("import veltrix_ray.config, veltrix_ray.config.validate, "
                        "veltrix_ray.config.mask")
    stages = {m for m in mods if m.startswith(("veltrix_ray.runtime", "veltrix_ray.sink",
                                               "veltrix_ray.source", "veltrix_ray.check"))}
    assert stages == set()
    assert "ray" not in mods


def test_errors_and_local_env_do_not_import_ray_or_hydra() -> None:
    assert not {"ray", "hydra"} & loaded_after("import veltrix_ray.errors")
    mods = loaded_after("from veltrix_ray import cli\n"
                        "try:\n    cli.main(['local', 'env', '--state-dir', '/nonexistent'])\n"
                        "except SystemExit:\n    pass")
    assert "ray" not in mods and "hydra" not in mods


def test_the_public_names_load_on_first_use() -> None:
    mods = loaded_after("from veltrix_ray import Pipeline, load_config, ConfigError")
    assert "veltrix_ray.runtime.pipeline" in mods
