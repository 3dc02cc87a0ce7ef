"""Feature visualizations: images optimised to drive a unit's own score up (``synthetic_max``) or down
(``synthetic_min``), the synthetic references of Borowski et al. (2021).

The parameterisations are horama's (Fel et al. 2023, "Unlocking feature visualization for deeper
networks with magnitude constrained optimization"): MACO (``maco_preconditioner``: a fixed magnitude
spectrum, optimised phase) and Lucid's Fourier basis (``fourier_preconditionner``, Olah et al. 2017), both
in horama's decorrelated colour space. horama's own loops are not used: they optimise one image per call,
download an ImageNet spectrum from the web into the working directory, and jitter crops by a fixed share
of the image (crop centres spread by 15 %), which on an 8x8 network moves the image by whole input pixels
and leaves the unit below the natural images. Here

- the MACO magnitude template is computed from the job's own image set
  (:func:`magnitude_template`: the mean amplitude spectrum of the displayed images in horama's
  decorrelated colour space) and stored in the artifact; nothing is downloaded or read from the current
  directory;
- a batch of images (every chosen unit of a basis, its max and min sets, ``n_references`` each) is
  optimised at once through horama's preconditioners, so a GPU is kept busy;
- the image is optimised in the pixel space of the displayed image (the display size people see) and
  reaches the network through a differentiable copy of its preprocessing (:class:`DisplayToInput`), so
  the PNG shown is the image that drove the unit;
- transformation robustness (random shifts and zooms, pixel noise) is scaled to the network's input:
  shifts of at most half an input pixel, zooms of at most one input pixel;
- the objective is the unit's score (:func:`stimuli.scores.unit_scores`), the function that ranks the
  natural images.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .scores import unit_scores
from .settings.featurevis import FEATURE_VIS_DEFAULTS, FEATURE_VIS_METHODS, FeatureVisSettings  # noqa: F401

# horama's parameterisation, optimisation steps, NAdam's learning rate, the optimised image's side (null:
# the display size) and the seed. Fourier by default: on the demo network (conv2 channels 0-5, 128 steps,
# one image each) MACO with the digits' own magnitude template left 1 of 6 channels below its best natural
# image and 2 of 6 above their lowest, the Fourier basis none (maximum ratios 1.35-4.1)
SPECTRUM_FILE = "featurevis_spectrum.npy"
# images of the set that go into the magnitude template; the mean amplitude spectrum settles long before
TEMPLATE_IMAGES = 256
PIXEL_NOISE = 0.02
# horama standardises the image before its sigmoid, which caps the contrast: mapped onto [0, 1] most pixels
# stay within [0.2, 0.8] and a digit's full black-on-white contrast is out of reach. The sigmoid is mapped
# onto a wider range and clipped to what a PNG holds.
VALUES_RANGE = (-1.0, 2.0)
# weight of the escape objective while a sparse code is 0: small, so it never competes with a positive code
ESCAPE = 1e-3
FOURIER_DECAY = 1.5


# ---------------------------------------------------------------------------------------------
# from the displayed image to the network's input
# ---------------------------------------------------------------------------------------------
def _shows_inverted(images) -> bool:
    """The digits are shown as dark ink on white while the network reads bright ink on black."""
    from .datasets import DigitsImageSet

    return isinstance(getattr(images, "base", images), DigitsImageSet)


class DisplayToInput(torch.nn.Module):
    """A differentiable copy of the network's preprocessing, applied to displayed images (B x 3 x S x S,
    values in [0, 1]): grayscale (ITU-R 601 luma, as PIL's ``convert("L")``), box-resized and normalised
    for the demo network; for ImageNet-style preprocessing the shorter side resized (bilinear,
    antialiased), centre-cropped and normalised. :meth:`from_png` is the same path for a saved image,
    through the network's own (PIL) preprocessing."""

    def __init__(self, net, images) -> None:
        super().__init__()
        from .networks import DemoPreprocess

        pp = net.preprocess
        self.inverted = _shows_inverted(images)
        self._preprocess = pp
        if isinstance(pp, DemoPreprocess):
            self.gray, self.input_size = True, 8
            self.resize, self.crop = 8, 8
            mean, std = [pp.mean], [pp.std]
        else:
            info = (net.info or {}).get("preprocess") or {}
            resize, crop = info.get("resize", 256), info.get("crop", 224)
            resize = resize[0] if isinstance(resize, (list, tuple)) else resize
            crop = crop[0] if isinstance(crop, (list, tuple)) else crop
            self.gray, self.input_size = False, int(crop)
            self.resize, self.crop = int(resize), int(crop)
            # timm's and open_clip's evaluation transforms are bicubic (stimuli.networks)
            self.mode = "bicubic" if info.get("interpolation") == "bicubic" else "bilinear"
            mean, std = info.get("mean", [0.485, 0.456, 0.406]), info.get("std", [0.229, 0.224, 0.225])
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def to_display(self, x: torch.Tensor) -> torch.Tensor:
        """The image as it will be saved: one grey channel for a grayscale network."""
        if self.gray:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            return (x * w).sum(1, keepdim=True)
        return x

    def forward(self, shown: torch.Tensor) -> torch.Tensor:
        """Displayed image (as :meth:`to_display` returns it) -> network input."""
        x = 1.0 - shown if self.inverted else shown
        if self.gray:
            x = F.adaptive_avg_pool2d(x, (self.resize, self.resize))
        else:
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.mode, antialias=True,
                              align_corners=False)
            top = (self.resize - self.crop) // 2
            x = x[..., top:top + self.crop, top:top + self.crop]
        return (x - self.mean) / self.std

    def from_png(self, data: bytes) -> torch.Tensor:
        """A saved PNG through the network's own preprocessing (1 x C x H x W)."""
        image = Image.open(io.BytesIO(data))
        image.load()
        if self.inverted:
            image = ImageOps.invert(image.convert("L"))
        return self._preprocess(image).unsqueeze(0)


def to_png(shown: torch.Tensor) -> bytes:
    """One displayed image (C x S x S in [0, 1]) as PNG bytes (:func:`stimuli.render.png_bytes`)."""
    from .render import png_bytes

    arr = np.rint(shown.detach().clamp(0, 1).cpu().numpy() * 255).astype(np.uint8)
    image = Image.fromarray(arr[0], mode="L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0))
    return png_bytes(image)


def _horama():
    """Import horama. Its package imports matplotlib (for its plots), which writes a font cache into its
    config folder, by default under the home directory: unless the caller chose one, that folder is
    put in stimuli's cache directory, so generation writes only there and into the artifact."""
    import os

    from .networks import cache_dir

    os.environ.setdefault("MPLCONFIGDIR", str(cache_dir() / "matplotlib"))
    import horama

    return horama


# ---------------------------------------------------------------------------------------------
# the MACO magnitude template
# ---------------------------------------------------------------------------------------------
def _decorrelation() -> torch.Tensor:
    _horama()
    from horama.common import get_color_correlation_svd_sqrt

    # horama recorrelates a pixel row vector v by v @ M; its decorrelated value is v @ M^-1
    return torch.linalg.inv(get_color_correlation_svd_sqrt(torch.device("cpu")).double()).float()


def magnitude_template(images, size: int, seed: int = 0, n_images: int = TEMPLATE_IMAGES) -> np.ndarray:
    """3 x size x (size // 2 + 1) float32: the mean amplitude spectrum of the image set's displayed
    images (at most ``n_images``, drawn with ``seed``), each standardised and taken to horama's
    decorrelated colour space first — the quantity horama's ImageNet template holds, for this image set."""
    rng = np.random.default_rng(seed)
    n = len(images)
    picked = np.sort(rng.choice(n, size=min(n, n_images), replace=False))
    inv = _decorrelation()
    total = torch.zeros(3, size, size // 2 + 1, dtype=torch.float64)
    for i in picked:
        rgb = np.asarray(images.display(int(i), size).convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(rgb).reshape(-1, 3)
        x = (x - x.mean()) / (x.std() + 1e-4)
        d = (x @ inv).reshape(size, size, 3).permute(2, 0, 1)
        total += torch.fft.rfft2(d).abs().double()
    return (total / len(picked)).float().numpy()


# ---------------------------------------------------------------------------------------------
# the optimisation
# ---------------------------------------------------------------------------------------------
@dataclass
class Target:
    """One image to optimise: ``unit`` of the basis, pushed up (``sign`` +1) or down (-1)."""

    unit: int
    sign: float


def _batched(one: Callable[[torch.Tensor], torch.Tensor], device) -> Callable[[torch.Tensor], torch.Tensor]:
    """horama's one-image preconditioner over a batch, clipped to what a PNG holds: ``torch.vmap`` on a
    GPU, so a step is a few batched kernels; a loop on the CPU, where vmap measured slower (0.19 s vs 0.11 s
    a step for 8 Fourier images of 96 px with their backward, one core). Both give the same images."""
    if torch.device(device).type == "cuda":
        return lambda p: torch.vmap(one)(p).clamp(0.0, 1.0)
    return lambda p: torch.stack([one(p[i]) for i in range(p.shape[0])]).clamp(0.0, 1.0)


def _parameterization(method: str, n: int, size: int, magnitude: torch.Tensor | None, gen: torch.Generator,
                      device) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The optimised tensor (n images' phases or spectra, started from noise) and the map from it to
    n x 3 x size x size images in [0, 1], through horama's preconditioners (:func:`_batched`)."""
    _horama()
    from horama.fourier_fv import fourier_preconditionner, get_fft_scale
    from horama.maco_fv import maco_preconditioner

    spectrum_shape = (n, 3, size, size // 2 + 1)
    # the noise is drawn on the CPU from the job's generator, so a seed gives the same start on any device
    if method == "maco":
        phase = torch.randn(spectrum_shape, generator=gen).to(device).requires_grad_(True)
        mag = magnitude.to(device)
        return phase, _batched(lambda p: maco_preconditioner(mag, p, VALUES_RANGE, device), device)
    re = torch.randn(spectrum_shape, generator=gen)
    im = torch.randn(spectrum_shape, generator=gen)
    spectrum = torch.stack([re, im], -1).to(device).requires_grad_(True)
    scale = get_fft_scale(size, size, FOURIER_DECAY).to(device)
    return spectrum, _batched(
        lambda s: fourier_preconditionner(torch.view_as_complex(s), scale, VALUES_RANGE, device), device)


def _robust(x: torch.Tensor, input_size: int, gen: torch.Generator) -> torch.Tensor:
    """Random shift (at most half a network input pixel), zoom (at most one input pixel) and noise."""
    n = x.shape[0]
    u = torch.rand(n, 3, generator=gen).to(x.device)
    zoom = 1.0 - u[:, 0] * (1.0 / input_size)
    shift = (u[:, 1:] - 0.5) * (1.0 / input_size)  # normalised coordinates span 2: half an input pixel
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = zoom
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    noise = torch.randn(x.shape, generator=gen).to(x.device) * PIXEL_NOISE
    return x + noise


def optimize(model, layer: str, basis, targets: list[Target], to_input: DisplayToInput, size: int,
             fv: dict[str, Any], magnitude: np.ndarray | None, seed: int, pooling: str = "mean",
             activation: str = "post_relu", device: torch.device | str = "cpu",
             progress: Callable[[float], None] | None = None) -> torch.Tensor:
    """Displayed images (len(targets) x C x size x size in [0, 1]) optimised together, image ``i`` for
    ``targets[i]``. Deterministic on the CPU for a given ``seed``."""
    device = torch.device(device)
    model = model.to(device).eval()
    # only the image is optimised: no gradients for the weights, and the caller's flags given back after
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        return _optimize(model, layer, basis, targets, to_input, size, fv, magnitude, seed, pooling, activation,
                         device, progress)
    finally:
        for p in trainable:
            p.requires_grad_(True)


def _optimize(model, layer, basis, targets, to_input, size, fv, magnitude, seed, pooling, activation, device,
              progress) -> torch.Tensor:
    from .activations import layer_extractor, pool

    gen = torch.Generator().manual_seed(int(seed))
    extractor = layer_extractor(model, [layer])
    to_input = to_input.to(device)
    n = len(targets)
    mag = None if magnitude is None else torch.as_tensor(magnitude, dtype=torch.float32)
    param, images_of = _parameterization(fv["method"], n, size, mag, gen, device)
    units = torch.tensor([t.unit for t in targets], device=device)
    signs = torch.tensor([t.sign for t in targets], dtype=torch.float32, device=device)
    comp = torch.as_tensor(np.asarray(basis.components_), dtype=torch.float32, device=device)
    atoms = comp[units] / comp[units].norm(dim=1, keepdim=True).clamp_min(1e-12)
    offset = torch.as_tensor(np.asarray(basis.offset_), dtype=torch.float32, device=device)
    sparse = torch.tensor(basis.tags.sparse_codes, device=device)
    optimizer = torch.optim.NAdam([param], lr=float(fv["lr"]))
    steps = int(fv["steps"])
    for step in range(steps):
        optimizer.zero_grad()
        shown = to_input.to_display(images_of(param))
        x = to_input(_robust(shown, to_input.input_size, gen))
        t = extractor(x)[layer]
        if activation == "post_relu":
            t = torch.relu(t)
        pooled = pool(t, pooling)
        codes = unit_scores(basis, pooled)
        picked = codes.gather(1, units[:, None])[:, 0]
        # a sparse code (NMF, dictionary, SAE) is 0 over a whole region of images and gives no gradient
        # there, like a dead ReLU; while an image sits at 0 its objective is the cosine between the
        # activation and the unit's atom, which leads into the region where the solver picks that atom.
        # (The residual along the atom, what the solver's optimality condition compares with its
        # threshold, stalled on one demo dictionary atom: the other atoms kept absorbing what it gained.)
        along = ((pooled - offset - codes @ comp) * atoms).sum(1)
        centred = pooled - offset
        aligned = (centred * atoms).sum(1) / centred.norm(dim=1).clamp_min(1e-12)
        objective = torch.where((signs > 0) & (picked <= 0) & sparse, ESCAPE * aligned, signs * picked)
        # pushed down, a sparse code stops at 0 with no gradient, a hair from turning positive again once
        # the image is rounded to 8 bits: the same term keeps pushing it into the region where it is 0
        objective = objective - torch.where((signs < 0) & sparse, ESCAPE * along, torch.zeros_like(along))
        # images are independent (eval mode), so the sum gives each image its own gradient
        (-objective.sum()).backward()
        optimizer.step()
        if progress is not None and ((step + 1) % 16 == 0 or step + 1 == steps):
            progress((step + 1) / steps)
    with torch.no_grad():
        return to_input.to_display(images_of(param)).cpu()


def score_png(model, layer: str, basis, unit: int, data: bytes, to_input: DisplayToInput,
              pooling: str = "mean", activation: str = "post_relu", device="cpu", extractor=None) -> float:
    """The unit's score on a saved PNG, read back through the network's own preprocessing.
    ``extractor``: a :func:`stimuli.activations.layer_extractor` of ``model`` for ``layer``, to reuse."""
    from .activations import layer_extractor, pool

    if extractor is None:
        extractor = layer_extractor(model.to(device).eval(), [layer])
    with torch.no_grad():
        t = extractor(to_input.from_png(data).to(device))[layer]
        if activation == "post_relu":
            t = torch.relu(t)
        return float(unit_scores(basis, pool(t, pooling))[0, unit])


def visualize_units(net, images, layer: str, basis, units: list[int], n_images: int, fv: dict[str, Any],
                    magnitude: np.ndarray | None, size: int, key: str, pooling: str = "mean",
                    activation: str = "post_relu", device="cpu", batch_size: int = 256,
                    progress: Callable[[float], None] | None = None) -> dict[int, dict[str, list[bytes]]]:
    """``{unit: {"max": [png, ...], "min": [png, ...]}}``, each list strongest first (by the score read
    back from the PNG). Images are optimised in batches of at most ``batch_size``; a batch's seed is
    derived from ``fv["seed"]``, ``key`` (layer and basis) and the batch's first image, so one
    configuration gives the same images (bytes, on the CPU), and a different ``batch_size`` regroups
    the images and gives different ones. Each image has its own start: distinct seeds within a unit."""
    to_input = DisplayToInput(net, images)
    targets = [Target(u, s) for u in units for s in (1.0, -1.0) for _ in range(n_images)]
    shown = []
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size]
        digest = hashlib.sha256(f"{fv['seed']}:{key}:{start}".encode()).digest()
        seed = int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)
        shown.append(optimize(net.model, layer, basis, chunk, to_input, size, fv, magnitude, seed,
                              pooling=pooling, activation=activation, device=device,
                              progress=None if progress is None else
                              (lambda f, s=start, c=len(chunk): progress((s + f * c) / len(targets)))))  # noqa: B008 (bound per chunk)
    shown_all = torch.cat(shown)
    out: dict[int, dict[str, list[bytes]]] = {u: {"max": [], "min": []} for u in units}
    scored: dict[int, dict[str, list[tuple[float, bytes]]]] = {u: {"max": [], "min": []} for u in units}
    from .activations import layer_extractor

    extractor = layer_extractor(net.model.to(device).eval(), [layer])
    for t, img in zip(targets, shown_all):
        data = to_png(img)
        s = score_png(net.model, layer, basis, t.unit, data, to_input, pooling, activation, device, extractor)
        scored[t.unit]["max" if t.sign > 0 else "min"].append((s, data))
    for u in units:
        out[u]["max"] = [d for _, d in sorted(scored[u]["max"], key=lambda p: -p[0])]
        out[u]["min"] = [d for _, d in sorted(scored[u]["min"], key=lambda p: p[0])]
    return out


def synthetic_references(settings: FeatureVisSettings, net, images, fitted: dict, chosen: dict, writer, size: int,
                         device, report: Callable[[str, float], None], *, n_references: int = 9,
                         pooling: str = "mean", activation: str = "post_relu",
                         batch_size: int = 256) -> tuple[dict, dict]:
    """The pipeline's ``featurevis`` stage. For every chosen unit: ``synthetic_max`` / ``synthetic_min``
    PNGs written through ``writer`` (content-addressed, strongest first) and the measures
    ``synthetic_max_score``, ``synthetic_min_score`` (read back from the saved PNGs),
    ``natural_max_score``, ``natural_min_score`` and ``synthetic_max_ratio``, added to the unit's
    measures in place. Returns ``({(layer, basis, unit): {"synthetic_max": [...], "synthetic_min":
    [...]}}, manifest entry)``; the entry names the magnitude template stored in the artifact (MACO).
    ``n_references`` images per side, scored with the units' ``pooling`` and ``activation``."""
    fv = settings.params()
    side = fv["image_size"] or size
    side += side % 2  # horama's inverse real FFT gives an even side
    magnitude = None
    entry: dict[str, Any] = {"image_size": side}
    if fv["method"] == "maco":
        magnitude = magnitude_template(images, side, seed=fv["seed"])
        buf = io.BytesIO()
        np.save(buf, magnitude, allow_pickle=False)
        entry["magnitude_template"] = writer.add_file(SPECTRUM_FILE, buf.getvalue())
        entry["magnitude_template_images"] = min(len(images), TEMPLATE_IMAGES)
    to_input = DisplayToInput(net, images)
    out = {}
    jobs = list(chosen.items())
    report("featurevis", 0.0)
    for j, ((layer, name), entries) in enumerate(jobs):
        basis, codes = fitted[(layer, name)]
        units = [u for u, _ex, _m in entries]
        pngs = visualize_units(net, images, layer, basis, units, n_references, fv, magnitude, side,
                               f"{layer}:{name}", pooling=pooling, activation=activation,
                               device=device, batch_size=batch_size,
                               progress=lambda f, j=j: report("featurevis", (j + f) / len(jobs)))
        from .activations import layer_extractor

        extractor = layer_extractor(net.model.to(device).eval(), [layer])
        for u, _ex, measures in entries:
            smax = score_png(net.model, layer, basis, u, pngs[u]["max"][0], to_input, pooling,
                             activation, device, extractor)
            smin = score_png(net.model, layer, basis, u, pngs[u]["min"][0], to_input, pooling,
                             activation, device, extractor)
            nmax, nmin = float(codes.max[u]), float(codes.min[u])
            measures.update({
                "synthetic_max_score": round(smax, 6), "synthetic_min_score": round(smin, 6),
                "natural_max_score": round(nmax, 6), "natural_min_score": round(nmin, 6),
                "synthetic_max_ratio": round(smax / nmax, 6) if nmax > 0 else None,
            })
            out[(layer, name, u)] = {"synthetic_max": [writer.add_image(d) for d in pngs[u]["max"]],
                                     "synthetic_min": [writer.add_image(d) for d in pngs[u]["min"]]}
        report("featurevis", (j + 1) / len(jobs))
    return out, entry
