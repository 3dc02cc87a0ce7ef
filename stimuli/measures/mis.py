"""A machine observer for the reference 2AFC task: the Machine Interpretability Score (MIS) of
Zimmermann, Klindt and Brendel (2024, "Measuring per-unit interpretability at scale without humans").

For one task of a unit — a query pair (q⁺ from the top band, q⁻ from the bottom band) and the unit's
maximally (E⁺) and minimally (E⁻) activating references — the observer compares how similar each
query looks to each reference set in an image embedding:

    Δ = [s(q⁺, E⁺) − s(q⁺, E⁻)] − [s(q⁻, E⁺) − s(q⁻, E⁻)],

with s(q, E) the mean cosine similarity of q's embedding to the embeddings of E, and predicts that a
person picks q⁺ with probability σ(α·Δ). A unit's MIS is that probability averaged over its tasks:
1 for a unit whose extremes are visually obvious to the embedding, 0.5 for one that is not.

α is a slope on the similarity scale of the embedding, so it does not carry over from one embedding
to another: the paper fits it once to human data for its embedding (DreamSim), which we do not use.
The default is α = 1 (MIS then ranks units but sits close to 0.5); with human answers from a study,
the analysis (``analysis.machine.fit_alpha``) fits the maximum-likelihood α of the logistic
P(correct) = σ(α·Δ) without an intercept, which is the calibrated choice.

The similarity model is any embedding of the images: by default pooled activations of a late layer
of the studied network (:func:`embed_images` through :mod:`stimuli.activations`), or another
network. Embeddings are computed once per image and cached in memory and, optionally, in an ``.npz``
file (image indices and vectors together, with a key naming the network and layer so that a cache
from another embedding is never used).

The scoring functions are pure NumPy; only :func:`embed_images` needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..sections import Section, cli, is_int, need


@dataclass(frozen=True)
class MISSettings(Section):
    """The machine observer in a job: each unit's Machine Interpretability Score with images embedded by the
    pooled activations of ``layer`` (None: no score) and the logistic slope ``alpha``; ``candidates``: how
    many usable units of highest explained variance a ``mis_*`` unit selection scores. The cap is about
    which units, more than cost: the low-variance tail of a full basis (PCA's last components, unused
    atoms) is noise, and mis_bottom over all of it would choose exactly that tail. The cost is bounded too:
    a candidate's exemplars sort the image set's responses (measured: about 18 ms for 50,000 images on one
    CPU core); its Δ costs little."""

    PREFIX = "mis_"

    layer: str | None = field(default=None, metadata=cli(
        str, help="score every unit by the machine observer, with images embedded by this layer"))
    alpha: float = 1.0
    candidates: int = field(default=64, metadata=cli(
        int, help="mis_* selection: score this many units of highest explained variance (default 64)"))

    def validate(self) -> None:
        need(self.layer is None or (isinstance(self.layer, str) and self.layer),
             "mis_layer must be null or a layer name")
        need(isinstance(self.alpha, (int, float)) and not isinstance(self.alpha, bool) and self.alpha > 0,
             "mis_alpha must be a positive number")
        need(is_int(self.candidates) and self.candidates >= 1,
             f"mis_candidates must be a positive integer, not {self.candidates!r}")


DEFAULT_ALPHA = 1.0
ROLES = ("references_max", "references_min", "queries_max", "queries_min")

__all__ = ["DEFAULT_ALPHA", "Embeddings", "UnitScore", "pair_delta", "unit_deltas", "machine_scores",
           "machine_score_details", "mis_from_deltas", "embed_images", "EmbeddingCache"]


# ------------------------------------------------------------------------------------------ embeddings
@dataclass
class Embeddings:
    """Row j of ``vectors`` embeds image ``indices[j]`` of the image set."""

    indices: np.ndarray
    vectors: np.ndarray

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.indices):
            raise ValueError("vectors must be a matrix with one row per index")
        self._row = {int(i): j for j, i in enumerate(self.indices)}

    def centred(self) -> Embeddings:
        """The vectors less their mean. Pooled post-ReLU activations share a large common component
        that makes every cosine similarity high; centring over the image set removes it. Embed the
        whole image set (not only the exemplars) before centring, so that the mean is the set's."""
        return Embeddings(self.indices, self.vectors - self.vectors.mean(axis=0, keepdims=True))

    def rows(self, indices: Iterable[int]) -> np.ndarray:
        try:
            return self.vectors[[self._row[int(i)] for i in indices]]
        except KeyError as exc:
            raise KeyError(f"image {exc.args[0]} has no embedding") from None

    @classmethod
    def from_any(cls, embeddings: Any) -> Embeddings:
        """An :class:`Embeddings`, an N × D array whose row i is image i, or a mapping index → vector."""
        if isinstance(embeddings, Embeddings):
            return embeddings
        if isinstance(embeddings, Mapping):
            keys = sorted(embeddings)
            return cls(np.asarray(keys, dtype=np.int64), np.stack([np.asarray(embeddings[k]) for k in keys]))
        array = np.asarray(embeddings)
        return cls(np.arange(len(array)), array)


def _unit_vectors(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    # An all-zero embedding (a dead post-ReLU layer) is similar to nothing rather than NaN.
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _get(unit: Any, role: str) -> np.ndarray:
    value = unit[role] if isinstance(unit, Mapping) else getattr(unit, role)
    return np.asarray(value, dtype=np.int64).ravel()


# ------------------------------------------------------------------------------------------ the score
def pair_delta(embeddings: Any, references_max: Sequence[int], references_min: Sequence[int],
               query_plus: Sequence[int] | int, query_minus: Sequence[int] | int) -> np.ndarray:
    """Δ for each pair (query_plus[i], query_minus[i]) against one unit's reference sets."""
    emb = Embeddings.from_any(embeddings)
    plus = np.atleast_1d(np.asarray(query_plus, dtype=np.int64))
    minus = np.atleast_1d(np.asarray(query_minus, dtype=np.int64))
    if len(plus) != len(minus):
        raise ValueError("queries are paired by position: query_plus and query_minus need the same length")
    if len(references_max) == 0 or len(references_min) == 0:
        raise ValueError("both reference sets are needed")
    e_max = _unit_vectors(emb.rows(references_max))
    e_min = _unit_vectors(emb.rows(references_min))
    q = _unit_vectors(emb.rows(np.concatenate([plus, minus])))
    # s(q, E) for every query: mean cosine similarity to the set
    to_max = (q @ e_max.T).mean(axis=1)
    to_min = (q @ e_min.T).mean(axis=1)
    lean = to_max - to_min
    n = len(plus)
    return lean[:n] - lean[n:]


def unit_deltas(embeddings: Any, unit: Any) -> np.ndarray:
    """Δ of every task of a unit: its i-th top query against its i-th bottom query (the artifact pairs
    them by position). ``unit`` carries index lists under the names of :data:`ROLES`, as
    :class:`stimuli.exemplars.Exemplars` does, as attributes or mapping keys."""
    q_max, q_min = _get(unit, "queries_max"), _get(unit, "queries_min")
    k = min(len(q_max), len(q_min))
    if k == 0:
        return np.empty(0)
    return pair_delta(embeddings, _get(unit, "references_max"), _get(unit, "references_min"), q_max[:k], q_min[:k])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def mis_from_deltas(deltas: Sequence[float], alpha: float = DEFAULT_ALPHA) -> float:
    """Mean predicted probability of a correct answer, σ(α·Δ), over the tasks; NaN with no task."""
    d = np.asarray(deltas, dtype=np.float64)
    return float(_sigmoid(alpha * d).mean()) if d.size else float("nan")


@dataclass
class UnitScore:
    mis: float
    n_tasks: int
    mean_delta: float
    # Δ of each task, aligned with the unit's query pairs: what the analysis's α fit needs beside human answers
    deltas: np.ndarray = field(default_factory=lambda: np.empty(0))

    def to_dict(self) -> dict:
        return {"mis": self.mis, "n_tasks": self.n_tasks, "mean_delta": self.mean_delta,
                "deltas": [float(d) for d in np.asarray(self.deltas).ravel()]}


def machine_score_details(embeddings: Any, units: Iterable[Any], alpha: float = DEFAULT_ALPHA) -> list[UnitScore]:
    emb = Embeddings.from_any(embeddings)
    out = []
    for unit in units:
        d = unit_deltas(emb, unit)
        out.append(UnitScore(mis=mis_from_deltas(d, alpha), n_tasks=int(d.size),
                             mean_delta=float(d.mean()) if d.size else float("nan"), deltas=d))
    return out


def machine_scores(embeddings: Any, units: Iterable[Any], alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The MIS of each unit, in the order given."""
    return np.array([s.mis for s in machine_score_details(embeddings, units, alpha)], dtype=np.float64)


# ------------------------------------------------------------------------------------------ embedding images
class EmbeddingCache:
    """Embeddings per image index for one embedding (``key``), in memory and optionally in an ``.npz``
    file. The file stores the key; a file written for another key is ignored and overwritten."""

    def __init__(self, key: str, path: str | os.PathLike | None = None) -> None:
        self.key = key
        self.path = Path(path) if path is not None else None
        self.vectors: dict[int, np.ndarray] = {}
        if self.path is not None and self.path.exists():
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["key"]) == key:
                    self.vectors = {int(i): v for i, v in zip(data["indices"], data["vectors"])}

    def missing(self, indices: Iterable[int]) -> list[int]:
        return sorted({int(i) for i in indices} - set(self.vectors))

    def update(self, indices: Sequence[int], vectors: np.ndarray) -> None:
        for i, v in zip(indices, vectors):
            self.vectors[int(i)] = np.asarray(v, dtype=np.float32)

    def get(self, indices: Sequence[int]) -> Embeddings:
        idx = np.asarray(sorted({int(i) for i in indices}), dtype=np.int64)
        return Embeddings(idx, np.stack([self.vectors[int(i)] for i in idx]) if len(idx) else np.empty((0, 0)))

    def save(self) -> None:
        if self.path is None or not self.vectors:
            return
        idx = np.asarray(sorted(self.vectors), dtype=np.int64)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, key=np.asarray(self.key), indices=idx, vectors=np.stack([self.vectors[int(i)] for i in idx]))
        os.replace(tmp, self.path)


def embed_images(images: Any, model: Any, preprocess: Callable, layer: str, indices: Sequence[int] | None = None,
                 *, pooling: str = "mean", activation: str = "post_relu", device: Any = "cpu",
                 batch_size: int = 256, cache: EmbeddingCache | None = None) -> Embeddings:
    """Pooled activations of ``layer`` of ``model`` as embeddings of the images ``indices`` of the image
    set ``images`` (all images when None). Images already in ``cache`` are not run again; the new ones
    are added to it (call ``cache.save()`` to write its file)."""
    from ..activations import extract

    wanted = list(range(len(images))) if indices is None else sorted({int(i) for i in indices})
    todo = cache.missing(wanted) if cache is not None else wanted
    fresh: dict[int, np.ndarray] = {}
    if todo:
        subset = images.subset(todo) if len(todo) < len(images) else images
        acts = extract(model, subset, preprocess, [layer], pooling=pooling, activation=activation, device=device,
                       batch_size=batch_size)
        # acts.indices index the subset; map back to the image set's own indices
        for row, j in enumerate(acts.indices):
            fresh[int(todo[j]) if subset is not images else int(j)] = acts.values[layer][row]
    if cache is not None:
        cache.update(list(fresh), np.stack(list(fresh.values())) if fresh else np.empty((0, 0)))
        available = [i for i in wanted if i in cache.vectors]
        return cache.get(available)
    kept = [i for i in wanted if i in fresh]
    return Embeddings(np.asarray(kept, dtype=np.int64),
                      np.stack([fresh[i] for i in kept]) if kept else np.empty((0, 0), dtype=np.float32))
