"""The occlusion task of Zimmermann et al. (2021, "How well do feature visualizations support causal
understanding of CNN activations?", NeurIPS): one natural image shown twice, each copy with one square
occluder, and the question which occlusion changes the unit's response more. The network decides the
answer, so the task tests causal understanding rather than recognition.

Per unit the job builds ``pairs_per_unit`` pairs (:func:`occlusion_pairs`), by these rules:

1. **Query.** One of the unit's strongly activating images: its top-band queries (``queries_max``,
   never among the references), tried in the artifact's order, one pair per query image.
2. **Positions.** A grid of square occluders of side ``patch`` (a share of the displayed side) every
   ``stride`` (also a share), all inside the image. A position *covers content* when the luminance of
   the pixels under it varies (standard deviation) by at least ``CONTENT_SHARE`` of the whole image's:
   an occluder over a blank background is never a main-trial position (Zimmermann et al. occlude parts
   of the image, not empty space).
3. **Pair.** As in Zimmermann et al., the two positions are the extremes of the effect: among the
   positions covering content, the one whose occlusion changes the unit's score most (largest |Δ|),
   and, among those not overlapping it, the one that changes it least.
4. **Margin.** The pair is kept only when ``| |Δ_a| − |Δ_b| | >= margin × (score range)``, the range being
   the unit's highest minus lowest score over the job's image set; otherwise the next query is tried.
5. **Sides.** Which occlusion is shown as ``a`` is drawn from the unit's own seeded stream.

Catch pairs (:func:`catch_pairs`), one per most activating reference tried in order until ``n_catch``
are kept: the occluder over the unit's *strongest region* (the position of largest |Δ| covering content)
against one over a *blank area* (the position whose pixels vary least, below ``CONTENT_SHARE``, not
overlapping the other). The strongest side is correct; the pair is kept only when it also passes the
margin, so an attentive participant can answer it from the image alone.

Occluder fill: ``mean`` (the image's mean colour, per channel) or ``blur`` (the image blurred with a
Gaussian of radius half the patch, PIL's ``GaussianBlur``). Where the fill alone would not show the
occluder — its mean colour differs from the ring of pixels around it by less than ``OUTLINE_CONTRAST``
of the full range — a thin outline (black on a light fill, white on a dark one) is drawn along the
patch's own border, inside it, so the occluded area is the patch and nothing more.

Δ is the unit's score (:func:`stimuli.scores.unit_scores`, the one score function of its basis) on the
occluded PNG minus its score on the query's PNG, both read back through the network's own preprocessing
(:meth:`stimuli.featurevis.DisplayToInput.from_png`): the answer key is what the displayed images, outline
included, do to the unit.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..sections import Section, cli, is_int, is_number, need

FILLS = ("mean", "blur")
# a position covers content when its pixels vary by at least this share of the whole image's variation
CONTENT_SHARE = 0.5
# below this mean difference from its surround (share of the 0-255 range) an occluder gets an outline
OUTLINE_CONTRAST = 0.1
# catch pairs per unit, from its most activating references
N_CATCH = 2


@dataclass(frozen=True)
class OcclusionSettings(Section):
    """A job's occlusion pairs (the job setting ``"occlusion": {...}``): ``pairs_per_unit`` pairs per unit
    (0: none), square occluders of side ``patch`` every ``stride`` (shares of the displayed side), filled
    with the image's ``mean`` colour or a ``blur`` of it, kept when the two changes differ by ``margin``
    of the unit's score range.

    Its flat form is one key, ``occlusion``: a mapping with keys among the fields, written back in full
    when the section is on and as the fields that differ from their defaults when it is off."""

    pairs_per_unit: int = field(
        default=0,
        metadata=cli(
            int, "--occlusion-pairs", help="occlusion pairs per unit (Zimmermann et al. 2021's task; default 0: none)"
        ),
    )
    patch: float = 0.25
    stride: float = 0.125
    fill: str = field(
        default="mean",
        metadata=cli(
            str,
            "--occlusion-fill",
            choices=FILLS,
            help="occluder fill: the image's mean colour (default) or a blur of it",
        ),
    )
    margin: float = 0.05

    @classmethod
    def keys(cls) -> dict[str, str]:
        return {f.name: "occlusion" for f in fields(cls)}

    @classmethod
    def from_flat(cls, source: Any) -> OcclusionSettings:
        return cls.from_mapping(source.get("occlusion", {}) if isinstance(source, dict) else source)

    def flat(self) -> dict[str, Any]:
        if self.pairs_per_unit:
            return {"occlusion": self.to_dict()}
        default = OcclusionSettings()
        return {"occlusion": {k: v for k, v in self.to_dict().items() if v != getattr(default, k)}}

    @classmethod
    def from_mapping(cls, value: Any) -> OcclusionSettings:
        need(
            isinstance(value, dict),
            "occlusion must be a mapping with keys among pairs_per_unit, patch, stride, fill, margin",
        )
        known = cls.keys()
        bad = sorted(set(value) - set(known))
        need(not bad, f"unknown occlusion key(s): {', '.join(bad)}; known: {', '.join(known)}")
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.keys()}

    def validate(self) -> None:
        need(
            is_int(self.pairs_per_unit) and self.pairs_per_unit >= 0,
            f"occlusion.pairs_per_unit must be a non-negative integer, not {self.pairs_per_unit!r}",
        )
        need(
            is_number(self.patch) and 0 < self.patch <= 0.5,
            f"occlusion.patch must be a share of the image side in (0, 0.5], not {self.patch!r}",
        )
        need(
            is_number(self.stride) and 0 < self.stride <= self.patch,
            f"occlusion.stride must be a share of the image side in (0, patch], not {self.stride!r}",
        )
        need(self.fill in FILLS, f"occlusion.fill must be one of {', '.join(FILLS)}, not {self.fill!r}")
        need(
            is_number(self.margin) and 0 <= self.margin < 1,
            f"occlusion.margin must be a share of the score range in [0, 1), not {self.margin!r}",
        )


# ------------------------------------------------------------------------------------------ images
@dataclass(frozen=True)
class Box:
    """A square occluder: its top-left corner and side, in displayed pixels."""

    left: int
    top: int
    side: int

    def overlaps(self, other: Box) -> bool:
        return (
            self.left < other.left + other.side
            and other.left < self.left + self.side
            and self.top < other.top + other.side
            and other.top < self.top + self.side
        )

    def to_list(self) -> list[int]:
        return [self.left, self.top, self.side]


def grid(size: int, patch: float, stride: float) -> list[Box]:
    """Every occluder position of the grid on a ``size`` x ``size`` image, row by row."""
    side = max(1, int(round(patch * size)))
    step = max(1, int(round(stride * size)))
    starts = list(range(0, size - side + 1, step))
    if starts[-1] != size - side:
        starts.append(size - side)  # the grid reaches the far edge whatever the stride
    return [Box(x, y, side) for y in starts for x in starts]


def _luminance(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def content(image: Image.Image, boxes: list[Box]) -> np.ndarray:
    """Each position's pixel variation (standard deviation of the luminance under it) as a share of the
    whole image's; 0 for a position over a uniform area."""
    lum = _luminance(image)
    whole = lum.std()
    if whole == 0:
        return np.zeros(len(boxes))
    return np.array([lum[b.top : b.top + b.side, b.left : b.left + b.side].std() / whole for b in boxes])


def occlude(image: Image.Image, box: Box, fill: str) -> Image.Image:
    """The image with one occluder, outlined where its fill would not show it (module docstring)."""
    arr = np.asarray(image)
    source = arr.astype(np.float64)
    if fill == "mean":
        patch = np.broadcast_to(source.reshape(-1, *source.shape[2:]).mean(axis=0), source.shape)
    elif fill == "blur":
        patch = np.asarray(image.filter(ImageFilter.GaussianBlur(radius=box.side / 2)), dtype=np.float64)
    else:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}, not {fill!r}")
    out = source.copy()
    y, x, s = box.top, box.left, box.side
    out[y : y + s, x : x + s] = patch[y : y + s, x : x + s]
    shown = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode=image.mode)
    # the ring of pixels just outside the occluder, where the eye looks for its edge
    ring = np.zeros(arr.shape[:2], dtype=bool)
    width = max(1, s // 8)
    ring[max(0, y - width) : y + s + width, max(0, x - width) : x + s + width] = True
    ring[y : y + s, x : x + s] = False
    filled = _luminance(shown)[y : y + s, x : x + s].mean()
    if not ring.any() or abs(filled - _luminance(image)[ring].mean()) < OUTLINE_CONTRAST * 255:
        draw = ImageDraw.Draw(shown)
        dark = filled > 127
        colour = (0 if dark else 255) if image.mode == "L" else ((0, 0, 0) if dark else (255, 255, 255))
        draw.rectangle([x, y, x + s - 1, y + s - 1], outline=colour, width=max(1, s // 16))
    return shown


# ------------------------------------------------------------------------------------------ scores
class PngScorer:
    """A unit's score on PNG bytes, read back through the network's own preprocessing, many at a time
    (one forward pass per batch); the score function is :func:`stimuli.scores.unit_scores`, the exact
    values those of :func:`stimuli.featurevis.score_png` on each file."""

    def __init__(
        self,
        net,
        images,
        layer: str,
        basis,
        pooling: str = "mean",
        activation: str = "post_relu",
        device="cpu",
        batch_size: int = 256,
    ) -> None:
        from ..activations import layer_extractor
        from ..featurevis import DisplayToInput

        self.to_input = DisplayToInput(net, images)
        self.extractor = layer_extractor(net.model.to(device).eval(), [layer])
        self.layer, self.basis, self.pooling, self.activation = layer, basis, pooling, activation
        self.device, self.batch_size = device, batch_size

    def __call__(self, pngs: list[bytes], unit: int, exact: bool = True) -> np.ndarray:
        """The unit's score on each PNG. ``exact=False`` lets a solver's codes (NMF, dictionary) be found
        for the whole batch at once, good to well within any margin for ranking positions; ``exact``
        finds each image's own, as :func:`stimuli.featurevis.score_png` reads a saved PNG."""
        import torch

        from ..activations import pool
        from ..scores import unit_scores

        out = []
        with torch.no_grad():
            for s in range(0, len(pngs), self.batch_size):
                x = torch.cat([self.to_input.from_png(d) for d in pngs[s : s + self.batch_size]]).to(self.device)
                t = self.extractor(x)[self.layer]
                if self.activation == "post_relu":
                    t = torch.relu(t)
                pooled = pool(t, self.pooling)
                if self.basis.tags.linear_codes or not exact:
                    out.append(unit_scores(self.basis, pooled)[:, unit].double().cpu().numpy())
                else:
                    # a solver's code depends on its batch through the convergence test: one image at a
                    # time, so the key is the image's own
                    out.append(
                        np.array(
                            [float(unit_scores(self.basis, pooled[k : k + 1])[0, unit]) for k in range(len(pooled))]
                        )
                    )
        return np.concatenate(out) if out else np.empty(0)


@dataclass
class Candidates:
    """One query image's occluded copies: each grid position's PNG, its Δ and its content share."""

    query_png: bytes
    boxes: list[Box]
    pngs: list[bytes]
    deltas: np.ndarray
    content: np.ndarray


def candidates(
    image: Image.Image, unit: int, score: Callable[..., np.ndarray], settings: OcclusionSettings
) -> Candidates:
    """Every grid position of ``image`` occluded, rendered to PNG and scored, the batch at once, to rank
    the positions: Δ = s(occluded PNG) − s(query PNG). A kept pair is scored again image by image."""
    from ..render import png_bytes

    query_png = png_bytes(image)
    shown = Image.open(io.BytesIO(query_png))
    shown.load()
    boxes = grid(shown.size[0], settings.patch, settings.stride)
    pngs = [png_bytes(occlude(shown, b, settings.fill)) for b in boxes]
    scores = score([query_png, *pngs], unit, exact=False)
    return Candidates(query_png, boxes, pngs, scores[1:] - scores[0], content(shown, boxes))


@dataclass
class Pair:
    """A kept pair, before its files are written: ``correct`` is the side of larger |Δ|."""

    query_png: bytes
    a_png: bytes
    b_png: bytes
    box_a: Box
    box_b: Box
    delta_a: float
    delta_b: float

    @property
    def correct(self) -> str:
        return "a" if abs(self.delta_a) > abs(self.delta_b) else "b"

    @property
    def margin(self) -> float:
        return abs(abs(self.delta_a) - abs(self.delta_b))


def _sided(c: Candidates, first: int, second: int, swap: bool, unit: int, score) -> Pair:
    """The pair with its changes scored again, each PNG on its own (the stored key)."""
    i, j = (second, first) if swap else (first, second)
    s_query, s_a, s_b = score([c.query_png, c.pngs[i], c.pngs[j]], unit, exact=True)
    return Pair(c.query_png, c.pngs[i], c.pngs[j], c.boxes[i], c.boxes[j], float(s_a - s_query), float(s_b - s_query))


def extreme_pair(c: Candidates) -> tuple[int, int] | None:
    """Rule 3: the covering position of largest |Δ| and the non-overlapping covering one of smallest |Δ|."""
    covering = np.flatnonzero(c.content >= CONTENT_SHARE)
    if len(covering) < 2:
        return None
    effect = np.abs(c.deltas)
    strongest = int(covering[np.argmax(effect[covering])])
    others = [int(k) for k in covering if not c.boxes[k].overlaps(c.boxes[strongest])]
    if not others:
        return None
    return strongest, min(others, key=lambda k: (effect[k], k))


def blank_pair(c: Candidates) -> tuple[int, int] | None:
    """The catch rule: the strongest covering position and the blankest position not overlapping it."""
    covering = np.flatnonzero(c.content >= CONTENT_SHARE)
    if len(covering) == 0:
        return None
    strongest = int(covering[np.argmax(np.abs(c.deltas)[covering])])
    blank = [
        k for k in range(len(c.boxes)) if c.content[k] < CONTENT_SHARE and not c.boxes[k].overlaps(c.boxes[strongest])
    ]
    if not blank:
        return None
    return strongest, min(blank, key=lambda k: (c.content[k], k))


def _pairs(
    images: list[Image.Image],
    unit: int,
    score,
    settings: OcclusionSettings,
    score_range: float,
    rng: np.random.Generator,
    n: int,
    rule,
) -> list[Pair]:
    kept = []
    for image in images:
        if len(kept) == n:
            break
        c = candidates(image, unit, score, settings)
        picked = rule(c)
        if picked is None:
            continue
        pair = _sided(c, *picked, swap=bool(rng.random() < 0.5), unit=unit, score=score)
        if pair.margin >= settings.margin * score_range and pair.margin > 0:
            kept.append(pair)
    return kept


def occlusion_pairs(
    images: list[Image.Image],
    unit: int,
    score,
    settings: OcclusionSettings,
    score_range: float,
    rng: np.random.Generator,
) -> list[Pair]:
    """Up to ``settings.pairs_per_unit`` pairs from the query ``images`` (strongest first), rules 1-5."""
    return _pairs(images, unit, score, settings, score_range, rng, settings.pairs_per_unit, extreme_pair)


def catch_pairs(
    images: list[Image.Image],
    unit: int,
    score,
    settings: OcclusionSettings,
    score_range: float,
    rng: np.random.Generator,
    n: int = N_CATCH,
) -> list[Pair]:
    """Up to ``n`` catch pairs (blank area against the strongest region) from the unit's most activating
    references ``images``."""
    return _pairs(images, unit, score, settings, score_range, rng, n, blank_pair)


def pair_entry(pair: Pair, add_image: Callable[[bytes], str]) -> dict[str, Any]:
    """A pair as the manifest lists it (docs/contracts.md §1), its PNGs written through ``add_image``."""
    return {
        "query": add_image(pair.query_png),
        "a": add_image(pair.a_png),
        "b": add_image(pair.b_png),
        "correct": pair.correct,
        "delta_a": round(pair.delta_a, 6),
        "delta_b": round(pair.delta_b, 6),
        "box_a": pair.box_a.to_list(),
        "box_b": pair.box_b.to_list(),
    }


def unit_occlusion(
    net,
    images,
    layer: str,
    basis,
    unit: int,
    exemplars,
    codes,
    settings: OcclusionSettings,
    size: int,
    rng: np.random.Generator,
    add_image: Callable[[bytes], str],
    *,
    pooling: str,
    activation: str,
    device,
    batch_size: int,
    scorer: PngScorer | None = None,
) -> dict[str, Any]:
    """One unit's ``occlusion_trials`` and ``occlusion_catch_trials`` (manifest entries) and its
    ``occlusion_pairs`` measure."""
    score = scorer or PngScorer(net, images, layer, basis, pooling, activation, device, batch_size)
    score_range = float(codes.max[unit] - codes.min[unit])
    shown = [images.display(int(i), size) for i in exemplars.queries_max]
    main = occlusion_pairs(shown, unit, score, settings, score_range, rng)
    refs = [images.display(int(i), size) for i in exemplars.references_max]
    catch = catch_pairs(refs, unit, score, settings, score_range, rng)
    return {
        "occlusion_trials": [pair_entry(p, add_image) for p in main],
        "occlusion_catch_trials": [pair_entry(p, add_image) for p in catch],
        "measures": {
            "occlusion_pairs": len(main),
            "occlusion_catch_pairs": len(catch),
            "occlusion_score_range": round(score_range, 6),
        },
    }


def occlusion_stage(
    settings: OcclusionSettings,
    net,
    images,
    fitted: dict,
    chosen: dict,
    writer,
    size: int,
    device,
    report: Callable[[str, float], None],
    *,
    seed: int = 0,
    pooling: str = "mean",
    activation: str = "post_relu",
    batch_size: int = 256,
) -> dict:
    """The pipeline's occlusion step: ``{(layer, basis, unit): manifest lists}``, the units' measures
    updated in place; nothing when ``pairs_per_unit`` is 0. The units' scores are read with the job's
    ``pooling`` and ``activation``; each unit's draws derive from ``seed``."""
    from ..selection import unit_rng

    out: dict = {}
    if not settings.pairs_per_unit:
        return out
    jobs = list(chosen.items())
    for j, ((layer, name), entries) in enumerate(jobs):
        basis, codes = fitted[(layer, name)]
        scorer = PngScorer(net, images, layer, basis, pooling, activation, device, batch_size)
        for u, ex, measures in entries:
            got = unit_occlusion(
                net,
                images,
                layer,
                basis,
                u,
                ex,
                codes,
                settings,
                size,
                unit_rng(seed, "occlusion", layer, name, str(u)),
                writer.add_image,
                pooling=pooling,
                activation=activation,
                device=device,
                batch_size=batch_size,
                scorer=scorer,
            )
            measures.update(got.pop("measures"))
            out[(layer, name, u)] = got
        report("occlusion", (j + 1) / len(jobs))
    return out
