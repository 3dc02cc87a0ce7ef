"""PNG bytes for the images people see, and their content-addressed file names."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

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
