"""How much of a layer a basis's top units carry.

* ``cumulative_explained_variance``: the share of the pooled activations' variance kept when the
  activations are projected onto the first k units (the others held at their mean code), k = 1…K.
  Neurons are taken in decreasing order of their own variance, other bases in their own order.
* ``network_completeness``: the network's top-1 accuracy and the KL divergence of its output
  distribution when the layer's output is replaced, at every spatial position, by its projection on
  the top-k units (forward order) or the bottom-k units (reverse order), as in Dey et al.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .activations import batches
from .bases import Basis, DictionaryBasis, NeuronBasis, NMFBasis, PCABasis, SAEBasis
from .datasets import ImageSet
from .layers import hook as layer_hook


def unit_order(basis: Basis) -> np.ndarray:
    """Units from the most to the least variance explained (ties by index)."""
    return np.argsort(-np.asarray(basis.explained_variance_ratio_), kind="stable")


def cumulative_explained_variance(basis: Basis, A: np.ndarray, codes: np.ndarray | None = None,
                                  order: np.ndarray | None = None) -> np.ndarray:
    """R² of the reconstruction from the units ``order[:k]`` for k = 1…K (the rest at their mean).

    Computed in closed form from K x K Gram matrices, so the cost is O(N·K·(K + C)) rather than one
    reconstruction per k.
    """
    A = np.asarray(A, dtype=np.float64)
    codes = basis.transform(A) if codes is None else np.asarray(codes, dtype=np.float64)
    order = unit_order(basis) if order is None else np.asarray(order)
    W = basis.components_[order]
    Cc = codes[:, order] - basis.code_mean_[order]
    X = A - A.mean(axis=0)
    total = float((X ** 2).sum())
    if total == 0:
        return np.zeros(len(order))
    # residual with no unit kept: the data minus the constant reconstruction from mean codes
    R0 = A - (basis.offset_ + basis.code_mean_ @ basis.components_)
    r0 = float((R0 ** 2).sum())
    b = ((Cc.T @ R0) * W).sum(axis=1)
    M = (Cc.T @ Cc) * (W @ W.T)
    quad = np.cumsum(np.diag(M) + 2.0 * np.triu(M, 1).sum(axis=0))
    residual = r0 - 2.0 * np.cumsum(b) + quad
    return 1.0 - residual / total


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
        if isinstance(self.basis, NeuronBasis):
            return X
        if isinstance(self.basis, PCABasis):
            return (X - self.offset) @ self.W.T
        if isinstance(self.basis, NMFBasis) and self.basis.alpha_W == 0:
            return sparse_codes(X, self.W, l1=0.0, positive=True)
        if isinstance(self.basis, DictionaryBasis) and self.basis.transform_algorithm == "lasso_cd":
            scale = self.basis.scale_
            return sparse_codes(X / scale, self.W, l1=self.basis.alpha,
                                positive=self.basis.positive_code) * scale
        if isinstance(self.basis, SAEBasis):
            return self.basis.encode(X)
        out = self.basis.transform(X.double().cpu().numpy())
        return torch.as_tensor(out, dtype=torch.float32, device=self.device)

    def project(self, codes: torch.Tensor, keep: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(keep, dtype=torch.long, device=self.device)
        return self.constant + (codes[:, idx] - self.code_mean[idx]) @ self.W[idx]


def sparse_codes(X: torch.Tensor, W: torch.Tensor, l1: float = 0.0, positive: bool = True,
                 n_sweeps: int = 50) -> torch.Tensor:
    """argmin_H 0.5·||X - H W||² + l1·||H||₁ (H ≥ 0 when ``positive``), by cyclic coordinate descent
    over the K columns of H (all rows at once), on X's device.

    scikit-learn's encoders solve the same problems, one row at a time, and take seconds for the ~10⁵
    spatial positions of even the demo layer; this batched solver keeps completeness cheap.
    """
    if X.device.type == "cpu":
        # hundreds of small column updates: extra intra-op threads only add synchronisation
        # (measured 6-12x slower with 2 threads on a busy 2-core machine)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _coordinate_descent(X, W, l1, positive, n_sweeps)
        finally:
            torch.set_num_threads(previous)
    return _coordinate_descent(X, W, l1, positive, n_sweeps)


def _coordinate_descent(X: torch.Tensor, W: torch.Tensor, l1: float, positive: bool,
                        n_sweeps: int) -> torch.Tensor:
    G = W @ W.T
    XWt = X @ W.T
    diag = torch.clamp(torch.diagonal(G), min=1e-12)
    H = torch.linalg.lstsq(G.T.double(), XWt.T.double()).solution.T.to(X.dtype)
    H = torch.clamp(H, min=0) if positive else H
    HG = H @ G
    for _ in range(n_sweeps):
        for k in range(G.shape[0]):
            step = H[:, k] - (HG[:, k] - XWt[:, k]) / diag[k]
            if positive:
                new = torch.clamp(step - l1 / diag[k], min=0)
            else:
                new = torch.sign(step) * torch.clamp(step.abs() - l1 / diag[k], min=0)
            delta = new - H[:, k]
            H[:, k] = new
            HG += delta[:, None] * G[k][None, :]
    return H


def _channels_last(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    moved = t.movedim(1, -1) if t.ndim > 2 else t
    return moved.reshape(-1, t.shape[1]), tuple(moved.shape)


def _channels_first(flat: torch.Tensor, moved_shape: tuple[int, ...], ndim: int) -> torch.Tensor:
    out = flat.reshape(moved_shape)
    return out.movedim(-1, 1) if ndim > 2 else out


def network_completeness(model: torch.nn.Module, images: ImageSet, preprocess: Callable, layer: str,
                         basis: Basis, k_values: Sequence[int] | None = None, activation: str = "post_relu",
                         labels: np.ndarray | None = None, device: torch.device | str = "cpu",
                         batch_size: int = 256, progress: Callable[[float], None] | None = None) -> dict:
    """Accuracy and KL(original ‖ projected) of the outputs, for k in ``k_values``, both orders.

    ``labels`` (one per image of ``images``) score accuracy; without them, accuracy is agreement with
    the unmodified network's top-1 prediction (``reference`` says which). ``layer`` is any name
    ``python -m stimuli layers`` prints (:mod:`stimuli.layers`); its value is replaced through a hook.
    """
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

    def hook(out):
        if state.get("replace") is not None:
            return state["replace"]
        state["captured"] = out
        return None

    with layer_hook(model, layer, hook):
        with torch.inference_mode():
            for idx, x, _failed in batches(images, preprocess, batch_size):
                if x is None:
                    continue
                x = x.to(device)
                state["replace"] = None
                logits = model(x).float()
                t = state.pop("captured")
                a = torch.relu(t) if activation == "post_relu" else t
                flat, moved_shape = _channels_last(a.float())
                codes = projector.codes(flat)
                logp = torch.log_softmax(logits, 1)
                pred = logits.argmax(1)
                target = pred if labels is None else torch.as_tensor(labels[idx.numpy()], device=device)
                base_correct += float((pred == target).sum())
                for o, units in enumerate((order, order[::-1].copy())):
                    for j, k in enumerate(ks):
                        rec = projector.project(codes, units[:k])
                        state["replace"] = _channels_first(rec, moved_shape, t.ndim).to(t.dtype)
                        lq = torch.log_softmax(model(x).float(), 1)
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
