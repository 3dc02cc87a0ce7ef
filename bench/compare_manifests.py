"""Compare two stimulus artifacts' manifests, apart from when they were made, the package versions and
the stage timings.

A refactoring of :mod:`stimuli` must leave what a job writes unchanged: run the same job on the commit
before and after, then compare::

    git stash; .venv/bin/python -m stimuli generate job.json --out /tmp/before --quiet; git stash pop
    .venv/bin/python -m stimuli generate job.json --out /tmp/after --quiet
    .venv/bin/python bench/compare_manifests.py /tmp/before /tmp/after

Prints each differing path (``layers[0].units[2].measures.mis``) with both values and exits 1 when
there is one; the image files are compared too, by name (their names are content hashes). Run the two
jobs with the same ``OMP_NUM_THREADS`` so that float reductions take the same order.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# what may differ between two runs of one job (timings: wall seconds per stage)
IGNORED = ("created", "versions", "timings")


def differences(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else key
            if key not in a or key not in b:
                yield f"{where}: only in {'the second' if key not in a else 'the first'}"
            else:
                yield from differences(a[key], b[key], where)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            yield f"{path}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            yield from differences(x, y, f"{path}[{i}]")
    elif a != b or type(a) is not type(b):
        yield f"{path}: {a!r} vs {b!r}"


def manifest(folder: Path) -> dict:
    data = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if k not in IGNORED}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    args = p.parse_args(argv)
    found = list(differences(manifest(args.first), manifest(args.second)))
    files = [
        sorted(str(f.relative_to(d)) for f in d.rglob("*") if f.is_file() and f.name != "manifest.json")
        for d in (args.first, args.second)
    ]
    if files[0] != files[1]:
        found.append(
            f"files: {len(set(files[0]) - set(files[1]))} only in the first, "
            f"{len(set(files[1]) - set(files[0]))} only in the second"
        )
    for line in found:
        print(line)
    print(f"{len(found)} difference(s) apart from {', '.join(IGNORED)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
