"""How much of a layer a basis's top units carry.

* ``cumulative_explained_variance``: the share of the pooled activations' variance kept when the
  activations are projected onto the first k units (the others held at their mean code), k = 1…K.
  Neurons are taken in decreasing order of their own variance, other bases in their own order.
* ``network_completeness``: the network's top-1 accuracy and the KL divergence of its output
  distribution when the layer's output is replaced, at every spatial position, by its projection on
  the top-k units (forward order) or the bottom-k units (reverse order), as in Dey et al. The codes
  projected are exact: NMF's non-negative least squares and the dictionary's positive lasso by
  :func:`stimuli.bases.solvers.sparse_codes`, other bases by their own encoder (each basis's
  :meth:`stimuli.bases.Basis.exact_codes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..activations import batches
from ..bases import Basis
from ..datasets import ImageSet
from ..layers import Layout, hook as layer_hook


def unit_order(basis: Basis) -> np.ndarray:
    """Units from the most to the least variance explained (ties by index)."""
    return np.argsort(-np.asarray(basis.explained_variance_ratio_), kind="stable")


def cumulative_explained_variance(basis: Basis, A: np.ndarray, codes=None,
                                  order: np.ndarray | None = None) -> np.ndarray:
    """For k = 1…K, the share of the variance of ``A`` that the units ``order[:k]`` reconstruct by least
    squares: the centred data fitted by ``Σ_j β_j c_j w_jᵀ`` (each unit's centred code times its atom,
    the scales ``β`` fitted), ``R²_k = b_Sᵀ M_SS⁻¹ b_S / ||X||²`` with ``b_j = c_jᵀ X w_j`` and
    ``M_ij = (c_iᵀ c_j)(w_iᵀ w_j)``. Nested fits, so the curve is monotone and in [0, 1]; for an
    orthonormal basis whose codes are its projections (neurons, PCA) ``β = 1`` and it is the cumulative
    sum of the ratios. The first point is ``explained_variance_ratio_`` of the first unit
    (:func:`stimuli.bases.unit_shares`).

    ``codes`` is an N x K array, a :class:`stimuli.scores.Codes`, or None for ``basis.transform(A)``.
    Computed from K x K matrices summed over row blocks (:func:`stimuli.bases.centred_products`), so no
    N x C or N x K float64 copy is made; one Cholesky factor of ``M`` in unit order gives every k at
    once (``R²_k`` is the running sum of the squared entries of ``L⁻¹ b``).
    """
    from scipy.linalg import cholesky, solve_triangular

    from ..bases import centred_products

    codes = basis.transform(A) if codes is None else codes
    order = unit_order(basis) if order is None else np.asarray(order)
    W = np.asarray(basis.components_, dtype=np.float64)
    sums = centred_products(A, codes, W, gram=True)
    total = sums["total"]
    if total == 0 or len(order) == 0:
        return np.zeros(len(order))
    W = W[order]
    b = sums["fit"][order]
    M = sums["gram"][np.ix_(order, order)] * (W @ W.T)
    # a ridge far below the data's scale lets the factor exist when units are linearly dependent (a
    # code that never varies, more atoms than channels); it only shrinks each fit, never raises it
    ridge = 1e-12 * max(float(np.diag(M).max()), np.finfo(float).tiny)
    for _ in range(8):
        try:
            L = cholesky(M + ridge * np.eye(len(M)), lower=True)
            break
        except np.linalg.LinAlgError:
            ridge *= 100
    else:
        raise np.linalg.LinAlgError("the units' contributions have no usable Gram matrix (NaN or infinite codes?)")
    z = solve_triangular(L, b, lower=True)
    return np.minimum(np.cumsum(z ** 2) / total, 1.0)


def default_k(n_components: int) -> list[int]:
    ks, k = [], 1
    while k < n_components:
        ks.append(k)
        k *= 2
    return ks + [n_components]


@dataclass
class _Projector:
    """Torch form of a basis for projecting many spatial positions at once."""

    basis: Basis
    device: torch.device

    def __post_init__(self) -> None:
        b = self.basis
        self.W = torch.as_tensor(b.components_, dtype=torch.float32, device=self.device)
        self.offset = torch.as_tensor(b.offset_, dtype=torch.float32, device=self.device)
        self.code_mean = torch.as_tensor(b.code_mean_, dtype=torch.float32, device=self.device)
        self.constant = self.offset + self.code_mean @ self.W

    def codes(self, X: torch.Tensor) -> torch.Tensor:
        return self.basis.exact_codes(X)

    def project(self, codes: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(keep, dtype=torch.long, device=self.device)
        return self.constant + (codes[:, idx] - self.code_mean[idx]) @ self.W[idx]


def _channels_last(t: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """``(values at every position, P·B x C, and what :func:`_channels_first` needs to undo it)``: the
    channel dimension found by the layer's layout (:class:`stimuli.layers.Layout`: a map, transformer
    tokens with their class token, a channels-last map)."""
    layout = Layout.detect(t.shape)
    positions = layout.positions(t)
    return positions.reshape(-1, positions.shape[-1]), (layout, tuple(t.shape), tuple(positions.shape))


def _channels_first(flat: torch.Tensor, moved_shape: tuple, ndim: int | None = None) -> torch.Tensor:
    """The inverse of :func:`_channels_last`: values per position back into the layer's own layout."""
    layout, shape, positions_shape = moved_shape
    return layout.from_positions(flat.reshape(positions_shape), shape)


def network_completeness(model: torch.nn.Module, images: ImageSet, preprocess: Callable, layer: str,
                         basis: Basis, k_values: Sequence[int] | None = None, activation: str = "post_relu",
                         labels: np.ndarray | None = None, device: torch.device | str = "cpu",
                         batch_size: int = 256, progress: Callable[[float], None] | None = None) -> dict:
    """Accuracy and KL(original ‖ projected) of the outputs, for k in ``k_values``, both orders.

    ``labels`` (one per image of ``images``) score accuracy; without them, accuracy is agreement with
    the unmodified network's top-1 prediction (``reference`` says which). ``layer`` is any name
    ``python -m stimuli layers`` prints (:mod:`stimuli.layers`). Where the network can be cut at the
    layer (:mod:`stimuli.measures.tail`), the part before it runs once per batch and the projections go
    through the rest only, several per call; elsewhere the layer's value is replaced through a hook on
    a whole pass per projection. The top-K and bottom-K projections are the same, and run once.
    """
    from .tail import checked, split_at, stack_size, stacked_tails

    device = torch.device(device)
    model = model.to(device).eval()
    K = basis.n_components_
    ks = [k for k in (k_values or default_k(K)) if k <= K] or [K]
    order = unit_order(basis)
    projector = _Projector(basis, device)
    n_runs = 2 * len(ks)
    correct = np.zeros((2, len(ks)))
    kl = np.zeros((2, len(ks)))
    base_correct = 0.0
    n_seen = 0
    state: dict = {}
    split = split_at(model, layer)
    # (order, k position, units kept); a set both orders keep (all K units) is projected once
    runs = [(o, j, units[:k]) for o, units in enumerate((order, order[::-1].copy())) for j, k in enumerate(ks)]
    distinct: dict[tuple[int, ...], int] = {}
    sets, of_run = [], []
    for _o, _j, units in runs:
        key = tuple(sorted(int(u) for u in units))
        if key not in distinct:
            distinct[key] = len(sets)
            sets.append(units)  # in its own order, so the projection sums as it always did
        of_run.append(distinct[key])

    def hook(out):
        if state.get("replace") is not None:
            return state["replace"]
        state["captured"] = out
        return None

    with layer_hook(model, layer, hook), torch.inference_mode():
        for idx, x, _failed in batches(images, preprocess, batch_size):
            if x is None:
                continue
            x = x.to(device)
            state["replace"] = None
            if split is not None and n_seen == 0:
                split = checked(split, model, x[:8], state)
            if split is not None:
                t, *carried = split.head(x)
                logits = split.tail(t, *carried).float()
                state.pop("captured", None)
            else:
                logits = model(x).float()
                t = state.pop("captured")
            a = torch.relu(t) if activation == "post_relu" else t
            flat, moved_shape = _channels_last(a.float())
            codes = projector.codes(flat)
            logp = torch.log_softmax(logits, 1)
            pred = logits.argmax(1)
            target = pred if labels is None else torch.as_tensor(labels[idx.numpy()], device=device)
            base_correct += float((pred == target).sum())

            def projected(units, codes=codes, shape=moved_shape, t=t):
                return _channels_first(projector.project(codes, units), shape, t.ndim).to(t.dtype)

            if split is not None:
                outputs = list(stacked_tails(split, (lambda u=u: projected(u) for u in sets), carried,
                                             stack_size(len(x), batch_size, device)))
            else:
                outputs = []
                for units in sets:
                    state["replace"] = projected(units)
                    outputs.append(model(x).float())
                state["replace"] = None
            for (o, j, _units), v in zip(runs, of_run):
                lq = torch.log_softmax(outputs[v], 1)
                correct[o, j] += float((lq.argmax(1) == target).sum())
                kl[o, j] += float((logp.exp() * (logp - lq)).sum())
            n_seen += len(idx)
            if progress:
                progress(n_seen / len(images))
    if n_seen == 0:
        raise ValueError("no image could be read for completeness")
    return {
        "k": [int(k) for k in ks],
        "accuracy": [round(v, 6) for v in (correct[0] / n_seen).tolist()],
        "kl": [round(max(v, 0.0), 6) for v in (kl[0] / n_seen).tolist()],
        "accuracy_reverse": [round(v, 6) for v in (correct[1] / n_seen).tolist()],
        "kl_reverse": [round(max(v, 0.0), 6) for v in (kl[1] / n_seen).tolist()],
        "baseline_accuracy": round(base_correct / n_seen, 6),
        "reference": "predictions" if labels is None else "labels",
        "n_images": int(n_seen),
        "n_forward_passes": n_runs + 1,
    }
