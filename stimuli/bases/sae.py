"""The TopK sparse autoencoder as a basis: its encoder gives the codes, its decoder atoms the components."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Basis, BasisTags, as_float64
from .sae_training import Variant, train_sae

# k latents per image, Adam for `epochs` passes (stimuli.bases.sae_training)
SAE_DEFAULTS = {"k": 8, "epochs": 100, "lr": 3e-3, "batch_size": 256, "aux_k": None, "aux_coef": 1.0 / 32}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SAEBasis(Basis):
    """A TopK sparse autoencoder (Gao et al., 2024, "Scaling and evaluating sparse autoencoders").

    ``codes = TopK(ReLU((a - b_dec) @ W_enc.T + b_enc))`` keeps each image's ``k`` largest
    pre-activations; ``a ≈ b_dec + codes @ D`` with unit-norm decoder atoms ``D`` (``components_``),
    so a code is the length of its atom in the reconstruction. TopK sets the sparsity directly, with
    no L1 penalty shrinking the codes.

    Trained with Adam on the mean squared error, on CUDA when present (bfloat16 autocast for the
    matrix products) and deterministically on the CPU for a given ``random_state``. As in the paper:
    the encoder starts as the decoder's transpose, the decoder's rows are kept at unit norm (the
    gradient's radial part removed before each step), the learning rate decays linearly over the last
    fifth of the steps, and an auxiliary TopK loss on the latents that did not fire during the previous
    epoch (``aux_k`` of them, default ``2 k``, weight ``aux_coef``) revives dead latents. ``b_dec``
    starts at the coordinate-wise median of the data. The data are divided by ``scale_`` (root mean
    squared norm of the centred rows) before training, so ``lr`` means the same thing for every
    layer; codes and ``offset_`` are returned in the data's own units. Atoms are sorted by explained
    variance like NMF's. ``loss_curve_`` holds each epoch's mean loss, ``n_dead_`` the latents that
    never fire on the training data.
    """

    name = "sae"
    tags = BasisTags(sparse_codes=True, config_section="sae", config_defaults=SAE_DEFAULTS)

    def __init__(self, n_components: int | None = None, k: int = 8, epochs: int = 100, lr: float = 3e-3,
                 batch_size: int = 256, aux_k: int | None = None, aux_coef: float = 1.0 / 32,
                 device: str = "auto", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.k = k
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.aux_k = aux_k
        self.aux_coef = aux_coef
        self.device = device
        self.random_state = random_state

    def _device(self):
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def fit_transform(self, A, y=None) -> np.ndarray:
        import torch

        A = as_float64(A)
        K = A.shape[1] if self.n_components is None else int(self.n_components)
        self._validate(K)
        device = self._device()
        if device.type == "cpu" and K * A.shape[1] <= 1 << 16:
            # thousands of steps on small matrices: intra-op threads only add synchronisation, and one
            # thread sums in the same order on every machine
            previous = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                codes = self._fit(A, K, device)
            finally:
                torch.set_num_threads(previous)
        else:
            codes = self._fit(A, K, device)
        return codes

    def _fit(self, A: np.ndarray, K: int, device) -> np.ndarray:
        rms = float(np.sqrt(((A - A.mean(axis=0)) ** 2).sum(axis=1).mean()))
        self.scale_ = rms if rms > 0 else 1.0
        aux_k = int(self.aux_k) if self.aux_k is not None else 2 * self.k_
        trained = train_sae(A, self.scale_, K, int(self.epochs), self.lr, int(self.batch_size), aux_k,
                            self.aux_coef, device, self.random_state, self._variant(A))
        self.loss_curve_ = trained.loss_curve
        self._W_enc, self._b_enc, self._b_dec = trained.W_enc, trained.b_enc, trained.b_dec
        self._learned(trained.extra)
        self.components_ = trained.W_dec
        self.offset_ = self._b_dec * self.scale_
        codes = self.transform(A)
        order = self._sort_by_variance(A, codes)
        self._W_enc, self._b_enc = self._W_enc[order], self._b_enc[order]
        self._reorder(order)
        codes = codes[:, order]
        self.n_dead_ = int((codes.max(axis=0) <= 0).sum())
        self._finish(A, codes)
        return codes

    def _validate(self, K: int) -> None:
        if K < 1 or self.k < 1 or self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"the {self.name} basis needs n_components, k, epochs, batch_size >= 1 and lr > 0")
        self.k_ = min(int(self.k), K)

    # -- what a variant changes (stimuli.bases.batchtopk, jumprelu, archetypal) --------------------
    def _variant(self, A: np.ndarray) -> Variant:
        """The training :class:`~stimuli.bases.sae_training.Variant`: TopK."""
        return Variant(self.k_)

    def _learned(self, extra: dict) -> None:
        """Keep what the variant learned beside the weights."""

    def _reorder(self, order: np.ndarray) -> None:
        """Reorder per-latent state along with the atoms (sorted by explained variance)."""

    def _select(self, lin):
        """Codes from the encoder's pre-activations (torch, any float dtype): the ``k`` largest ReLU
        pre-activations of each row."""
        import torch

        pre = torch.relu(lin)
        vals, idx = pre.topk(self.k_, dim=1)
        return torch.zeros_like(pre).scatter_(1, idx, vals)

    def encode(self, X):
        """Codes of a torch tensor (float32, on its device) or array of rows (float64), in the data's
        units (pure; no fitting)."""
        import torch

        if isinstance(X, torch.Tensor):
            dt, dev, work = X.dtype, X.device, torch.float32
        else:
            X = torch.from_numpy(as_float64(X))
            dt, dev, work = None, X.device, torch.float64
        W = torch.as_tensor(self._W_enc, dtype=work, device=dev)
        be = torch.as_tensor(self._b_enc, dtype=work, device=dev)
        bd = torch.as_tensor(self._b_dec, dtype=work, device=dev)
        codes = self._select((X.to(work) / self.scale_ - bd) @ W.T + be) * self.scale_
        return codes.numpy() if dt is None else codes.to(dt)

    def transform(self, A) -> np.ndarray:
        return self.encode(as_float64(A))

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        for key in ("k", "epochs", "batch_size"):
            if not (_is_int(params[key]) and params[key] >= 1):
                raise ValueError(f"sae.{key} must be a positive integer, not {params[key]!r}")
        if not (params["aux_k"] is None or (_is_int(params["aux_k"]) and params["aux_k"] >= 0)):
            raise ValueError(f"sae.aux_k must be null or a non-negative integer, not {params['aux_k']!r}")
        for key, low in (("lr", "positive"), ("aux_coef", "non-negative")):
            v = params[key]
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > 0 if low == "positive" else v >= 0)):
                raise ValueError(f"sae.{key} must be a {low} number, not {v!r}")

    @classmethod
    def params_from_settings(cls, settings: Any, *, seed: int = 0, device: str = "auto") -> dict[str, Any]:
        return {**super().params_from_settings(settings, seed=seed, device=device), "device": device}

    def scores(self, x):
        return self.encode(x)

    def exact_codes(self, X):
        return self.encode(X)
