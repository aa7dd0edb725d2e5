"""CI check: requirements.lock is in sync with pyproject.toml.

Every runtime dependency declared in pyproject.toml must be pinned in the lock at a version its
specifier admits, and the lock must be complete: installing exactly the lock (with --no-deps) into
a fresh environment leaves `pip check` clean. The second half runs in the container build too.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==":
            print(f"requirements.lock: {line!r} is not an exact pin")
            return 1
        pins[canonicalize_name(req.name)] = specs[0].version
    problems = []
    for dep in project["dependencies"]:
        req = Requirement(dep)
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"{req.name} is declared in pyproject.toml but not pinned in requirements.lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"{req.name}=={pinned} in requirements.lock does not satisfy {dep!r}")
    for problem in problems:
        print(problem)
    if problems:
        print("run scripts/lock.sh to regenerate requirements.lock")
        return 1
    print(f"requirements.lock: {len(pins)} pins, consistent with pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
