"""Image sets: the built-in digits and ImageFolder-layout folders.

An image set hands out two views of image ``i``: ``load(i)``, the PIL image a network's
preprocessing starts from, and ``display(i, size)``, the square image people see in a trial.
Unreadable files are skipped and counted (``n_skipped``), never fatal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_DISPLAY_SIZE = 96
FOLDER_DISPLAY_SIZE = 224

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

    def subset(self, indices: Sequence[int]) -> "ImageSet":
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


class FolderImageSet(ImageSet):
    """An ImageFolder layout (``root/<class>/<image>``); images directly in ``root`` have no label.

    Files whose header PIL cannot read are skipped at scan time; a file that fails to decode later
    is reported by :meth:`load` raising one of ``READ_ERRORS`` (the activation pass drops it).
    """

    source = "folder"

    def __init__(self, root: str | os.PathLike, verify: bool = True) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise ValueError(f"dataset folder not found: {root}")
        self.name = self.root.name
        classes = sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        candidates: list[tuple[Path, int]] = []
        for f in sorted(self.root.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                candidates.append((f, -1))
        for ci, c in enumerate(classes):
            for dirpath, dirnames, filenames in os.walk(self.root / c, followlinks=True):
                dirnames.sort()
                for fn in sorted(filenames):
                    if Path(fn).suffix.lower() in IMAGE_EXTENSIONS and not fn.startswith("."):
                        candidates.append((Path(dirpath) / fn, ci))
        files, labels, skipped = [], [], 0
        for path, label in candidates:
            if verify and not _readable(path):
                skipped += 1
                continue
            files.append(path)
            labels.append(label)
        if not files:
            raise ValueError(f"no readable images in {root} (skipped {skipped}); expected an ImageFolder "
                             f"layout: {self.root.name}/<class>/<image>.jpg")
        self.files = files
        self.class_names = classes or None
        lab = np.asarray(labels, dtype=np.int64)
        self.labels = lab if classes and (lab >= 0).all() else None
        self.n_skipped = skipped

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
    """``"digits"`` or a folder path; ``max_images`` draws a seeded subset (kept in file order)."""
    images: ImageSet = DigitsImageSet() if spec == "digits" else FolderImageSet(spec)
    if max_images is not None and max_images < len(images):
        rng = np.random.default_rng(seed)
        images = images.subset(np.sort(rng.choice(len(images), size=max_images, replace=False)))
    return images
