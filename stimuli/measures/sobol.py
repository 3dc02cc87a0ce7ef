"""Sobol sensitivity indices, and Sobol-SBSA region attribution for a network's decision.

:func:`sobol_indices` estimates first-order (``S1``), total (``ST``) and second-order (``S2``) indices
of a function of ``dim`` independent U[0, 1] inputs:

* sampling (Saltelli, 2002/2010): a scrambled Sobol' sequence of dimension ``2·dim`` gives two
  independent ``n x dim`` matrices ``A`` and ``B``; ``AB_i`` is ``A`` with column ``i`` from ``B``, and
  ``BA_i`` is ``B`` with column ``i`` from ``A`` (second order only). Cost ``n·(dim + 2)`` evaluations, or
  ``n·(2·dim + 2)`` with second order. ``n`` is rounded up to a power of two, which keeps the scrambled
  sequence balanced;
* ``S1_i = mean(f(B)·(f(AB_i) − f(A))) / V`` (Saltelli et al., 2010, table 2 (b));
* ``ST_i = mean((f(A) − f(AB_i))²) / (2V)`` (Jansen, 1999);
* ``S2_ij = mean(f(BA_i)·f(AB_j) − f(A)·f(B)) / V − S1_i − S1_j`` (Saltelli, 2002): ``BA_i`` and
  ``AB_j`` share exactly inputs ``i`` and ``j``;
* ``V`` is the variance of ``f`` over the ``2n`` points of ``A`` and ``B``; confidence intervals are
  bootstrap (resampling the ``n`` rows) normal intervals, given as half-widths (``*_conf``).

:func:`region_sobol` applies this to an image (Fel et al., 2021, "Look at the variance! Efficient
black-box explanations with Sobol-based sensitivity analysis"): each of ``D`` regions (a grid, or any
label map such as superpixels) gets a mask value ``m_r ∈ [0, 1]``, and the network sees
``baseline + m ⊙ (image − baseline)`` — ``m = 1`` keeps the image, ``m = 0`` shows the perturbed
baseline ("inpaint-blur": a strongly blurred copy; "mean": the image's per-channel mean). The output is
the target class's logit (or probability).

``interaction_share`` is ``1 − Σ S1``: for independent inputs the Sobol decomposition gives
``Σ S1 + Σ S2 + … = 1``, so this is the share of the output's variance due to interactions of regions
(of any order) rather than to regions alone. ``st_excess = Σ ST − Σ S1`` is reported beside it; it
counts an interaction of order ``k`` ``k`` times, so it is never below ``interaction_share`` (up to
estimation noise).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..sections import Section, cli, is_int, need

PERTURBATIONS = ("inpaint-blur", "mean")
# a g x g grid, or SLIC superpixels that follow the image's content (the "semantic" regions of SBSA)
REGIONS = ("grid", "superpixels")


@dataclass(frozen=True)
class SobolSettings(Section):
    """A job's region Sobol indices (:func:`region_sobol`) of the network's decision for ``images`` images
    (0: none), spread over classes; a ``grid`` x ``grid`` grid or about ``superpixels`` SLIC regions,
    ``n_samples`` base samples (rounded up to a power of 2; ``n_samples·(regions + 2)`` forward passes per
    image, twice that with ``second_order``). On the demo network one image's interaction share varies by
    about 0.2 (sd over design seeds) at 64 samples and 0.03 at 256, the default."""

    PREFIX = "sobol_"

    images: int = field(default=0, metadata=cli(
        int, help="region Sobol indices of the decision for this many images (default 0: none)"))
    grid: int = field(default=4, metadata=cli(int, help="regions: a g x g grid (default 4)"))
    n_samples: int = field(default=256, metadata=cli(
        int, "--sobol-samples", help="base sample size N, rounded up to a power of 2 (default 256)"))
    perturbation: str = field(default="inpaint-blur", metadata=cli(str, choices=PERTURBATIONS))
    second_order: bool = field(default=False, metadata=cli(
        bool, help="also the second-order indices S2 (doubles the forward passes)"))
    regions: str = field(default="grid", metadata=cli(
        str, choices=REGIONS, help="regions: the grid or SLIC superpixels (default grid)"))
    superpixels: int = 16

    def validate(self) -> None:
        need(is_int(self.images) and self.images >= 0,
             f"sobol_images must be a non-negative integer, not {self.images!r}")
        need(is_int(self.grid) and 1 <= self.grid <= 32, f"sobol_grid must be an integer in [1, 32], not {self.grid!r}")
        need(is_int(self.n_samples) and self.n_samples >= 2,
             f"sobol_n_samples must be an integer >= 2, not {self.n_samples!r}")
        need(self.perturbation in PERTURBATIONS,
             f"sobol_perturbation must be one of {', '.join(PERTURBATIONS)}, not {self.perturbation!r}")
        need(isinstance(self.second_order, bool), "sobol_second_order must be true or false")
        need(self.regions in REGIONS, f"sobol_regions must be one of {', '.join(REGIONS)}, not {self.regions!r}")
        need(is_int(self.superpixels) and 2 <= self.superpixels <= 256,
             f"sobol_superpixels must be an integer in [2, 256], not {self.superpixels!r}")


# ---------------------------------------------------------------------------------------------
# Sobol indices of a function
# ---------------------------------------------------------------------------------------------
def _base_size(n: int) -> int:
    if n < 2:
        raise ValueError("n_samples must be at least 2")
    return 1 << int(np.ceil(np.log2(n)))


def saltelli_points(dim: int, n_samples: int, seed: int = 0, second_order: bool = True) -> np.ndarray:
    """Points in [0, 1]^dim, in blocks ``A, B, AB_1…AB_dim[, BA_1…BA_dim]`` of ``n`` rows each."""
    from scipy.stats import qmc

    if dim < 1:
        raise ValueError("dim must be at least 1")
    n = _base_size(n_samples)
    base = qmc.Sobol(d=2 * dim, scramble=True, seed=seed).random_base2(int(np.log2(n)))
    A, B = base[:, :dim], base[:, dim:]
    blocks = [A, B]
    for i in range(dim):
        ab = A.copy()
        ab[:, i] = B[:, i]
        blocks.append(ab)
    if second_order:
        for i in range(dim):
            ba = B.copy()
            ba[:, i] = A[:, i]
            blocks.append(ba)
    return np.concatenate(blocks, axis=0)


def _split(y: np.ndarray, dim: int, n: int, second_order: bool):
    fA, fB = y[:n], y[n:2 * n]
    fAB = y[2 * n:(2 + dim) * n].reshape(dim, n)
    fBA = y[(2 + dim) * n:(2 + 2 * dim) * n].reshape(dim, n) if second_order else None
    return fA, fB, fAB, fBA


def _first_total(fA, fB, fAB):
    """Vectorised over leading axes: fA, fB (..., n); fAB (..., dim, n)."""
    V = np.var(np.concatenate([fA, fB], axis=-1), axis=-1)[..., None]
    V = np.where(V > 0, V, np.nan)
    S1 = np.mean(fB[..., None, :] * (fAB - fA[..., None, :]), axis=-1) / V
    ST = 0.5 * np.mean((fA[..., None, :] - fAB) ** 2, axis=-1) / V
    return S1, ST, V[..., 0]


def _second(fA, fB, fAB, fBA, S1, V):
    """S2 (dim x dim, upper triangle filled, symmetric copy below, NaN diagonal)."""
    base = np.mean(fA * fB, axis=-1)
    closed = np.einsum("...in,...jn->...ij", fBA, fAB) / fA.shape[-1] - base[..., None, None]
    S2 = closed / V[..., None, None] - S1[..., :, None] - S1[..., None, :]
    S2 = 0.5 * (S2 + np.swapaxes(S2, -1, -2))
    idx = np.arange(S2.shape[-1])
    S2[..., idx, idx] = np.nan
    return S2


def sobol_from_outputs(y, dim: int, second_order: bool = True, n_boot: int = 100, conf_level: float = 0.95,
                       seed: int = 0) -> dict[str, Any]:
    """Indices from the outputs of ``f`` at :func:`saltelli_points` (in its order)."""
    from scipy.stats import norm

    y = np.asarray(y, dtype=np.float64).ravel()
    per = (2 * dim + 2) if second_order else (dim + 2)
    if len(y) % per:
        raise ValueError(f"{len(y)} outputs do not match a Saltelli design of dimension {dim}")
    n = len(y) // per
    fA, fB, fAB, fBA = _split(y, dim, n, second_order)
    S1, ST, V = _first_total(fA, fB, fAB)
    out: dict[str, Any] = {"S1": S1, "ST": ST, "variance": float(V), "mean": float(np.mean(np.r_[fA, fB])),
                           "n_base": n, "n_evaluations": len(y)}
    if second_order:
        out["S2"] = _second(fA, fB, fAB, fBA, S1, V)
    if n_boot:
        z = norm.ppf(0.5 + conf_level / 2)
        rng = np.random.default_rng(seed)
        r = rng.integers(0, n, size=(n_boot, n))
        bA, bB, bAB = fA[r], fB[r], fAB[:, r].transpose(1, 0, 2)
        bS1, bST, bV = _first_total(bA, bB, bAB)
        out["S1_conf"] = z * np.nanstd(bS1, axis=0)
        out["ST_conf"] = z * np.nanstd(bST, axis=0)
        if second_order:
            # one bootstrap replicate at a time: n_boot x dim x dim x n would not fit for many regions
            reps = np.stack([_second(bA[b], bB[b], bAB[b], fBA[:, r[b]], bS1[b], bV[b]) for b in range(n_boot)])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # the diagonal is NaN by design
                out["S2_conf"] = z * np.nanstd(reps, axis=0)
        out["conf_level"] = conf_level
    return out


def sobol_indices(func: Callable[[np.ndarray], np.ndarray], dim: int, n_samples: int, seed: int = 0,
                  second_order: bool = True, n_boot: int = 100, conf_level: float = 0.95,
                  batch_size: int | None = None) -> dict[str, Any]:
    """Sobol indices of ``func`` ((m, dim) points in [0, 1]^dim -> m outputs), see the module docstring.

    Returns ``S1``, ``ST`` (dim,), ``S1_conf``, ``ST_conf`` (95 % half-widths), ``S2`` (dim x dim,
    symmetric, NaN diagonal) and ``S2_conf`` with ``second_order``, plus ``variance``, ``mean``,
    ``n_base`` (``n_samples`` rounded up to a power of two) and ``n_evaluations``.
    """
    X = saltelli_points(dim, n_samples, seed=seed, second_order=second_order)
    if batch_size:
        y = np.concatenate([np.asarray(func(X[s:s + batch_size]), dtype=np.float64).ravel()
                            for s in range(0, len(X), batch_size)])
    else:
        y = np.asarray(func(X), dtype=np.float64).ravel()
    if len(y) != len(X):
        raise ValueError(f"func returned {len(y)} outputs for {len(X)} points")
    return sobol_from_outputs(y, dim, second_order=second_order, n_boot=n_boot, conf_level=conf_level,
                              seed=seed)


# ---------------------------------------------------------------------------------------------
# Sobol-SBSA over image regions
# ---------------------------------------------------------------------------------------------
def grid_labels(height: int, width: int, grid: int | tuple[int, int]) -> np.ndarray:
    """An H x W map of region labels for a ``gh x gw`` grid, row-major (label = row·gw + column)."""
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(grid)
    if not (1 <= gh <= height and 1 <= gw <= width):
        raise ValueError(f"a {gh}x{gw} grid does not fit a {height}x{width} image")
    rows = (np.arange(height) * gh) // height
    cols = (np.arange(width) * gw) // width
    return rows[:, None] * gw + cols[None, :]


def superpixel_labels(x, n_segments: int = 16, compactness: float = 0.3) -> np.ndarray:
    """An H x W map of SLIC superpixels (scikit-image) of a C x H x W input, labels 0…D−1: regions that
    follow the image's content, the "semantic" regions of SBSA. The input is the network's (normalised,
    of any channel count), so it is scaled to [0, 1] and clustered as it is, not as sRGB through CIELAB;
    ``compactness`` weighs space against intensity on that scale (scikit-image's 10 suits Lab's 0–100)."""
    from skimage.segmentation import slic

    arr = x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float64)
    img = np.moveaxis(arr, 0, -1)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    labels = slic(img, n_segments=n_segments, compactness=compactness, start_label=0,
                  channel_axis=-1, convert2lab=False, enforce_connectivity=True)
    # SLIC may skip label values; renumber so that every region 0…D−1 exists
    _, dense = np.unique(labels, return_inverse=True)
    return dense.reshape(labels.shape).astype(np.int64)


def label_map_png(labels: np.ndarray) -> bytes:
    """A region label map as a grayscale PNG (8-bit, or 16-bit over 255 regions) holding the labels."""
    import io

    from PIL import Image

    labels = np.asarray(labels)
    image = Image.fromarray(labels.astype(np.uint8), mode="L") if labels.max() < 256 \
        else Image.fromarray(labels.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def upper_triangle(matrix: np.ndarray, digits: int = 6) -> list[list[float]]:
    """Row i holds ``matrix[i, i+1:]``: a symmetric index matrix without its repeats and diagonal."""
    m = np.nan_to_num(np.asarray(matrix, dtype=np.float64), nan=0.0)
    return [[round(float(v), digits) for v in m[i, i + 1:]] for i in range(len(m) - 1)]


def perturbed_baseline(x, perturbation: str = "inpaint-blur", blur_sigma: float | None = None):
    """The image every region fades to, in the network's input space (C x H x W tensor)."""
    import torch

    if perturbation == "mean":
        return x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
    if perturbation == "inpaint-blur":
        from scipy.ndimage import gaussian_filter

        sigma = blur_sigma if blur_sigma is not None else max(x.shape[1:]) / 8.0
        arr = x.detach().cpu().double().numpy()
        blurred = np.stack([gaussian_filter(c, sigma=sigma, mode="reflect") for c in arr])
        return torch.as_tensor(blurred, dtype=x.dtype, device=x.device)
    raise ValueError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {perturbation!r}")


@dataclass
class RegionSobol:
    """Sobol indices of the target's score over image regions (arrays are per region, row-major)."""

    S1: np.ndarray
    ST: np.ndarray
    S1_conf: np.ndarray
    ST_conf: np.ndarray
    S2: np.ndarray | None
    labels: np.ndarray
    target_class: int
    output: str
    perturbation: str
    variance: float
    n_base: int
    n_forwards: int
    grid: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    S2_conf: np.ndarray | None = None

    @property
    def n_regions(self) -> int:
        return int(len(self.S1))

    @property
    def interaction_share(self) -> float:
        """1 − Σ S1: the output variance due to interactions between regions (module docstring)."""
        return float(1.0 - np.nansum(self.S1))

    @property
    def st_excess(self) -> float:
        return float(np.nansum(self.ST) - np.nansum(self.S1))

    def map(self, which: str = "ST") -> np.ndarray:
        """An index as a per-pixel map at input resolution."""
        return np.asarray(getattr(self, which))[self.labels]

    def to_dict(self) -> dict[str, Any]:
        def r(a):
            return None if a is None else np.round(np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0), 6).tolist()

        return {"target_class": self.target_class, "output": self.output, "perturbation": self.perturbation,
                "grid": list(self.grid) if self.grid else None, "n_regions": self.n_regions,
                "n_base": self.n_base, "n_forwards": self.n_forwards, "variance": round(self.variance, 8),
                "S1": r(self.S1), "ST": r(self.ST), "S1_conf": r(self.S1_conf), "ST_conf": r(self.ST_conf),
                "S2": r(self.S2), "S2_conf": r(self.S2_conf), "interaction_share": round(self.interaction_share, 6),
                "st_excess": round(self.st_excess, 6), **self.extra}

    def summary(self) -> str:
        lines = [f"Sobol-SBSA: class {self.target_class} {self.output}, {self.n_regions} regions, "
                 f"perturbation {self.perturbation}, {self.n_forwards} forward passes"]
        if self.grid:
            gh, gw = self.grid
            for name in ("S1", "ST"):
                lines.append(f"{name} (grid rows):")
                vals = np.asarray(getattr(self, name)).reshape(gh, gw)
                lines += ["  " + " ".join(f"{v:6.3f}" for v in row) for row in vals]
        else:
            lines.append("S1 " + " ".join(f"{v:.3f}" for v in self.S1))
            lines.append("ST " + " ".join(f"{v:.3f}" for v in self.ST))
        lines.append(f"sum S1 {np.nansum(self.S1):.3f}  sum ST {np.nansum(self.ST):.3f}  "
                     f"interaction share (1 - sum S1) {self.interaction_share:.3f}  "
                     f"sum ST - sum S1 {self.st_excess:.3f}")
        return "\n".join(lines)


def masked_outputs(model, x, baseline, labels, points, target_class: int, output: str = "logit",
                   batch_size: int = 256, progress: Callable[[float], None] | None = None) -> np.ndarray:
    """The target's score for each row of ``points`` (M x D mask values), in batches on x's device."""
    import torch

    L = torch.as_tensor(labels, dtype=torch.long, device=x.device).flatten()
    diff = (x - baseline).unsqueeze(0)
    base = baseline.unsqueeze(0)
    pts = torch.as_tensor(points, dtype=x.dtype, device=x.device)
    out = np.empty(len(points), dtype=np.float64)
    H, W = x.shape[-2:]
    with torch.inference_mode():
        for s in range(0, len(points), batch_size):
            m = pts[s:s + batch_size][:, L].view(-1, 1, H, W)
            logits = model(base + m * diff).float()
            score = torch.softmax(logits, 1)[:, target_class] if output == "probability" \
                else logits[:, target_class]
            out[s:s + len(m)] = score.double().cpu().numpy()
            if progress:
                progress(min(1.0, (s + len(m)) / len(points)))
    return out


def region_sobol(model, image, preprocess: Callable | None = None, target_class: int | None = None,
                 grid: int | tuple[int, int] | np.ndarray = 4, n_samples: int = 256,
                 perturbation: str = "inpaint-blur", device="cpu", batch_size: int = 256, *,
                 output: str = "logit", second_order: bool = True, seed: int = 0, n_boot: int = 100,
                 blur_sigma: float | None = None, progress: Callable[[float], None] | None = None) -> RegionSobol:
    """Sobol-SBSA indices of the regions of one image for ``target_class`` (default: the network's
    prediction on the unperturbed image).

    ``image`` is a PIL image (read through ``preprocess``) or a C x H x W input tensor. ``grid`` is
    ``g`` or ``(gh, gw)``, or an H x W integer label map 0…D−1 (superpixels from any segmenter).
    """
    import torch

    if output not in ("logit", "probability"):
        raise ValueError(f"output must be 'logit' or 'probability', not {output!r}")
    device = torch.device(device)
    model = model.to(device).eval()
    x = image if isinstance(image, torch.Tensor) else preprocess(image)
    x = x.to(device=device, dtype=torch.float32)
    if x.ndim != 3:
        raise ValueError(f"an image is a C x H x W tensor, got shape {tuple(x.shape)}")
    H, W = x.shape[-2:]
    grid_shape = None
    if isinstance(grid, np.ndarray) and grid.ndim == 2:
        labels = np.asarray(grid, dtype=np.int64)
        if labels.shape != (H, W):
            raise ValueError(f"the label map is {labels.shape}, the input {H}x{W}")
        if labels.min() != 0 or set(np.unique(labels)) != set(range(labels.max() + 1)):
            raise ValueError("a label map must number its regions 0…D−1 with none missing")
    else:
        grid_shape = (grid, grid) if isinstance(grid, (int, np.integer)) else tuple(int(g) for g in grid)
        labels = grid_labels(H, W, grid_shape)
    D = int(labels.max()) + 1
    with torch.inference_mode():
        logits = model(x.unsqueeze(0)).float()
    if target_class is None:
        target_class = int(logits.argmax(1))
    if not 0 <= target_class < logits.shape[1]:
        raise ValueError(f"class {target_class} is out of range for a network with {logits.shape[1]} outputs")
    baseline = perturbed_baseline(x, perturbation, blur_sigma)
    points = saltelli_points(D, n_samples, seed=seed, second_order=second_order)
    y = masked_outputs(model, x, baseline, labels, points, target_class, output, batch_size, progress)
    res = sobol_from_outputs(y, D, second_order=second_order, n_boot=n_boot, seed=seed)
    zeros = np.zeros(D)
    return RegionSobol(S1=res["S1"], ST=res["ST"], S1_conf=res.get("S1_conf", zeros),
                       ST_conf=res.get("ST_conf", zeros), S2=res.get("S2"), labels=labels,
                       target_class=int(target_class), output=output, perturbation=perturbation,
                       variance=res["variance"], n_base=res["n_base"], n_forwards=len(points), grid=grid_shape,
                       S2_conf=res.get("S2_conf"))


def choose_images(n_images: int, n: int, labels: Sequence[int] | None = None,
                  rng: np.random.Generator | int = 0) -> np.ndarray:
    """``min(n, n_images)`` distinct image indices spread over classes: the classes (in label order)
    take turns, each giving its images in a seeded random order, so no class gets two images before
    every class has one; without labels a seeded random draw. Deterministic from ``rng``."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n = min(int(n), int(n_images))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    if labels is None:
        return rng.permutation(n_images)[:n].astype(np.int64)
    labels = np.asarray(labels)
    if len(labels) != n_images:
        raise ValueError(f"{len(labels)} labels for {n_images} images")
    queues = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    turns = [q[j] for j in range(max(len(q) for q in queues)) for q in queues if j < len(q)]
    return np.asarray(turns[:n], dtype=np.int64)


def region_sobol_images(model, images, preprocess: Callable | None, indices: Sequence[int],
                        target_classes: Sequence[int] | None = None,
                        progress: Callable[[float], None] | None = None,
                        regions: Callable[[Any], np.ndarray] | None = None, **kwargs) -> list[RegionSobol]:
    """:func:`region_sobol` for each image ``indices`` of ``images`` (an ImageSet or a sequence of input
    tensors); ``target_classes`` defaults to each image's predicted class. ``regions`` (an input
    tensor -> label map, such as :func:`superpixel_labels`) gives each image its own regions in place
    of the grid."""
    out = []
    for j, i in enumerate(indices):
        img = images.load(int(i)) if hasattr(images, "load") else images[int(i)]
        tc = None if target_classes is None else int(target_classes[j])
        if regions is not None:
            img = img if preprocess is None or not hasattr(images, "load") else preprocess(img)
            kwargs["grid"] = regions(img)
        out.append(region_sobol(model, img, preprocess, tc, **kwargs))
        if progress:
            progress((j + 1) / len(indices))
    return out


def share_summary(shares: Sequence[float]) -> dict[str, Any]:
    """Mean, median and spread (sd, ddof 1; 0 for one image) of per-image interaction shares."""
    a = np.asarray(shares, dtype=np.float64)
    if not a.size:
        raise ValueError("no interaction shares to summarise")
    return {"mean": round(float(a.mean()), 6), "median": round(float(np.median(a)), 6),
            "sd": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 6), "n_images": int(len(a))}


def interaction_share(model, images, preprocess: Callable | None, indices: Sequence[int] | None = None,
                      target_classes: Sequence[int] | None = None, **kwargs) -> dict[str, Any]:
    """``interaction_share`` (1 − Σ S1) of several images, and its mean / median / sd for the network.

    ``images`` is an ImageSet or a sequence of input tensors; ``target_classes`` defaults to each image's
    predicted class; other keyword arguments go to :func:`region_sobol`.
    """
    if indices is None:
        indices = range(len(images))
    results = region_sobol_images(model, images, preprocess, list(indices), target_classes, **kwargs)
    return {"indices": [int(i) for i in indices], "target_classes": [r.target_class for r in results],
            "interaction_share": [round(float(r.interaction_share), 6) for r in results],
            "st_excess": [round(float(r.st_excess), 6) for r in results],
            **share_summary([r.interaction_share for r in results])}
