"""One image's Sobol-SBSA region analysis from names alone (network, dataset, index), with the
picture a researcher looks at: the image with its total-order indices laid over it. What a worker
calls for a region analysis job."""
from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from ..datasets import load_dataset
from ..networks import load_network, resolve_device
from .attribution import input_crop_fraction, overlay
from .sobol import RegionSobol, region_sobol


@dataclass
class RegionAnalysis:
    result: RegionSobol
    image_id: str
    label: int | None
    overlay_png: bytes
    image_png: bytes

    def to_dict(self) -> dict:
        return {"image_id": self.image_id, "label": self.label, **self.result.to_dict()}


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def analyse_image(network: str, dataset: str, image_index: int, *, weights: str | None = None,
                  architecture: str | None = None, allow_download: bool = True, target_class: int | None = None,
                  grid: int = 4, n_samples: int = 256, perturbation: str = "inpaint-blur", seed: int = 0,
                  device: str = "auto", batch_size: int = 256, display_size: int = 224,
                  progress: Callable[[float], None] | None = None) -> RegionAnalysis:
    """Region indices of image `image_index` of `dataset` for `network`'s decision (its own prediction
    unless `target_class` is given)."""
    net = load_network(network, weights=weights, architecture=architecture, allow_download=allow_download)
    images = load_dataset(dataset)
    if not 0 <= image_index < len(images):
        raise ValueError(f"image index {image_index} is out of range 0…{len(images) - 1}")
    result = region_sobol(net.model, images.load(image_index), net.preprocess, target_class, grid=grid,
                          n_samples=n_samples, perturbation=perturbation, device=resolve_device(device),
                          batch_size=batch_size, seed=seed, progress=progress)
    display = images.display(image_index, display_size)
    heat = overlay(display, result.map("ST"), crop_fraction=input_crop_fraction(net.preprocess))
    labels = getattr(images, "labels", None)
    label = None if labels is None else int(labels[image_index])
    return RegionAnalysis(result=result, image_id=images.image_id(image_index), label=label,
                          overlay_png=_png(heat), image_png=_png(display.convert("RGB")))
