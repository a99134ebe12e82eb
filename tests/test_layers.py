"""The layering the design promises: config knows no stage, light entry points stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PACKAGE = Path(__file__).resolve().parents[1] / "veltrix_ray"

# what each layer may import of veltrix_ray besides itself, at any depth of its code
MAY_IMPORT = {
    "config": {"errors"},
    "contracts": set(),
    "errors": set(),
    "registry": {"errors"},
    "batch": {"config", "contracts", "errors"},  # config: make.py builds what it asks for
    "transform": {"batch", "config", "errors"},
    "source": {"config", "contracts", "errors"},
    "sink": {"batch", "config", "contracts", "errors"},
}


def layers_imported(layer: str) -> dict[str, set[str]]:
    """The veltrix_ray layers (veltrix_ray.<layer>...) each file of `layer` imports, its
    function-level imports included."""
    folder = PACKAGE / layer
    paths = sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{layer}.py"]
    found = {}
    for path in paths:
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= ({f"veltrix_ray.{a.name}" for a in node.names}
                          if node.module == "veltrix_ray" else {node.module})
        found[str(path.relative_to(PACKAGE))] = {n.split(".")[1] for n in names
                                                  if n.startswith("veltrix_ray.")}
    return found


@pytest.mark.parametrize("layer", sorted(MAY_IMPORT))
def test_a_layer_imports_only_the_layers_it_builds_on(layer: str) -> None:
    allowed = MAY_IMPORT[layer] | {layer}
    wrong = {path: sorted(names - allowed) for path, names in layers_imported(layer).items()}
    assert {path: names for path, names in wrong.items() if names} == {}


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
