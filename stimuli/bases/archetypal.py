"""The archetypal sparse autoencoder as a basis (Fel et al., 2025, "Archetypal SAE: adaptive and
stable dictionary learning for concept extraction in large vision models").

A TopK autoencoder whose atoms may not leave the data: each atom is a convex combination of candidate
points ``C`` drawn from the data, plus a small relaxation, ``D = softmax(S) @ C + Λ`` with
``||Λ_j|| ≤ δ`` (the paper's RA-SAE; ``delta = 0`` is the strict A-SAE). The row-stochastic
``softmax(S)`` and ``Λ`` are trained, ``C`` is fixed. As in the paper the candidates are the
k-means centroids of the data (``n_candidates`` of them, scikit-learn's ``KMeans``), so the cost does not
grow with the number of images, and the reconstruction has no decoder bias: ``a ≈ codes @ D``, atoms
and data in the same (uncentred) space, so an atom reads as a mixture of typical activations. The
paper's point is stability: atoms tied to the data's hull change little between seeds, where a free
dictionary's do. Codes are TopK's; the data are scaled as the TopK autoencoder scales them (rows'
centred RMS norm 1), and ``δ`` is in those units. Each atom starts at one candidate (S one-hot times
``init_logit``), so no two atoms start as the same mean of all candidates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .sae import SAE_DEFAULTS, SAEBasis, _is_int
from .sae_training import Variant

ARCHETYPAL_DEFAULTS = {**SAE_DEFAULTS, "n_candidates": 256, "delta": 0.1}
# the logit an atom's own candidate starts with: softmax puts about 99 % of its weight there with 256
# candidates, so the atom starts at a data point yet every candidate has a gradient
INIT_LOGIT = 10.0


class ArchetypalVariant(Variant):
    unit_norm_decoder = False
    decoder_bias = False

    def __init__(self, k: int, candidates: np.ndarray, delta: float) -> None:
        super().__init__(k)
        self.candidates, self.delta = candidates, delta

    def setup(self, X, D, gen, device) -> list:
        import torch

        K, n_cand = D.shape[0], len(self.candidates)
        self.C = torch.as_tensor(self.candidates, dtype=torch.float32, device=device)
        start = torch.randperm(n_cand, generator=gen)[torch.arange(K) % n_cand]
        S = torch.zeros(K, n_cand)
        S[torch.arange(K), start] = INIT_LOGIT
        # atoms sharing a candidate (more atoms than candidates) are told apart by a small perturbation
        S += 0.01 * torch.randn(K, n_cand, generator=gen)
        self.S = torch.nn.Parameter(S.to(device))
        self.L = torch.nn.Parameter(torch.zeros(K, self.C.shape[1], device=device))
        return [self.S, self.L]

    def initial_atoms(self, D):
        import torch

        with torch.no_grad():
            return self.decoder(None).detach().clone()

    def decoder(self, W_dec):
        import torch

        return torch.softmax(self.S, dim=1) @ self.C + self.L

    def project(self) -> None:
        norms = self.L.norm(dim=1, keepdim=True)
        self.L.mul_((self.delta / norms.clamp_min(1e-12)).clamp(max=1.0))


class ArchetypalBasis(SAEBasis):
    """Archetypal SAE (module docstring); ``candidates_`` are the k-means centroids, ``weights_`` the
    atoms' convex weights over them (K x candidates, rows summing to 1) and ``relaxation_`` the
    relaxation ``Λ``, so ``components_ = weights_ @ candidates_ + relaxation_``. Atoms, candidates and
    relaxation are in the scaled data's units (``data / scale_``); the codes carry the scale, as the
    TopK autoencoder's do."""

    name = "archetypal"
    tags = SAEBasis.tags.__class__(sparse_codes=True, config_section="archetypal", config_defaults=ARCHETYPAL_DEFAULTS)

    def __init__(
        self,
        n_components: int | None = None,
        k: int = 8,
        epochs: int = 100,
        lr: float = 3e-3,
        batch_size: int = 256,
        aux_k: int | None = None,
        aux_coef: float = 1.0 / 32,
        n_candidates: int = 256,
        delta: float = 0.1,
        device: str = "auto",
        random_state: int | None = 0,
    ) -> None:
        super().__init__(
            n_components=n_components,
            k=k,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            aux_k=aux_k,
            aux_coef=aux_coef,
            device=device,
            random_state=random_state,
        )
        self.n_candidates = n_candidates
        self.delta = delta

    def _variant(self, A: np.ndarray) -> Variant:
        from sklearn.cluster import KMeans

        X = A / self.scale_
        n = min(int(self.n_candidates), len(np.unique(X, axis=0)))
        km = KMeans(n_clusters=n, n_init=1, random_state=0 if self.random_state is None else self.random_state)
        self._variant_ = ArchetypalVariant(self.k_, km.fit(X).cluster_centers_, float(self.delta))
        return self._variant_

    def _learned(self, extra: dict) -> None:
        import torch

        v = self._variant_
        with torch.no_grad():
            self.weights_ = torch.softmax(v.S, dim=1).double().cpu().numpy()
            self.relaxation_ = v.L.double().cpu().numpy()
        self.candidates_ = np.asarray(v.candidates, dtype=np.float64)
        del self._variant_

    def _reorder(self, order: np.ndarray) -> None:
        self.weights_, self.relaxation_ = self.weights_[order], self.relaxation_[order]

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        SAEBasis.check_params({k: v for k, v in params.items() if k not in ("n_candidates", "delta")})
        if not (_is_int(params["n_candidates"]) and params["n_candidates"] >= 1):
            raise ValueError(f"archetypal.n_candidates must be a positive integer, not {params['n_candidates']!r}")
        d = params["delta"]
        if not (isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0):
            raise ValueError(f"archetypal.delta must be a non-negative number, not {d!r}")
