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
  input space is the training data's mean colour;
* ``lrp`` (Bach et al., 2015), computed by zennit (Anders et al., 2021, "Software for dataset-wide
  XAI: from local explanations to global insights with Zennit, CoRelAy, and ViRelAy"): the
  linearised code ``u = pool(act(layer)) · r`` is the relevance at the top, given to the layer's
  output by LRP-0 through the readout and the spatial pooling (``R = a ⊙ ∂u/∂a``, which sums to
  ``u``), then shared out to the input by zennit's ``EpsilonPlusFlat`` composite, the rules
  Kohlbrenner et al. (2020, "Towards best practice in explaining neural network decisions with LRP")
  recommend: LRP-ε (``epsilon``, zennit's 1e-6) on ``Linear`` layers, LRP-z⁺ on convolutions, the
  flat rule on the layer reading the input — or the z^B rule (``ZBox``) when ``input_bounds`` (the
  lowest and highest input value, e.g. a black and a white image through the preprocessing) are
  given; :func:`attribution_overlays` derives them. Sum pooling, average pooling and the residual
  additions use the proportional ("norm") rule, ReLUs pass relevance on, max pooling passes it to
  the maximum (its gradient). zennit's canonizers put the network in the form these rules assume
  first: ``SequentialMergeBatchNorm`` folds each BatchNorm into the convolution or linear layer
  before it (a BatchNorm with no such layer before it passes relevance on unchanged, zennit's
  mapping), and ``ResNetCanonizer`` turns torchvision's residual additions (basic and bottleneck
  blocks) into modules the sum rule applies to. Relevance is conserved layer by layer up to zennit's
  stabiliser (1e-6) and what biases absorb (a bias-free network conserves the unit's value to 1e-4
  relative or better); it is signed (positive = evidence for the unit) and summed over the input's
  channels for the map. A module on the way to the layer that these rules do not cover (GELU,
  LayerNorm, attention, …) is an error naming it, never a silent fall back to the gradient; residual
  additions written in a custom ``forward`` (not torchvision's blocks) are invisible to module hooks
  and are not canonized.
* ``integrated_gradients`` (Sundararajan et al., 2017), computed by captum
  (``captum.attr.IntegratedGradients``): the unit's score ``h_j`` (:func:`stimuli.scores.unit_scores` of
  the pooled layer, exactly as it ranks the exemplars) integrated along the straight path from a
  baseline (0 in the normalised input space: the training data's mean colour) to the image, summed over
  the input's channels. This is the method for transformers: it needs only gradients, so attention,
  LayerNorm and GELU pose no problem (zennit's rules do not cover them, and an LRP for transformers such
  as lxt's AttnLRP pulls in transformers, accelerate and bitsandbytes; captum needs only torch), and
  its completeness axiom — the map sums to ``h_j(x) − h_j(baseline)`` — is checkable
  (:func:`integrated_gradients` returns the gap). Grad-CAM works on a transformer too, with its patch
  tokens put back on the patch grid (:meth:`stimuli.layers.Layout.spatial`), but a unit read from the
  class token has no gradient at the same layer's patch tokens, so its map would be empty.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..activations import pool
from ..layers import Layout
from ..settings.attribution import METHODS

# Riemann steps of Integrated Gradients (captum's Gauss-Legendre rule): on the test networks the
# completeness gap stays within a few percent of the unit's change from the baseline at 32
IG_STEPS = 32

# zennit's defaults: ε of the Linear layers' LRP-ε rule, and the stabiliser of every rule's denominator
LRP_EPSILON = 1e-6
LRP_STABILIZER = 1e-6
# module types on the way to the layer for which the composite of the module docstring is LRP: rules,
# a canonizer (BatchNorm merged, ResNet sums), or nothing to do (shape changes, eval-mode dropout);
# max pooling's gradient passes relevance to the maximum, as LRP defines it
_LRP_COVERED = (
    torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d, torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d, torch.nn.AdaptiveAvgPool1d,
    torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d, torch.nn.MaxPool1d, torch.nn.MaxPool2d,
    torch.nn.MaxPool3d, torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool3d,
    torch.nn.ReLU, torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.Identity, torch.nn.Flatten, torch.nn.Unflatten,
    torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
)


class _Stop(Exception):
    """Raised from the hook: nothing after the layer is needed."""


def _device_of(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _layer_output(model: torch.nn.Module, layer: str, x: torch.Tensor, leaf: bool = False,
                  site=None) -> torch.Tensor:
    """The layer's output for ``x`` (any name of :mod:`stimuli.layers`; ``site`` where it was resolved
    before the model was changed), stopping the forward pass there."""
    from ..layers import hook as layer_hook

    box: dict = {}

    def hook(out):
        box["t"] = out.detach().requires_grad_(True) if leaf else out
        raise _Stop

    with layer_hook(model, layer, hook, site=site), contextlib.suppress(_Stop):
        model(x)
    if "t" not in box:
        raise ValueError(f"layer {layer!r} was not reached by the forward pass")
    return box["t"]


def _activation(t: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.relu(t) if activation == "post_relu" else t


def unit_readout(basis, pooled: np.ndarray, unit_index: int) -> np.ndarray:
    """``∂h_j/∂ā`` at the pooled activation ``pooled`` (C,), see the module docstring; each basis knows
    its own (:meth:`stimuli.bases.Basis.readout`)."""
    return basis.readout(np.asarray(pooled, dtype=np.float64).ravel(), int(unit_index))


def unit_attribution(model: torch.nn.Module, image_tensor: torch.Tensor, layer: str, basis, unit_index: int,
                     method: str = "gradcam", *, activation: str = "post_relu", pooling: str = "mean",
                     device: torch.device | str | None = None, window: int | None = None,
                     stride: int | None = None, batch_size: int = 256, epsilon: float = LRP_EPSILON,
                     input_bounds: tuple[Any, Any] | None = None) -> np.ndarray:
    """An H x W map (the input's resolution) of where unit ``unit_index`` of ``basis`` responds in
    ``image_tensor`` (one C x H x W network input). ``window`` / ``stride`` set occlusion's square
    patch (default an eighth of the shorter side, half-overlapping); ``epsilon`` and ``input_bounds``
    (low, high: numbers or tensors broadcastable to the input) are LRP's (module docstring)."""
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

    if method == "integrated_gradients":
        attr, _gap = integrated_gradients(model, x[0], layer, basis, unit_index, activation=activation,
                                          pooling=pooling, batch_size=batch_size)
        return attr.sum(0).double().cpu().numpy()
    r = torch.as_tensor(unit_readout(basis, pooled0, unit_index), dtype=torch.float32, device=device)
    if method == "lrp":
        R = lrp_relevance(model, x, layer, r, activation=activation, pooling=pooling, epsilon=epsilon,
                          input_bounds=input_bounds)
        return R[0].sum(0).double().cpu().numpy()
    with torch.enable_grad():
        if method == "saliency":
            xg = x.detach().clone().requires_grad_(True)
            t = _layer_output(model, layer, xg)
            u = pool(_activation(t, activation).float(), pooling) @ r
            (g,) = torch.autograd.grad(u.sum(), xg)
            return g[0].abs().amax(0).double().cpu().numpy()
        t = _layer_output(model, layer, x, leaf=True)
        layout = Layout.detect(t.shape)
        if layout.kind == "BC" or (layout.kind == "BTC" and layout.grid is None):
            raise ValueError(f"gradcam needs a spatial layer (a map, or tokens on a patch grid); {layer!r} "
                             f"gives {tuple(t.shape)}")
        a = _activation(t, activation).float().detach().requires_grad_(True)
        u = pool(a, pooling, layout) @ r
        (g,) = torch.autograd.grad(u.sum(), a)
        # a transformer's patch tokens on their grid, a channels-last map permuted (B x C x H x W)
        g, a = layout.spatial(g), layout.spatial(a.detach())
        alpha = g.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((alpha * a).sum(1, keepdim=True))
        cam = torch.nn.functional.interpolate(cam, size=(H, W), mode="bilinear", align_corners=False)
        return cam[0, 0].double().cpu().numpy()


def unit_score_function(model: torch.nn.Module, layer: str, basis, unit_index: int, activation: str = "post_relu",
                        pooling: str = "mean") -> Callable[[torch.Tensor], torch.Tensor]:
    """``x (B x C x H x W) -> h_j (B,)``: the unit's score of the pooled layer, differentiable in ``x``
    (the forward pass stops at the layer)."""
    from ..scores import unit_scores

    def score(x: torch.Tensor) -> torch.Tensor:
        t = _layer_output(model, layer, x)
        return unit_scores(basis, pool(_activation(t, activation).float(), pooling))[:, int(unit_index)]

    return score


def integrated_gradients(model: torch.nn.Module, image_tensor: torch.Tensor, layer: str, basis, unit_index: int,
                         *, activation: str = "post_relu", pooling: str = "mean", baseline: torch.Tensor | None = None,
                         n_steps: int = IG_STEPS, batch_size: int = 256) -> tuple[torch.Tensor, float]:
    """``(attribution C x H x W, completeness gap)`` of the unit's score for one network input, by
    captum's Integrated Gradients from ``baseline`` (default 0); the gap is captum's convergence delta,
    ``Σ attribution − (h_j(x) − h_j(baseline))``. A network that normalises right after its stem
    (ConvNeXt's LayerNorm) hardly changes along the path from an all-zero input except next to it, where
    ``n_steps`` points miss the change: the gap is then large, and another baseline (a blurred or another
    image) is the remedy."""
    from captum.attr import IntegratedGradients

    device = _device_of(model)
    x = torch.as_tensor(image_tensor, dtype=torch.float32, device=device).unsqueeze(0)
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=torch.float32,
                                                                         device=device).reshape(x.shape)
    score = unit_score_function(model.eval(), layer, basis, unit_index, activation, pooling)
    with torch.enable_grad():
        attr, delta = IntegratedGradients(score).attribute(
            x, baselines=base, n_steps=int(n_steps), internal_batch_size=max(1, int(batch_size)),
            return_convergence_delta=True)
    return attr[0].detach(), float(delta.reshape(-1)[0])


def lrp_composite(input_bounds: tuple[Any, Any] | None = None, epsilon: float = LRP_EPSILON):
    """zennit's ``EpsilonPlusFlat`` composite with the ResNet/BatchNorm canonizers, and ``ZBox`` on
    the first layer when ``input_bounds`` (low, high: tensors of the batch's shape) are given (module
    docstring)."""
    from zennit.composites import EpsilonPlusFlat
    from zennit.rules import ZBox
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import Linear

    if not epsilon >= 0:
        raise ValueError(f"epsilon must be a non-negative number, not {epsilon!r}")
    first = []
    if input_bounds is not None:
        low, high = (torch.as_tensor(b) for b in input_bounds)
        first = [(Linear, ZBox(low=torch.minimum(low, high), high=torch.maximum(low, high),
                               stabilizer=LRP_STABILIZER))]
    # ResNetCanonizer is SequentialMergeBatchNorm plus the residual blocks' sums; on a network
    # without torchvision's blocks only the BatchNorm merge applies
    return EpsilonPlusFlat(epsilon=epsilon, stabilizer=LRP_STABILIZER, first_map=first,
                           canonizers=[ResNetCanonizer()])


def _check_lrp_covers(ran: list[tuple[str, torch.nn.Module]]) -> None:
    from zennit.layer import Sum

    uncovered = {}
    for name, module in ran:
        if not isinstance(module, (*_LRP_COVERED, Sum)):
            uncovered.setdefault(name, type(module).__name__)
    if uncovered:
        listed = ", ".join(f"{name or '(the model)'} ({kind})" for name, kind in uncovered.items())
        raise ValueError(f"LRP has no rule for {listed} on the way to the layer: LRP here covers "
                         "convolutions, linear layers, BatchNorm, pooling, ReLU and torchvision's residual "
                         "blocks; use another attribution method for this network")


def lrp_relevance(model: torch.nn.Module, x: torch.Tensor, layer: str, readout: torch.Tensor, *,
                  activation: str = "post_relu", pooling: str = "mean", epsilon: float = LRP_EPSILON,
                  input_bounds: tuple[Any, Any] | None = None) -> torch.Tensor:
    """Relevance of each input value (same shape as the batch ``x``) for the linearised unit
    ``pool(act(layer)) · readout``, by zennit with the rules of the module docstring."""
    xg = x.detach().clone().requires_grad_(True)
    if input_bounds is not None:
        # zennit's ZBox wants the bounds with the batch's shape
        input_bounds = tuple(torch.as_tensor(b, dtype=xg.dtype, device=xg.device).expand_as(xg)
                             for b in input_bounds)
    composite = lrp_composite(input_bounds, epsilon)
    # the canonizers patch forward methods with Python control flow, which FX cannot trace
    from ..layers import resolve

    site = resolve(model, layer)
    ran: list[tuple[str, torch.nn.Module]] = []
    with composite.context(model) as modified:
        # after the canonizers, so their sum modules are seen too
        handles = [m.register_forward_hook(lambda m, _i, _o, name=name: ran.append((name, m)))
                   for name, m in modified.named_modules() if next(m.children(), None) is None]
        try:
            with torch.enable_grad():
                t = _layer_output(modified, layer, xg, site=site)
        finally:
            for h in handles:
                h.remove()
        _check_lrp_covers(ran)
        with torch.enable_grad():
            a = _activation(t.detach(), activation).float().requires_grad_(True)
            (g,) = torch.autograd.grad((pool(a, pooling) @ readout).sum(), a)
            # LRP-0 through the readout and the pooling; the ReLU of post_relu passes it on unchanged
            top = (a * g).to(t.dtype)
            (relevance,) = torch.autograd.grad(t, xg, grad_outputs=top)
    return relevance.detach()


def input_bounds(preprocess: Callable, image) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The network inputs of an all-black and an all-white image of ``image``'s size (the z^B rule's
    bounds), or None when the preprocessing does not take such an image."""
    from PIL import Image

    try:
        low = preprocess(Image.new("RGB", image.size, (0, 0, 0)))
        high = preprocess(Image.new("RGB", image.size, (255, 255, 255)))
    except (TypeError, ValueError, OSError):
        return None
    if not (isinstance(low, torch.Tensor) and isinstance(high, torch.Tensor) and low.shape == high.shape):
        return None
    return torch.minimum(low, high), torch.maximum(low, high)


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

    def first(v):
        return v[0] if isinstance(v, (list, tuple)) else v

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
    bounds_by_size = {}  # the bounds depend on the image's size alone: two preprocessed images per size
    out = []
    for i in indices:
        image = images.load(int(i))
        x = preprocess(image)
        if method == "lrp" and "input_bounds" not in kwargs:
            if image.size not in bounds_by_size:
                bounds_by_size[image.size] = input_bounds(preprocess, image)
            bounds = bounds_by_size[image.size]
            if bounds is not None and bounds[0].shape != x.shape:
                bounds = None
            heat = unit_attribution(model, x, layer, basis, unit_index, method, input_bounds=bounds, **kwargs)
        else:
            heat = unit_attribution(model, x, layer, basis, unit_index, method, **kwargs)
        out.append(overlay(images.display(int(i), size), heat, crop_fraction=frac))
    return out
