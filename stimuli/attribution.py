"""Where in an image a unit responds: attribution maps for a unit of a basis, and overlay PNGs.

A unit's response to an image is its code ``h_j`` of the pooled activation ``ā(x)`` (pooled as the
basis was fitted). Gradients need ``∂h_j/∂ā``, the unit's *readout* at that image (:func:`unit_readout`):

* neurons and PCA: ``components_[j]`` (the encoder is linear and orthonormal);
* NMF and dictionary atoms: on the image's active set ``S`` (units with a non-zero code) the
  non-negative least-squares / lasso solution is locally linear, ``∂h_S/∂ā = (W_S W_Sᵀ)⁻¹ W_S`` (the
  L1 weight only shifts it); a unit outside the active set has no gradient, and the least-squares
  readout (row ``j`` of ``pinv(W)ᵀ``) stands in, so a map is still drawn;
* any other basis (e.g. a sparse autoencoder): central finite differences of ``transform``.

Methods (each returns an H x W map at the network's input resolution, larger = more response):

* ``saliency`` (Simonyan et al., 2014): ``max_c |∂h_j/∂x_c|``;
* ``gradcam`` (Selvaraju et al., 2017) with the unit's code in place of a class score: channel weights
  ``α_c = mean_s ∂h_j/∂a_{c,s}``, map ``ReLU(Σ_c α_c a_{c,s})`` at the layer's resolution, upsampled
  bilinearly. For a linear readout with mean pooling this is the unit's rectified code density;
* ``occlusion`` (Zeiler & Fergus, 2014): ``h_j(x) − h_j(x with a window set to 0)``, with the exact
  codes from ``basis.transform``, averaged over the windows covering each pixel. 0 in the normalised
  input space is the training data's mean colour.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .activations import pool

METHODS = ("saliency", "gradcam", "occlusion")


class _Stop(Exception):
    """Raised from the hook: nothing after the layer is needed."""


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _layer_output(model: torch.nn.Module, layer: str, x: torch.Tensor, leaf: bool = False) -> torch.Tensor:
    """The module's output for ``x``, stopping the forward pass there."""
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"attribution needs a module layer; {layer!r} is not a submodule") from None
    box: dict = {}

    def hook(_m, _i, out):
        box["t"] = out.detach().requires_grad_(True) if leaf else out
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "t" not in box:
        raise ValueError(f"layer {layer!r} was not reached by the forward pass")
    return box["t"]


def _activation(t: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(t) if activation == "post_relu" else t


def unit_readout(basis, pooled: np.ndarray, unit_index: int) -> np.ndarray:
    """``∂h_j/∂ā`` at the pooled activation ``pooled`` (C,), see the module docstring."""
    from .bases import DictionaryBasis, NeuronBasis, NMFBasis, PCABasis

    W = np.asarray(basis.components_, dtype=np.float64)
    pooled = np.asarray(pooled, dtype=np.float64).ravel()
    j = int(unit_index)
    if isinstance(basis, (NeuronBasis, PCABasis)):
        return W[j].copy()
    if isinstance(basis, (NMFBasis, DictionaryBasis)):
        h = basis.transform(pooled[None])[0]
        active = np.flatnonzero(np.abs(h) > 0)
        if j in active:
            Ws = W[active]
            J = np.linalg.lstsq(Ws @ Ws.T, Ws, rcond=None)[0]
            return J[int(np.searchsorted(active, j))]
        return np.linalg.pinv(W).T[j]
    eps = 1e-3 * (np.linalg.norm(pooled) / np.sqrt(len(pooled)) + 1e-6)
    I = np.eye(len(pooled)) * eps
    plus = basis.transform(np.maximum(pooled + I, 0) if (pooled >= 0).all() else pooled + I)[:, j]
    minus = basis.transform(np.maximum(pooled - I, 0) if (pooled >= 0).all() else pooled - I)[:, j]
    return (plus - minus) / (2 * eps)


def unit_attribution(model: torch.nn.Module, image_tensor: torch.Tensor, layer: str, basis, unit_index: int,
                     method: str = "gradcam", *, activation: str = "post_relu", pooling: str = "mean",
                     device: torch.device | str | None = None, window: int | None = None,
                     stride: int | None = None, batch_size: int = 256) -> np.ndarray:
    """An H x W map (the input's resolution) of where unit ``unit_index`` of ``basis`` responds in
    ``image_tensor`` (one C x H x W network input). ``window`` / ``stride`` set occlusion's square
    patch (default an eighth of the shorter side, half-overlapping)."""
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    device = _device_of(model) if device is None else torch.device(device)
    model = model.to(device).eval()
    x = torch.as_tensor(image_tensor, dtype=torch.float32, device=device)
    if x.ndim != 3:
        raise ValueError(f"an image is a C x H x W tensor, got shape {tuple(x.shape)}")
    x = x.unsqueeze(0)
    H, W = x.shape[-2:]
    with torch.no_grad():
        t0 = _layer_output(model, layer, x)
        pooled0 = pool(_activation(t0, activation).float(), pooling)[0].double().cpu().numpy()

    if method == "occlusion":
        return _occlusion(model, x, layer, basis, unit_index, activation, pooling, window, stride, batch_size,
                          pooled0)

    r = torch.as_tensor(unit_readout(basis, pooled0, unit_index), dtype=torch.float32, device=device)
    with torch.enable_grad():
        if method == "saliency":
            xg = x.detach().clone().requires_grad_(True)
            t = _layer_output(model, layer, xg)
            u = pool(_activation(t, activation).float(), pooling) @ r
            (g,) = torch.autograd.grad(u.sum(), xg)
            return g[0].abs().amax(0).double().cpu().numpy()
        t = _layer_output(model, layer, x, leaf=True)
        if t.ndim != 4:
            raise ValueError(f"gradcam needs a spatial layer (N x C x H x W); {layer!r} gives {tuple(t.shape)}")
        a = _activation(t, activation).float().detach().requires_grad_(True)
        u = pool(a, pooling) @ r
        (g,) = torch.autograd.grad(u.sum(), a)
        alpha = g.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((alpha * a.detach()).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=(H, W), mode="bilinear", align_corners=False)
        return cam[0, 0].double().cpu().numpy()


def _occlusion(model, x, layer, basis, unit_index, activation, pooling, window, stride, batch_size,
               pooled0) -> np.ndarray:
    H, W = x.shape[-2:]
    window = window or max(1, round(min(H, W) / 8))
    stride = stride or max(1, window // 2)
    tops = sorted({*range(0, max(H - window, 0) + 1, stride), max(H - window, 0)})
    lefts = sorted({*range(0, max(W - window, 0) + 1, stride), max(W - window, 0)})
    boxes = [(i, j) for i in tops for j in lefts]
    pooled = []
    with torch.no_grad():
        for s in range(0, len(boxes), batch_size):
            chunk = boxes[s:s + batch_size]
            xs = x.repeat(len(chunk), 1, 1, 1)
            for b, (i, j) in enumerate(chunk):
                xs[b, :, i:i + window, j:j + window] = 0
            t = _layer_output(model, layer, xs)
            pooled.append(pool(_activation(t, activation).float(), pooling).double().cpu().numpy())
    P = np.concatenate([pooled0[None], *pooled])
    codes = basis.transform(P)[:, int(unit_index)]
    drop = codes[0] - codes[1:]
    total = np.zeros((H, W))
    count = np.zeros((H, W))
    for d, (i, j) in zip(drop, boxes):
        total[i:i + window, j:j + window] += d
        count[i:i + window, j:j + window] += 1
    return total / np.maximum(count, 1)


# ---------------------------------------------------------------------------------------------
# overlays
# ---------------------------------------------------------------------------------------------
def input_crop_fraction(preprocess: Callable | None) -> float:
    """The share of the display image's side the network sees: ``crop / resize`` for a
    resize-then-centre-crop transform (torchvision's weights transforms, ``imagenet_preprocess``),
    1 otherwise. The display image (``ImageSet.display``) is the centre square of the image."""
    t = getattr(preprocess, "transform", preprocess)
    crop, resize = getattr(t, "crop_size", None), getattr(t, "resize_size", None)
    if crop is None:
        for step in getattr(t, "transforms", []) or []:
            name = type(step).__name__
            if name == "CenterCrop":
                crop = step.size
            elif name == "Resize":
                resize = step.size
    first = (lambda v: v[0] if isinstance(v, (list, tuple)) else v)
    crop, resize = first(crop), first(resize)
    if isinstance(crop, (int, float)) and isinstance(resize, (int, float)) and resize > 0 and crop <= resize:
        return float(crop) / float(resize)
    return 1.0


def overlay(display_image, heatmap: np.ndarray, alpha: float = 0.55, crop_fraction: float = 1.0,
            cmap: str = "inferno"):
    """The display image with ``heatmap``'s positive part blended on (an RGB PIL image).

    The heatmap is scaled to [0, 1] by its maximum and stretched over the central ``crop_fraction`` of
    the image (where the network looked); blending grows with the heat, so cold areas stay readable.
    """
    from matplotlib import colormaps
    from PIL import Image

    base = display_image.convert("RGB")
    S_w, S_h = base.size
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0, None)
    h = h / h.max() if h.max() > 0 else h
    cw, ch = max(1, round(S_w * crop_fraction)), max(1, round(S_h * crop_fraction))
    left, top = (S_w - cw) // 2, (S_h - ch) // 2
    heat = np.asarray(Image.fromarray(h.astype(np.float32)).resize((cw, ch), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, 1)
    rgb = colormaps[cmap](heat)[..., :3]
    arr = np.asarray(base, dtype=np.float64) / 255.0
    region = arr[top:top + ch, left:left + cw]
    w = (alpha * (0.35 + 0.65 * heat))[..., None]
    arr[top:top + ch, left:left + cw] = (1 - w) * region + w * rgb
    return Image.fromarray(np.round(arr * 255).astype(np.uint8))


def attribution_overlays(model, images, preprocess, indices, layer: str, basis, unit_index: int,
                         method: str = "gradcam", size: int | None = None, **kwargs: Any) -> list:
    """Overlay images (PIL) for ``indices`` of an ImageSet, in order."""
    frac = input_crop_fraction(preprocess)
    out = []
    for i in indices:
        x = preprocess(images.load(int(i)))
        heat = unit_attribution(model, x, layer, basis, unit_index, method, **kwargs)
        out.append(overlay(images.display(int(i), size), heat, crop_fraction=frac))
    return out
