"""notebooks/quickstart.ipynb runs top to bottom, in a real kernel, against the real services."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import psycopg
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

from veltrix_ray import produce

# what the notebook's "Produce events" cell writes
EVENTS, BAD_FRACTION, SEED = 50_000, 0.002, 42
TABLE = "quickstart_events"
KERNEL = "python3"


def _notebook(repo_root: Path) -> nbformat.NotebookNode:
    nb: nbformat.NotebookNode = nbformat.read(  # type: ignore[no-untyped-call]
        repo_root / "notebooks" / "quickstart.ipynb", as_version=4)
    return nb


def _ensure_kernel() -> None:
    """The venv's own ipykernel as `python3` (installed into the venv if no spec is found)."""
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix",
                        "--name", KERNEL], check=True, capture_output=True)


def _text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_committed_clean(repo_root: Path) -> None:
    nb = _notebook(repo_root)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == KERNEL
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, \
                "commit the notebook without outputs (clear them first)"


def test_quickstart_runs_end_to_end(kafka_bootstrap: str, pg_dsn: str, repo_root: Path,
                                    tmp_path: Path) -> None:
    _ensure_kernel()
    nb = _notebook(repo_root)
    env = dict(os.environ, VELTRIX_KAFKA_BOOTSTRAP=kafka_bootstrap, VELTRIX_POSTGRES_DSN=pg_dsn,
               MPLBACKEND="Agg", PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("RAY_ADDRESS", None)  # the notebook starts a local Ray of its own
    client = NotebookClient(nb, timeout=300, kernel_name=KERNEL, allow_errors=False,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=env)

    good = sum(1 for r in produce.generate(EVENTS, seed=SEED, bad_fraction=BAD_FRACTION)
               if r.event_id is not None)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "a cell did not run"
    assert _text(code[-1]).strip().splitlines()[-1] == f"rows in {TABLE}: {good}", \
        _text(code[-1])
    assert any("image/png" in out.get("data", {}) for c in code for out in c.outputs), \
        "the notebook plotted nothing"
    assert any("text/html" in out.get("data", {}) for c in code for out in c.outputs), \
        "the notebook showed no DataFrame"
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(f"SELECT count(DISTINCT event_id) FROM {TABLE}").fetchone()
    assert rows == (good,)
