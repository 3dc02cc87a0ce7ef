"""The stimulus artifact on disk: written into a temporary sibling folder, then renamed into place,
so ``out_dir`` either does not exist or is complete (docs/contracts.md, section 1)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from . import SCHEMA_VERSION
from .render import IMAGES_DIR, content_name

MANIFEST = "manifest.json"
SUPPORTED_SCHEMA_VERSIONS = (1,)


class ArtifactWriter:
    """Use as a context manager; images are added as they are rendered, the manifest last.

    Leaving the block with an exception removes the temporary folder and leaves ``out_dir``
    untouched; leaving it after :meth:`commit` has renamed the folder into place.
    """

    def __init__(self, out_dir: str | os.PathLike, overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self.committed = False
        self._names: set[str] = set()

    def __enter__(self) -> "ArtifactWriter":
        if self.out_dir.exists() and not self.overwrite:
            raise FileExistsError(f"output folder already exists: {self.out_dir}")
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        (self.tmp / IMAGES_DIR).mkdir()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed and self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def add_image(self, data: bytes) -> str:
        """Store PNG bytes under their content name; return the manifest path."""
        name = content_name(data)
        if name not in self._names:
            with open(self.tmp / name, "wb") as f:
                f.write(data)
            self._names.add(name)
        return name

    def add_file(self, name: str, data: bytes) -> str:
        """Store a file beside the manifest (never under images/, which the web serves); return its path."""
        if "/" in name or name in ("", ".", "..", MANIFEST):
            raise ValueError(f"not a plain file name: {name!r}")
        with open(self.tmp / name, "wb") as f:
            f.write(data)
        return name

    @property
    def n_images(self) -> int:
        return len(self._names)

    def commit(self, manifest: dict[str, Any]) -> Path:
        assert self.tmp is not None, "use ArtifactWriter as a context manager"
        with open(self.tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        old = None
        if self.out_dir.exists():
            # a directory cannot be renamed over a non-empty one: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.old-", dir=self.out_dir.parent))
            os.replace(self.out_dir, old / "artifact")
        os.replace(self.tmp, self.out_dir)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an artifact folder (or of a manifest.json path), schema version checked."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"no stimulus manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ValueError(f"unsupported manifest schema_version {version!r}; this version of stimuli reads "
                         f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}")
    return manifest


assert SCHEMA_VERSION in SUPPORTED_SCHEMA_VERSIONS
