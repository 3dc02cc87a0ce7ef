"""Image sets: the built-in digits and ImageFolder-layout folders.

An image set hands out two views of image ``i``: ``load(i)``, the PIL image a network's
preprocessing starts from, and ``display(i, size)``, the square image people see in a trial.
Unreadable files are skipped and counted (``n_skipped``), never fatal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

from .sections import Section, cli, is_int, need

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_DISPLAY_SIZE = 96
FOLDER_DISPLAY_SIZE = 224
LISTING_FORMAT = 1

# PIL raises these for files that are not images or are damaged
READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class ImageSet:
    """Common interface; subclasses fill ``name``, ``source``, ``labels``, ``class_names``."""

    name: str
    source: str
    labels: np.ndarray | None
    class_names: list[str] | None
    n_skipped: int = 0
    default_display_size: int = FOLDER_DISPLAY_SIZE

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, i: int) -> Image.Image:
        raise NotImplementedError

    def display(self, i: int, size: int | None = None) -> Image.Image:
        raise NotImplementedError

    def image_id(self, i: int) -> str:
        return str(i)

    def subset(self, indices: Sequence[int]) -> ImageSet:
        return SubsetImageSet(self, np.asarray(indices, dtype=np.int64))

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n_images": len(self), "n_skipped": self.n_skipped}


class DigitsImageSet(ImageSet):
    """scikit-learn's 1797 handwritten digits (8x8, 17 grey levels), with labels 0-9."""

    name = "digits"
    source = "builtin"
    default_display_size = DIGITS_DISPLAY_SIZE

    def __init__(self) -> None:
        from .networks import digits_uint8

        self.images, self.labels = digits_uint8()
        self.class_names = [str(i) for i in range(10)]
        self.n_skipped = 0

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> Image.Image:
        return Image.fromarray(self.images[i], mode="L")

    def display(self, i: int, size: int | None = None) -> Image.Image:
        size = size or self.default_display_size
        # dark ink on white, as digits are written; nearest keeps the 8x8 pixels the network saw
        ink = Image.fromarray(255 - self.images[i], mode="L")
        return ink.resize((size, size), Image.Resampling.NEAREST)

    def image_id(self, i: int) -> str:
        return f"digits:{i}"


def image_files(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """The image files of an ImageFolder layout in scan order, each with its class index (-1 for an
    image directly in ``root``), and the class names; no file is opened."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    candidates: list[tuple[Path, int]] = []
    for f in sorted(root.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
            candidates.append((f, -1))
    for ci, c in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if Path(fn).suffix.lower() in IMAGE_EXTENSIONS and not fn.startswith("."):
                    candidates.append((Path(dirpath) / fn, ci))
    return candidates, classes


class FolderImageSet(ImageSet):
    """An ImageFolder layout (``root/<class>/<image>``); images directly in ``root`` have no label.

    Files whose header PIL cannot read are skipped at scan time; a file that fails to decode later
    is reported by :meth:`load` raising one of ``READ_ERRORS`` (the activation pass drops it).
    :meth:`listing` records what a scan found and :meth:`from_listing` takes it up again without
    looking at the folder, so processes that share a job work on one numbering of its images.
    """

    source = "folder"

    def __init__(self, root: str | os.PathLike, verify: bool = True,
                 progress: Callable[[float], None] | None = None) -> None:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            raise ValueError(f"dataset folder not found: {root}")
        candidates, classes = image_files(root_path)
        files, labels, skipped = [], [], 0
        step = max(1, len(candidates) // 100)
        for j, (path, label) in enumerate(candidates):
            if progress is not None and j % step == 0:
                progress(j / len(candidates))
            if verify and not _readable(path):
                skipped += 1
                continue
            files.append(path)
            labels.append(label)
        if progress is not None:
            progress(1.0)
        if not files:
            raise ValueError(f"no readable images in {root} (skipped {skipped}); expected an ImageFolder "
                             f"layout: {root_path.name}/<class>/<image>.jpg")
        self._take(root_path, files, labels, classes, skipped)

    def _take(self, root: Path, files: list[Path], labels: Sequence[int], classes: list[str],
              skipped: int) -> None:
        self.root = root
        self.name = root.name
        self.files = files
        self.class_names = classes or None
        self._file_labels = np.asarray(labels, dtype=np.int64)
        self.labels = self._file_labels if classes and (self._file_labels >= 0).all() else None
        self.n_skipped = skipped

    def listing(self) -> dict:
        """What the scan found, as plain JSON values: the root, each image's path relative to it in
        order, its class index (-1 for an image directly in the root), the class names and how many
        files were skipped. :meth:`from_listing` rebuilds the same image set from it."""
        return {"format": LISTING_FORMAT, "root": str(self.root),
                "files": [f.relative_to(self.root).as_posix() for f in self.files],
                "labels": [int(v) for v in self._file_labels], "class_names": list(self.class_names or []),
                "n_skipped": int(self.n_skipped)}

    @classmethod
    def from_listing(cls, listing: dict) -> FolderImageSet:
        """The image set a :meth:`listing` describes, in its order, neither listing the folder nor
        opening a file; ValueError for a listing of another format or one that does not hold
        together (a path that leaves the root, a label with no class)."""
        if listing.get("format") != LISTING_FORMAT:
            raise ValueError(f"an image listing of format {listing.get('format')!r}, not {LISTING_FORMAT}")
        root, names = Path(listing["root"]), listing["files"]
        labels, classes = listing["labels"], list(listing["class_names"])
        if not names or len(labels) != len(names):
            raise ValueError(f"an image listing of {len(names)} files and {len(labels)} labels")
        files = []
        for name in names:
            rel = PurePosixPath(name)
            if rel.is_absolute() or ".." in rel.parts or not rel.parts:
                raise ValueError(f"an image listing's path {name!r} is not inside its root")
            files.append(root.joinpath(*rel.parts))
        if any(not -1 <= int(v) < len(classes) for v in labels):
            raise ValueError(f"an image listing's labels are not in -1..{len(classes) - 1}")
        images = cls.__new__(cls)
        images._take(root, files, labels, classes, int(listing["n_skipped"]))
        return images

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> Image.Image:
        with Image.open(self.files[i]) as im:
            im.load()
            return im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()

    def display(self, i: int, size: int | None = None) -> Image.Image:
        size = size or self.default_display_size
        return center_square(self.load(i).convert("RGB"), size)

    def image_id(self, i: int) -> str:
        return self.files[i].relative_to(self.root).as_posix()


class SubsetImageSet(ImageSet):
    """A view on some images of another set, in the given order."""

    def __init__(self, base: ImageSet, indices: np.ndarray) -> None:
        self.base = base
        self.indices = indices
        self.name = base.name
        self.source = base.source
        self.class_names = base.class_names
        self.labels = None if base.labels is None else base.labels[indices]
        self.n_skipped = base.n_skipped
        self.default_display_size = base.default_display_size

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, i: int) -> Image.Image:
        return self.base.load(int(self.indices[i]))

    def display(self, i: int, size: int | None = None) -> Image.Image:
        return self.base.display(int(self.indices[i]), size)

    def image_id(self, i: int) -> str:
        return self.base.image_id(int(self.indices[i]))

    def subset(self, indices: Sequence[int]) -> ImageSet:
        return SubsetImageSet(self.base, self.indices[np.asarray(indices, dtype=np.int64)])


def center_square(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and crop the centre, as classification transforms do."""
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return image.crop((left, top, left + size, top + size))


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except READ_ERRORS:
        return False


def load_dataset(spec: str, max_images: int | None = None, seed: int = 0) -> ImageSet:
    """``"digits"`` or a folder path; ``max_images`` draws a seeded subset (:func:`sample`)."""
    return sample(DigitsImageSet() if spec == "digits" else FolderImageSet(spec), max_images, seed)


def sample(images: ImageSet, max_images: int | None, seed: int) -> ImageSet:
    """A seeded subset of ``max_images`` images kept in file order, or ``images`` when it has no more."""
    if max_images is not None and max_images < len(images):
        rng = np.random.default_rng(seed)
        images = images.subset(np.sort(rng.choice(len(images), size=max_images, replace=False)))
    return images


@dataclass(frozen=True)
class DatasetSettings(Section):
    """The image set: ``name`` is ``"digits"`` (scikit-learn's handwritten digits) or a folder path
    (ImageFolder layout); ``max_images`` a seeded subset (None: all of them)."""

    FLAT = {"name": "dataset"}

    name: str = field(default="digits", metadata=cli(
        str, "--dataset", help="'digits' or an image folder (ImageFolder layout)"))
    max_images: int | None = field(default=None, metadata=cli(int))

    def validate(self) -> None:
        need(isinstance(self.name, str) and self.name != "", "dataset must be 'digits' or the path of an image folder")
        need(self.max_images is None or (is_int(self.max_images) and self.max_images > 0),
             f"max_images must be a positive integer or null, not {self.max_images!r}")
