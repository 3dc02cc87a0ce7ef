"""The stimulus artifact (docs/contracts.md, section 1): its manifest built, validated and read here
and nowhere else, and the folder written into a temporary sibling, then renamed into place, so
``out_dir`` either does not exist or is complete. The web app imports artifacts through
:func:`read_manifest`."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .render import IMAGES_DIR, content_name

MANIFEST = "manifest.json"
# the manifest versions this package reads; it writes the last
SCHEMA_VERSIONS = (1,)
SCHEMA_VERSION = SCHEMA_VERSIONS[-1]


class ManifestError(ValueError):
    """A manifest that is missing, not JSON, of an unknown schema version, or not shaped as the
    contract says."""


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


def versions() -> dict[str, str]:
    """The versions of the packages that decide an artifact's content."""
    import numpy as np
    import PIL
    import sklearn
    import torch
    import torchvision

    from importlib.metadata import version

    from . import __version__

    # zennit computes the LRP overlays; its rules decide their pixels.
    return {"stimuli": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "scikit-learn": sklearn.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "zennit": version("zennit")}


def build_manifest(*, network: dict[str, Any], dataset: dict[str, Any], seed: int, parameters: dict[str, Any],
                   layers: list[dict[str, Any]], n_images_rendered: int, device: str,
                   device_name: str | None = None, sobol: dict[str, Any] | None = None,
                   figures: list[Any] | None = None, feature_vis: dict[str, Any] | None = None,
                   created: _dt.datetime | None = None) -> dict[str, Any]:
    """The manifest of an artifact, validated: what the network, the image set and the parameters
    were, the package versions, and one entry per (layer, basis) with its units."""
    created = created or _dt.datetime.now(_dt.timezone.utc)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "network": network,
        "dataset": dataset,
        "seed": seed,
        "parameters": parameters,
        "versions": versions(),
        "device": device,
        "n_images_rendered": n_images_rendered,
        "layers": layers,
    }
    if sobol is not None:
        manifest["sobol"] = sobol
    if figures:
        manifest["figures"] = figures
    if feature_vis is not None:
        manifest["feature_vis"] = feature_vis
    if device_name is not None:
        manifest["device_name"] = device_name
    return validate_manifest(manifest)


def validate_manifest(manifest: Any, where: str = "the manifest") -> dict[str, Any]:
    """``manifest`` itself if its schema version is one this package reads and it has what every
    reader relies on (a list of layer entries, each naming its layer and basis, with a list of units
    that have an index); else a :class:`ManifestError`."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version not in SCHEMA_VERSIONS:
        raise ManifestError(f"unsupported manifest schema_version {version!r} in {where}; this version of "
                            f"stimuli reads {', '.join(map(str, SCHEMA_VERSIONS))}")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise ManifestError(f"{where} has no list of layers")
    for i, entry in enumerate(layers):
        if not (isinstance(entry, dict) and isinstance(entry.get("layer"), str)
                and isinstance(entry.get("basis"), str) and isinstance(entry.get("units"), list)):
            raise ManifestError(f"layer entry {i} of {where} needs a layer, a basis and a list of units")
        for unit in entry["units"]:
            if not (isinstance(unit, dict) and isinstance(unit.get("index"), int)):
                raise ManifestError(f"a unit of {entry['layer']}/{entry['basis']} in {where} has no index")
    return manifest


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an artifact folder (or of a manifest.json path), validated."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"no stimulus manifest at {path}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{MANIFEST} of {path.parent.name} is not valid JSON: {exc}") from None
    return validate_manifest(manifest, f"{MANIFEST} of {path.parent.name}")
