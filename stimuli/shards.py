"""The activation pass split into shards that separate processes (GPU workers) run, and merged back.

A shard is a contiguous range of the image set whose boundaries fall on multiples of the batch size, so
its batches are exactly the batches the unsharded pass builds for those images: the same inputs through
the same forward pass, hence the same pooled rows, bit for bit on the CPU. Images that fail to decode are
dropped per batch, alike in both.

Each shard writes one ``.npz`` file (NumPy arrays only, read back without pickle) into a folder the
shards share, atomically: a temporary file renamed into place, so a file that is there is whole. A shard
whose file is already there, for the same configuration, does nothing: a redelivered shard costs a look.
:func:`merge_shards` reads the files back into the :class:`~stimuli.activations.Activations` the
unsharded pass returns, and :func:`stimuli.pipeline.run` takes them in place of its own pass.

A folder of images is scanned once, before the shards run: :func:`write_listing` puts what the scan found
(:meth:`~stimuli.datasets.FolderImageSet.listing`) into the shards' folder, and every shard and the run
that merges them take their image set from it (:func:`listed_images`) rather than from the folder. They
number the images alike, however the folder changes meanwhile, and no file's header is read twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .config import StimulusConfig

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
FORMAT = 2  # 2: a shard records the image listing it was computed from
LISTING = "images.json"
LISTING_KIND = "stimuli.shards.listing"


class ListingError(ValueError):
    """The shards' folder holds no image listing for this configuration: the shards cannot know which
    images are theirs, and scanning the folder themselves could number them otherwise."""


def shard_ranges(n_images: int, n_shards: int, batch_size: int) -> list[range]:
    """``n_shards`` contiguous image-index ranges covering ``range(n_images)``, each a whole number of
    batches (the last one ends at ``n_images``), as even in batches as they can be. With more shards
    than batches, the shards beyond them are empty."""
    if n_images < 0 or n_shards < 1 or batch_size < 1:
        raise ValueError(f"need n_images >= 0, n_shards >= 1 and batch_size >= 1, not {n_images}, {n_shards}, "
                         f"{batch_size}")
    n_batches = math.ceil(n_images / batch_size)
    bounds = [min(n_images, (s * n_batches // n_shards) * batch_size) for s in range(n_shards + 1)]
    return [range(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def shard_count(n_images: int, batch_size: int, wanted: int) -> int:
    """``wanted`` shards, but no more than the image set has batches (at least one)."""
    return max(1, min(int(wanted), math.ceil(n_images / batch_size)))


def count_images(config: StimulusConfig | dict) -> int:
    """How many images the job's activation pass will see, cheaply: a folder's image files are counted
    without opening them (the few unreadable ones the pass skips do not change how many shards a job
    wants)."""
    from .datasets import DigitsImageSet, image_files

    config = _config(config)
    if config.dataset.name == "digits":
        n = len(DigitsImageSet())
    else:
        root = Path(config.dataset.name).expanduser()
        if not root.is_dir():
            raise ValueError(f"dataset folder not found: {config.dataset.name}")
        n = len(image_files(root)[0])
    return n if config.dataset.max_images is None else min(n, config.dataset.max_images)


def shard_name(index: int, n_shards: int) -> str:
    return f"shard-{index:05d}-of-{n_shards:05d}.npz"


def fingerprint(config: StimulusConfig) -> str:
    """What a shard file was computed for: the whole configuration (a job whose parameters were edited
    between two launches recomputes its shards rather than reusing the earlier ones)."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def _config(config: StimulusConfig | dict) -> StimulusConfig:
    return StimulusConfig.from_dict(config) if isinstance(config, dict) else config


def _complete(path: Path, print_: str, listed: str, index: int, n_shards: int) -> bool:
    """Whether ``path`` is a whole shard file for this configuration, image listing and shard."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return (int(data["format"]) == FORMAT and str(data["fingerprint"]) == print_
                    and str(data["listing"]) == listed
                    and int(data["index"]) == index and int(data["n_shards"]) == n_shards
                    and all(f"values_{i}" in data for i in range(len(data["layers"]))))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    _write_with(path, lambda f: np.savez(f, **arrays))


def _write_bytes_atomically(path: Path, data: bytes) -> None:
    _write_with(path, lambda f: f.write(data))


def _write_with(path: Path, write: Callable) -> None:
    """``write(file)`` into a temporary file beside ``path``, renamed into place once it is whole."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def needs_listing(config: StimulusConfig | dict) -> bool:
    """Whether the job's image set is a folder, which its shards take from a listing (the built-in
    digits are the same in every process)."""
    return _config(config).dataset.name != "digits"


def write_listing(config: StimulusConfig | dict, folder: str | os.PathLike,
                  progress: Callable[[float], None] | None = None) -> Path | None:
    """Scan the configuration's image folder and write the listing its shards work from into
    ``folder``, atomically; the listing's path, or None for the digits, which need none. A listing
    already there for this configuration is kept as it is (with it, the shards computed from it stay
    valid). ``progress(fraction)`` follows the scan, which opens every file's header."""
    from .datasets import FolderImageSet

    config = _config(config)
    if not needs_listing(config):
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LISTING
    try:
        _listed(config, folder)
    except ListingError:
        pass
    else:
        log.info("image listing already written: %s", path)
        return path
    images = FolderImageSet(config.dataset.name, progress=progress)
    data = {"kind": LISTING_KIND, **images.listing(), "fingerprint": fingerprint(config)}
    _write_bytes_atomically(path, json.dumps(data, separators=(",", ":")).encode())
    log.info("image listing of %d images (%d skipped) written: %s", len(images), images.n_skipped, path)
    return path


def read_listing(config: StimulusConfig | dict, folder: str | os.PathLike) -> dict:
    """The listing in ``folder``, checked against the configuration (its folder, its fingerprint);
    ListingError when it is missing, damaged or written for something else."""
    return _read_listing(_config(config), Path(folder))[0]


def _read_listing(config: StimulusConfig, folder: Path) -> tuple[dict, str]:
    """The checked listing and the SHA-256 of its file, read once (a shard records the digest)."""
    from .datasets import LISTING_FORMAT

    path = folder / LISTING
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise ListingError(f"no image listing at {path}: the job's coordinator writes it before the shards "
                           "run; launch the job again") from None
    except (OSError, ValueError) as exc:
        raise ListingError(f"the image listing {path} cannot be read ({exc}); launch the job again") from None
    if not isinstance(data, dict) or data.get("kind") != LISTING_KIND or data.get("format") != LISTING_FORMAT:
        raise ListingError(f"{path} is not an image listing of format {LISTING_FORMAT}")
    root = str(Path(config.dataset.name).expanduser())
    if data.get("root") != root:
        raise ListingError(f"the image listing {path} is of {data.get('root')!r}, not of the job's folder {root!r}")
    if data.get("fingerprint") != fingerprint(config):
        raise ListingError(f"the image listing {path} was written for another configuration; launch the job again")
    return data, hashlib.sha256(raw).hexdigest()


def listed_images(config: StimulusConfig | dict, folder: str | os.PathLike):
    """The image set the shards of ``folder`` and their merged run work on: a folder's from its listing
    (ListingError without one), neither listed nor opened again, subsampled to ``max_images`` as
    :func:`stimuli.datasets.load_dataset` does; the digits as always."""
    return _listed(_config(config), Path(folder))[0]


def _listed(config: StimulusConfig, folder: Path):
    """The image set of :func:`listed_images` and the digest of its listing ("" for the digits)."""
    from .datasets import FolderImageSet, load_dataset, sample

    if not needs_listing(config):
        return load_dataset(config.dataset.name, max_images=config.dataset.max_images, seed=config.seed), ""
    data, digest = _read_listing(config, folder)
    try:
        images = FolderImageSet.from_listing(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ListingError(f"the image listing {folder / LISTING} does not hold together ({exc}); "
                           "launch the job again") from None
    return sample(images, config.dataset.max_images, config.seed), digest


def extract_shard(config: StimulusConfig | dict, shard_index: int, n_shards: int, folder: str | os.PathLike,
                  progress: Progress | None = None) -> Path:
    """Run the activation pass over shard ``shard_index`` of ``n_shards`` and write its file into
    ``folder``; the file's path. Loads the network as :func:`stimuli.pipeline.run` does, and the image
    set from the listing in ``folder`` (:func:`listed_images`; a folder's job without one is refused
    with ListingError). Returns at once, computing nothing, when the shard's file is already there for
    this configuration and listing. ``progress(stage, fraction)`` sees the stages ``network`` and
    ``activations``."""
    from . import activations as act
    from .pipeline import load_inputs

    config = _config(config)
    if not 0 <= shard_index < n_shards:
        raise ValueError(f"shard index {shard_index} is not in 0..{n_shards - 1}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / shard_name(shard_index, n_shards)
    print_ = fingerprint(config)
    images, listed = _listed(config, folder)
    if _complete(path, print_, listed, shard_index, n_shards):
        log.info("shard %d of %d already written: %s", shard_index + 1, n_shards, path)
        return path

    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, float(min(1.0, max(0.0, fraction))))

    inputs = load_inputs(config, report, images=images)
    part = shard_ranges(len(inputs.images), n_shards, config.activations.batch_size)[shard_index]
    report("activations", 0.0)
    arrays: dict[str, np.ndarray] = {
        "format": np.int64(FORMAT), "fingerprint": np.str_(print_), "listing": np.str_(listed),
        "index": np.int64(shard_index), "n_shards": np.int64(n_shards), "start": np.int64(part.start),
        "stop": np.int64(part.stop),
    }
    settings = config.activations
    try:
        if len(part) == 0:
            raise act.NoImageRead("an empty shard")
        acts = act.extract(inputs.net.model, inputs.images.subset(np.arange(part.start, part.stop)),
                           inputs.net.preprocess, settings.layers, pooling=settings.pooling,
                           activation=settings.activation, device=inputs.device, batch_size=settings.batch_size,
                           num_workers=settings.num_workers, progress=lambda f: report("activations", f),
                           decode=settings.decode)
    except act.NoImageRead:
        # every image of the shard failed (or it has none): the others may still make a run
        arrays.update(indices=np.zeros(0, dtype=np.int64), n_failed=np.int64(len(part)),
                      layers=np.array([], dtype=np.str_))
    else:
        layers = list(config.activations.layers)
        arrays.update(indices=(acts.indices + part.start).astype(np.int64), n_failed=np.int64(acts.n_failed),
                      layers=np.array(layers, dtype=np.str_))
        for i, layer in enumerate(layers):
            arrays[f"values_{i}"] = acts.values[layer]
            arrays[f"shape_{i}"] = np.asarray(acts.shapes[layer], dtype=np.int64)
    _write_atomically(path, arrays)
    report("activations", 1.0)
    return path


def merge_shards(folder: str | os.PathLike, n_shards: int, config: StimulusConfig | dict | None = None):
    """The :class:`~stimuli.activations.Activations` of the whole image set from the ``n_shards`` files
    in ``folder``, equal to those of the unsharded pass. Files computed from different image listings
    are refused, and with ``config`` those written for another configuration or listing. Holds one
    N x C matrix per layer and one shard's rows besides."""
    from .activations import Activations, NoImageRead

    folder = Path(folder)
    print_ = fingerprint(_config(config)) if config is not None else None
    listed = None
    if config is not None:
        listed = _read_listing(_config(config), folder)[1] if needs_listing(config) else ""
    files = []
    try:
        for i in range(n_shards):
            files.append(np.load(folder / shard_name(i, n_shards), allow_pickle=False))
        headers = []
        for i, data in enumerate(files):
            if int(data["format"]) != FORMAT or int(data["index"]) != i or int(data["n_shards"]) != n_shards:
                raise ValueError(f"{folder / shard_name(i, n_shards)} is not shard {i} of {n_shards}")
            if print_ is not None and str(data["fingerprint"]) != print_:
                raise ValueError(f"{folder / shard_name(i, n_shards)} was written for another configuration")
            if str(data["listing"]) != (str(files[0]["listing"]) if listed is None else listed):
                raise ValueError(f"{folder / shard_name(i, n_shards)} was computed from another image listing")
            headers.append((int(data["start"]), int(data["stop"]), [str(s) for s in data["layers"]]))
        if [h[0] for h in headers[1:]] != [h[1] for h in headers[:-1]] or headers[0][0] != 0:
            raise ValueError(f"the shards in {folder} do not cover the image set contiguously")
        full = [data for data, h in zip(files, headers) if h[2]]
        if not full:
            raise NoImageRead("no image could be read")
        layers = headers[files.index(full[0])][2]
        counts = [len(data["indices"]) for data in full]
        total = sum(counts)
        values = {layer: np.empty((total, full[0][f"values_{i}"].shape[1]), dtype=np.float32)
                  for i, layer in enumerate(layers)}
        indices = np.empty(total, dtype=np.int64)
        row = 0
        for data, n in zip(full, counts):
            indices[row:row + n] = data["indices"]
            for i, layer in enumerate(layers):
                values[layer][row:row + n] = data[f"values_{i}"]
            row += n
        shapes = {layer: tuple(int(d) for d in full[0][f"shape_{i}"]) for i, layer in enumerate(layers)}
        n_failed = sum(int(data["n_failed"]) for data in files)
    finally:
        for data in files:
            data.close()
    return Activations(values=values, indices=indices, n_failed=n_failed, shapes=shapes)
