"""Distributional influence of a layer's units on a quantity of interest (Leino et al., 2018,
"Influence-directed explanations for deep convolutional networks").

Leino et al. define the influence of an internal unit ``z_j`` on a quantity of interest ``q`` (a class
logit, or the difference of two class logits) over a distribution of interest ``P`` (the images of a
class, or all images) as the expected gradient ``χ_j = E_{x~P}[∂q/∂z_j (x)]``.

Here a unit is a direction of a basis fitted on the *pooled* activations, ``ā ≈ offset_ + h @ W``
(``W = components_``, K x C), so ``z_j`` is the code ``h_j``. Raising ``h_j`` by ε moves the pooled
activation by ``ε·W_j``; the layer's output is moved by a *lift* of that change to the spatial map,
the one matching how activations were pooled (``g_s = ∂q/∂t_s(x)``, the gradient of ``q`` w.r.t. the
hooked module's output ``t`` at spatial position ``s``):

* ``pooling="mean"``: every position moves by ``ε·W_j`` (the mean then moves by exactly ``ε·W_j``), so
  ``∂q/∂h_j = Σ_s ⟨g_s, W_j⟩`` — the spatially *summed* gradient, dotted with the component;
* ``pooling="class_token"`` (a transformer's (B, T, C) tokens): only the class token moves, so
  ``∂q/∂h_j = ⟨g_cls, W_j⟩``; for ``mean`` and ``max`` a transformer's positions are its patch tokens;
* ``pooling="max"``: channel ``c`` moves by ``ε·W_jc`` only at its arg-max position ``s*_c`` (the max
  then moves by exactly ``ε·W_jc``), so ``∂q/∂h_j = Σ_c g_{c,s*_c} W_jc`` — the gradient gathered
  where the max was taken.

Hence ``χ = W @ E_x[pooled gradient]``: one backward pass per image serves every basis of a layer
(:func:`pooled_gradient`), and for neurons (``W = I``) ``χ`` is the channel's summed gradient. The
perturbation is added to the hooked module's output: with ``activation="post_relu"`` the basis saw
``relu(t)``, and where ``t < 0`` a following ReLU of the network passes no gradient — the influence is
that of the network as it is. The offset does not enter (a constant shift has no derivative).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..layers import POOLINGS, Layout, hook as layer_hook
from ..settings.influence import DISTRIBUTIONS, InfluenceSettings  # noqa: F401 - this measure's options


@dataclass(frozen=True)
class Quantity:
    """A class logit (``versus=None``) or the difference of two class logits."""

    cls: int
    versus: int | None = None

    @classmethod
    def parse(cls, value: Quantity | Mapping[str, Any] | int) -> Quantity:
        if isinstance(value, Quantity):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return cls(int(value))
        if isinstance(value, Mapping):
            unknown = set(value) - {"class", "versus"}
            if "class" not in value or unknown:
                raise ValueError(f"a quantity of interest is {{'class': c}} or {{'class': c, 'versus': d}}, "
                                 f"not {dict(value)!r}")
            versus = value.get("versus")
            q = cls(int(value["class"]), None if versus is None else int(versus))
            if q.versus == q.cls:
                raise ValueError("the quantity's 'versus' class must differ from its class")
            return q
        raise ValueError(f"cannot read a quantity of interest from {value!r}")

    def check(self, n_classes: int) -> None:
        for c in (self.cls, self.versus):
            if c is not None and not 0 <= c < n_classes:
                raise ValueError(f"class {c} is out of range for a network with {n_classes} outputs")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        q = logits[:, self.cls]
        return q if self.versus is None else q - logits[:, self.versus]

    def to_dict(self) -> dict[str, int | None]:
        return {"class": self.cls, "versus": self.versus}


def _pool_gradient(grad: torch.Tensor, act: torch.Tensor, pooling: str) -> torch.Tensor:
    """A layer's gradient -> B x C, by the lift that matches ``pooling`` (module docstring), over the
    positions the pooling reads in the layer's layout (:meth:`stimuli.layers.Layout.pooled_positions`: a
    map's positions, a transformer's patch tokens, or its class token alone)."""
    layout = Layout.detect(grad.shape)
    if layout.kind == "BC":
        return grad
    g = layout.pooled_positions(grad, pooling)
    if pooling in ("mean", "class_token"):
        return g.sum(2)
    where = layout.pooled_positions(act, pooling).argmax(2, keepdim=True)
    return g.gather(2, where).squeeze(2)


def _input_batches(images, preprocess, batch_size: int):
    """``(indices, batch)`` from an ImageSet (through ``preprocess``) or an N x ... tensor."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(images, dtype=torch.float32)
        for start in range(0, len(x), batch_size):
            yield torch.arange(start, min(start + batch_size, len(x))), x[start:start + batch_size]
        return
    from ..activations import batches

    for idx, x, _failed in batches(images, preprocess, batch_size):
        if x is not None:
            yield idx, x


def pooled_gradient(model: torch.nn.Module, images, preprocess: Callable | None, layer: str,
                    quantity: Quantity | Mapping | int, activation: str = "post_relu", pooling: str = "mean",
                    distribution: str = "all", labels: Sequence[int] | None = None,
                    device: torch.device | str = "cpu", batch_size: int = 256,
                    progress: Callable[[float], None] | None = None) -> tuple[np.ndarray, int]:
    """``(E_x[pooled ∂q/∂t], n_images)``: the C-vector every basis's influence is read from.

    ``images`` is an :class:`~stimuli.datasets.ImageSet` (read through ``preprocess``) or a tensor of
    network inputs. ``distribution="class"`` averages over the images whose label is the quantity's
    class — ``labels`` (one per image), or the network's own prediction where ``labels`` is None.
    """
    q = Quantity.parse(quantity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, not {distribution!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    device = torch.device(device)
    model = model.to(device).eval()
    labels_arr = None if labels is None else np.asarray(labels)
    state: dict = {}

    def hook(out):
        # a leaf stands in for the output, so the backward pass stops here and needs no weight grads
        leaf = out.detach().requires_grad_(True)
        state["t"] = leaf
        return leaf

    total = None
    n_used = 0
    n_total = len(images)
    n_seen = 0
    with layer_hook(model, layer, hook), torch.enable_grad():
        for idx, x in _input_batches(images, preprocess, batch_size):
            logits = model(x.to(device)).float()
            if logits.ndim != 2:
                raise ValueError(f"the network's output must be N x classes, got {tuple(logits.shape)}")
            q.check(logits.shape[1])
            t = state.pop("t")
            (grad,) = torch.autograd.grad(q(logits).sum(), t)
            act = torch.relu(t.detach()) if activation == "post_relu" else t.detach()
            pooled = _pool_gradient(grad.float(), act.float(), pooling).double()
            if distribution == "class":
                if labels_arr is not None:
                    keep = torch.as_tensor(labels_arr[idx.numpy()] == q.cls, device=device)
                else:
                    keep = logits.argmax(1) == q.cls
                pooled = pooled[keep]
            s = pooled.sum(0)
            total = s if total is None else total + s
            n_used += int(pooled.shape[0])
            n_seen += len(idx)
            if progress:
                progress(n_seen / n_total)
    if n_used == 0:
        where = "labelled" if labels_arr is not None else "predicted as"
        raise ValueError(f"no image is {where} class {q.cls}: the distribution of interest is empty")
    return (total / n_used).cpu().numpy(), n_used


def influence_from_gradient(basis, mean_gradient: np.ndarray, per: str = "code") -> np.ndarray:
    """χ = components_ @ E[pooled gradient] (K,), for any basis with a linear decoder.

    ``per="direction"`` divides by each component's norm: the influence of a unit-length step along
    the unit's direction. Neurons and PCA have unit-norm components, so the two agree; NMF and
    dictionary atoms do not (a small atom has large codes), and comparing or ranking units across
    bases should use the direction form, which does not depend on how a code is scaled.
    """
    W = np.asarray(basis.components_, dtype=np.float64)
    g = np.asarray(mean_gradient, dtype=np.float64)
    if W.shape[1] != g.shape[0]:
        raise ValueError(f"the basis has {W.shape[1]} channels but the layer's gradient has {g.shape[0]}")
    chi = W @ g
    if per == "direction":
        norms = np.linalg.norm(W, axis=1)
        return np.divide(chi, norms, out=np.zeros_like(chi), where=norms > 0)
    if per != "code":
        raise ValueError(f"per must be 'code' or 'direction', not {per!r}")
    return chi


def distributional_influence(model: torch.nn.Module, images, preprocess: Callable | None, layer: str, basis,
                             quantity: Quantity | Mapping | int, device: torch.device | str = "cpu",
                             batch_size: int = 256, progress: Callable[[float], None] | None = None, *,
                             activation: str = "post_relu", pooling: str = "mean", distribution: str = "all",
                             labels: Sequence[int] | None = None) -> np.ndarray:
    """Influence of each of the basis's K units on ``quantity`` (``{"class": c}`` or
    ``{"class": c, "versus": d}``), averaged over ``images`` (or over the images of class ``c``
    with ``distribution="class"``). See the module docstring for the exact definition."""
    g, _ = pooled_gradient(model, images, preprocess, layer, quantity, activation=activation, pooling=pooling,
                           distribution=distribution, labels=labels, device=device, batch_size=batch_size,
                           progress=progress)
    return influence_from_gradient(basis, g)


def concentration(influence, k: int | Sequence[int] | None = None):
    """Share of the total |influence| held by the ``k`` units of largest |influence|.

    ``k`` an int gives a float; a sequence gives a list; None gives the whole curve over k = 1…K. A
    basis whose curve rises faster concentrates the quantity's evidence in fewer units.
    """
    a = np.sort(np.abs(np.asarray(influence, dtype=np.float64)))[::-1]
    total = a.sum()
    curve = np.cumsum(a) / total if total > 0 else np.zeros_like(a)
    if k is None:
        return curve.tolist()
    if isinstance(k, (int, np.integer)):
        if k < 1:
            raise ValueError("k must be at least 1")
        return float(curve[min(int(k), len(a)) - 1])
    return [concentration(influence, int(v)) for v in k]


def influence_order(influence) -> np.ndarray:
    """Units from the largest to the smallest |influence| (ties by index).

    By magnitude, because a PCA direction's sign is arbitrary: a unit pushing hard against the class
    is as much part of its evidence as one pushing for it (the signed value is kept as a measure).
    """
    return np.argsort(-np.abs(np.asarray(influence, dtype=np.float64)), kind="stable")


def class_influence_report(model, images, preprocess, layer: str, bases: Mapping[str, Any],
                           quantity, top: int = 5, ks: Sequence[int] | None = None, **kwargs) -> dict:
    """For the CLI: per basis, the top units by |direction influence| and its concentration curve."""
    g, n = pooled_gradient(model, images, preprocess, layer, quantity, **kwargs)
    out: dict[str, Any] = {"layer": layer, "quantity": Quantity.parse(quantity).to_dict(), "n_images": n,
                           "bases": {}}
    for name, basis in bases.items():
        chi = influence_from_gradient(basis, g)
        direction = influence_from_gradient(basis, g, per="direction")
        order = influence_order(direction)
        K = len(chi)
        kk = [k for k in (ks or _doubling(K)) if k <= K]
        out["bases"][name] = {
            "n_components": K,
            "top_units": [{"index": int(u), "influence": round(float(chi[u]), 6),
                           "influence_direction": round(float(direction[u]), 6)} for u in order[:top]],
            "concentration": {"k": kk, "share": [round(v, 6) for v in concentration(direction, kk)]},
        }
    return out


def _doubling(n: int) -> list[int]:
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]
