"""Prints what this environment runs against: each installed package whose version differs
from requirements.lock (`make test-latest` calls it before the unit tests)."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker

# the runtime dependencies whose behaviour the product's verdicts rest on
_HEADLINE = ("ray", "pyarrow", "aiokafka", "psycopg", "msgspec", "hydra-core", "pgpq", "protobuf",
             "fastavro")


def _locked(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)\s*(?:;\s*(.+))?$", line)
        if match and (match[3] is None or Marker(match[3]).evaluate()):
            pins[_norm(match[1].split("[")[0])] = match[2]
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    locked = _locked(Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock"))
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
    changed = sorted((n, locked[n], v) for n, v in installed.items() if n in locked
                     and locked[n] != v)
    new = sorted(n for n in installed if n not in locked and n not in ("veltrix-ray",
                                                                        "veltrix-codec"))
    print(f"test-latest: {len(installed)} packages, {len(changed)} newer or other than the "
          f"lock, {len(new)} not in it")
    print("  runs against " + ", ".join(f"{n} {installed[n]}" for n in _HEADLINE
                                        if n in installed))
    for name, was, now in changed:
        print(f"  {name:32} {was:>14} -> {now}")
    for name in new:
        print(f"  {name:32} {'(not locked)':>14}    {installed[name]}")


if __name__ == "__main__":
    main()
