"""PNG bytes for the images people see, and their content-addressed file names."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from PIL import Image

from .sections import Section, is_int, need

HASH_CHARS = 20
IMAGES_DIR = "images"


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG without metadata, so equal pixels give equal bytes (and equal names)."""
    if image.mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def content_name(data: bytes) -> str:
    """``images/<first 20 hex chars of sha256>.png``, relative to the artifact folder."""
    return f"{IMAGES_DIR}/{hashlib.sha256(data).hexdigest()[:HASH_CHARS]}.png"


def render(image: Image.Image) -> tuple[str, bytes]:
    data = png_bytes(image)
    return content_name(data), data


@dataclass(frozen=True)
class RenderSettings(Section):
    """What the artifact draws: the shown images at ``size`` pixels (None: the image set's display size),
    and SVG ``figures`` of the curves (explained variance, completeness, essence, surrogate fidelity)."""

    FLAT = {"size": "render_size"}

    size: int | None = None
    figures: bool = True

    def validate(self) -> None:
        need(
            self.size is None or (is_int(self.size) and 8 <= self.size <= 1024),
            f"render_size must be null or an integer in [8, 1024], not {self.size!r}",
        )
        need(isinstance(self.figures, bool), "figures must be true or false")
