"""The BatchTopK sparse autoencoder as a basis (Bussmann, Leask and Nanda, 2024, "BatchTopK sparse
autoencoders").

TopK's constraint relaxed to the batch: in training, a batch of ``B`` images keeps its ``k·B`` largest
ReLU pre-activations in all, so an image may use more latents than ``k`` and another fewer. At
inference a batch no longer exists, and the paper replaces the selection by one global threshold ``θ``,
the mean over training batches of the smallest activation kept: ``codes = ReLU(pre) · [ReLU(pre) > θ]``.
``θ`` is read once after training, with the final weights, over the training data in fixed batches, so
the codes are a function of the image alone (what completeness projects and what ranks the exemplars).
Everything else — unit-norm atoms, Adam with the linear decay, the auxiliary loss reviving dead latents,
the decoder bias — is the TopK autoencoder's (:class:`stimuli.bases.sae.SAEBasis`).
"""

from __future__ import annotations

import numpy as np

from .sae import SAE_DEFAULTS, SAEBasis
from .sae_training import Variant

BATCHTOPK_DEFAULTS = dict(SAE_DEFAULTS)


class BatchTopKVariant(Variant):
    def codes(self, lin):
        import torch

        pre = torch.relu(lin)
        flat = pre.flatten()
        vals, idx = flat.topk(min(self.k * len(pre), flat.numel()))
        return torch.zeros_like(flat).scatter_(0, idx, vals).view_as(pre)

    def finish(self, X, encode, bs: int) -> dict:
        smallest = []
        for b in range(0, len(X), bs):
            z = self.codes(encode(X[b : b + bs]).float())
            kept = z[z > 0]
            if kept.numel():
                smallest.append(float(kept.min()))
        return {"threshold": float(np.mean(smallest)) if smallest else 0.0}


class BatchTopKBasis(SAEBasis):
    """BatchTopK (module docstring); ``threshold_`` is ``θ`` in the scaled data's units."""

    name = "batchtopk"
    tags = SAEBasis.tags.__class__(sparse_codes=True, config_section="batchtopk", config_defaults=BATCHTOPK_DEFAULTS)

    def _variant(self, A: np.ndarray) -> Variant:
        return BatchTopKVariant(self.k_)

    def _learned(self, extra: dict) -> None:
        self.threshold_ = float(extra["threshold"])

    def _select(self, lin):
        import torch

        pre = torch.relu(lin)
        return pre * (pre > self.threshold_)

    @classmethod
    def check_params(cls, params) -> None:
        SAEBasis.check_params(params)
