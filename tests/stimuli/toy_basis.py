"""A basis that the project does not ship, written as a new basis would be: one module, a subclass of
``stimuli.bases.Basis`` with its name and tags, and nothing else anywhere (the test registers it).

A random rotation of the centred activations: orthonormal atoms drawn from the seed, the same for
every image, so its codes are linear (``linear_codes``) and every default of the base class (exact codes
by ``transform``, readout by central differences, linear scores) applies. Its one parameter of its own,
``reflect`` (the atoms negated), is the job configuration's ``rotation`` key: the tags name the key and
its defaults, :meth:`check_params` checks the values."""

import numpy as np

from stimuli.bases import Basis, BasisTags, as_float64, column_mean


class RotationBasis(Basis):
    name = "rotation"
    tags = BasisTags(linear_codes=True, config_section="rotation", config_defaults={"reflect": False})

    def __init__(self, n_components=None, reflect=False, random_state=0):
        self.n_components = n_components
        self.reflect = reflect
        self.random_state = random_state

    @classmethod
    def check_params(cls, params):
        if not isinstance(params["reflect"], bool):
            raise ValueError(f"rotation.reflect must be true or false, not {params['reflect']!r}")

    def fit_transform(self, A, y=None):
        A = as_float64(A)
        c = A.shape[1]
        k = c if self.n_components is None else int(self.n_components)
        q, _ = np.linalg.qr(np.random.default_rng(self.random_state).standard_normal((c, c)))
        self.components_ = np.ascontiguousarray(q.T[:k] * (-1.0 if self.reflect else 1.0))
        self.offset_ = column_mean(A)
        codes = self.transform(A)
        self._finish(A, codes)
        return codes

    def transform(self, A):
        return (as_float64(A) - self.offset_) @ self.components_.T

    def scores(self, x):
        import torch

        offset = torch.as_tensor(self.offset_, dtype=torch.float32, device=x.device)
        W = torch.as_tensor(self.components_, dtype=torch.float32, device=x.device)
        return (x - offset) @ W.T
