"""One forward pass over an image set, returning a spatially pooled N x C float32 matrix per layer.

Pooling happens inside the batch loop, so nothing of shape N x C x H x W is ever held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .datasets import READ_ERRORS, ImageSet


@dataclass
class Activations:
    """``values[layer]`` is N x C float32; row j belongs to image ``indices[j]`` of the image set.

    ``indices`` leaves out images that failed to decode (counted in ``n_failed``).
    """

    values: dict[str, np.ndarray]
    indices: np.ndarray
    n_failed: int = 0
    shapes: dict[str, tuple[int, ...]] | None = None


def pool(t: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """B x C x ... -> B x C. Dimensions after the channel dimension are spatial."""
    if t.ndim == 2:
        return t
    flat = t.flatten(2)
    return flat.mean(2) if pooling == "mean" else flat.amax(2)


class _Indexed(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet, preprocess: Callable) -> None:
        self.images = images
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            return i, self.preprocess(self.images.load(i))
        except READ_ERRORS:
            return i, None


def _collate(items):
    ok = [(i, t) for i, t in items if t is not None]
    failed = len(items) - len(ok)
    if not ok:
        return torch.empty(0, dtype=torch.long), None, failed
    return torch.tensor([i for i, _ in ok]), torch.stack([t for _, t in ok]), failed


def batches(images: ImageSet, preprocess: Callable, batch_size: int = 256, num_workers: int = 0):
    """Yield ``(indices, input batch, n_failed)``; decoding failures are dropped and counted."""
    loader = torch.utils.data.DataLoader(_Indexed(images, preprocess), batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, collate_fn=_collate)
    yield from loader


def layer_extractor(model: nn.Module, layers: Sequence[str]) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """A callable returning ``{layer: output}``: torchvision's feature extractor, or forward hooks on
    the submodules of a TorchScript model (which FX cannot trace)."""
    if isinstance(model, torch.jit.ScriptModule):
        return _HookExtractor(model, layers)
    from torchvision.models.feature_extraction import create_feature_extractor

    from .networks import list_layers

    try:
        return create_feature_extractor(model, return_nodes={l: l for l in layers})
    except ValueError:
        # tracing is slow, so layer names are checked only once the extractor refuses them
        nodes = list_layers(model)
        missing = [l for l in layers if l not in nodes]
        if not missing:
            raise
        shown = ", ".join(nodes[:40]) + (" …" if len(nodes) > 40 else "")
        raise ValueError(f"unknown layer(s) {', '.join(missing)}; hookable layers are: {shown}") from None


class _HookExtractor:
    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)
        modules = dict(model.named_modules())
        missing = [l for l in layers if l not in modules]
        if missing:
            raise ValueError(f"unknown layer(s) {', '.join(missing)}; layers are: {', '.join(n for n in modules if n)}")
        self.modules = [modules[l] for l in layers]

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for name, m in zip(self.layers, self.modules):
                handles.append(m.register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o)))
        except RuntimeError as exc:
            for h in handles:
                h.remove()
            raise ValueError(f"this TorchScript model does not accept forward hooks ({exc}); save a state "
                             f"dict for its architecture instead") from None
        try:
            self.model(x)
        finally:
            for h in handles:
                h.remove()
        return out


def extract(model: nn.Module, images: ImageSet, preprocess: Callable, layers: Sequence[str],
            pooling: str = "mean", activation: str = "post_relu", device: torch.device | str = "cpu",
            batch_size: int = 256, num_workers: int = 0,
            progress: Callable[[float], None] | None = None) -> Activations:
    """Pooled activations of ``layers`` for every image; ``post_relu`` applies a ReLU to each hooked
    output first (the NMF basis needs non-negative data)."""
    device = torch.device(device)
    model = model.to(device).eval()
    extractor = layer_extractor(model, layers)
    n = len(images)
    values: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    kept = np.zeros(n, dtype=bool)
    n_failed = 0
    done = 0
    with torch.inference_mode():
        for idx, x, failed in batches(images, preprocess, batch_size, num_workers):
            n_failed += failed
            done += len(idx) + failed
            if x is not None:
                x = x.to(device, non_blocking=True)
                out = extractor(x)
                for layer in layers:
                    t = out[layer]
                    if activation == "post_relu":
                        t = torch.relu(t)
                    pooled = pool(t, pooling).float().cpu().numpy()
                    if layer not in values:
                        shapes[layer] = tuple(t.shape[1:])
                        values[layer] = np.zeros((n, pooled.shape[1]), dtype=np.float32)
                    values[layer][idx.numpy()] = pooled
                kept[idx.numpy()] = True
            if progress:
                progress(done / n)
    indices = np.flatnonzero(kept)
    if len(indices) == 0:
        raise ValueError("no image could be read")
    if len(indices) < n:
        values = {k: v[indices] for k, v in values.items()}
    return Activations(values=values, indices=indices, n_failed=n_failed, shapes=shapes)
