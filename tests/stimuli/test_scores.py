"""stimuli.scores: the unit's score is the basis's own code (the ranking of natural images), and its
gradient is the code's, checked by finite differences."""

import numpy as np
import pytest
import torch

from stimuli.bases import make_basis
from stimuli.config import StimulusConfig
from stimuli.pipeline import _basis_params
from stimuli.scores import score_matrix, unit_scores

BASES = ["neuron", "pca", "nmf", "dictionary", "sae"]


@pytest.fixture(scope="module")
def fitted(demo_activations):
    A = demo_activations.values["conv2"]
    config = StimulusConfig.of(bases=BASES, sae={"epochs": 10}, n_components={"nmf": 12, "dictionary": 12, "sae": 16})
    return A, {b: make_basis(b, **_basis_params(config, b)).fit(A) for b in BASES}


@pytest.mark.parametrize("name", BASES)
def test_scores_are_the_basis_codes(fitted, name):
    A, bases = fitted
    np.testing.assert_allclose(score_matrix(bases[name], A), bases[name].transform(A), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["pca", "dictionary", "sae"])
def test_gradient_is_the_codes_gradient(fitted, name):
    A, bases = fitted
    basis = bases[name]
    rng = np.random.default_rng(0)
    x = torch.tensor(A[:40], dtype=torch.float64, requires_grad=True)
    codes = unit_scores(basis, x)
    unit = int(np.argmax((codes.detach().numpy() > 0).sum(0)))
    codes[:, unit].sum().backward()
    d = rng.normal(size=x.shape) * 1e-4
    fd = (basis.transform(A[:40] + d)[:, unit] - basis.transform(A[:40] - d)[:, unit]) / 2
    predicted = (x.grad.numpy() * d).sum(1)
    # rows whose active set changes within the step are rare; the rest agree to rounding
    close = np.isclose(predicted, fd, rtol=2e-2, atol=2e-6)
    assert close.mean() >= 0.9 and np.abs(fd).max() > 0
