"""Distributional influence against networks whose influences are known in closed form."""

import numpy as np
import pytest
import torch
from torch import nn

from stimuli.bases import NeuronBasis, PCABasis
from stimuli.measures.influence import (
    Quantity,
    concentration,
    distributional_influence,
    influence_from_gradient,
    influence_order,
    pooled_gradient,
)
from stimuli.selection import select_units


class _LinearHead(nn.Module):
    """feat (1x1 conv, the layer) -> spatial mean or max -> linear head: ∂q/∂(pooled feat) is the head's row."""

    def __init__(self, pooling="mean", relu=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.feat = nn.Conv2d(3, 5, 1)
        self.head = nn.Linear(5, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        self.pooling, self.relu = pooling, relu

    def forward(self, x):
        t = self.feat(x)
        if self.relu:
            t = torch.relu(t)
        p = t.flatten(2).mean(2) if self.pooling == "mean" else t.flatten(2).amax(2)
        return self.head(p)


def _inputs(n=40, seed=1):
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))


def _pooled(model, x, pooling):
    with torch.no_grad():
        t = model.feat(x)
    return (t.flatten(2).mean(2) if pooling == "mean" else t.flatten(2).amax(2)).double().numpy()


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_neuron_and_rotated_basis(pooling):
    model = _LinearHead(pooling)
    x = _inputs()
    w = model.head.weight.detach().double().numpy()
    A = _pooled(model, x, pooling)
    neuron = NeuronBasis().fit(A)
    chi = distributional_influence(model, x, None, "feat", neuron, {"class": 2}, activation="pre_relu",
                                   pooling=pooling)
    np.testing.assert_allclose(chi, w[2], rtol=1e-5, atol=1e-6)
    pca = PCABasis().fit(A)  # an orthonormal rotation: influence = R @ head row
    chi = distributional_influence(model, x, None, "feat", pca, {"class": 2, "versus": 0},
                                   activation="pre_relu", pooling=pooling)
    np.testing.assert_allclose(chi, pca.components_ @ (w[2] - w[0]), rtol=1e-5, atol=1e-6)


def test_relu_gates_the_expected_gradient():
    # q = w · mean_s relu(t_s): ∂q/∂t_{c,s} = w_c 1[t_{c,s} > 0] / HW, summed over s: w_c · P(t_c > 0)
    model = _LinearHead("mean", relu=True)
    x = _inputs(64)
    with torch.no_grad():
        frac = (model.feat(x) > 0).double().flatten(2).mean(2).mean(0).numpy()
    g, n = pooled_gradient(model, x, None, "feat", 1, activation="post_relu")
    assert n == 64
    np.testing.assert_allclose(g, model.head.weight[1].detach().double().numpy() * frac, rtol=1e-5)


def test_class_distribution_uses_labels_or_predictions():
    model = _LinearHead("mean")
    x = _inputs(30)
    labels = np.array([0, 1, 2] * 10)
    _, n = pooled_gradient(model, x, None, "feat", 2, distribution="class", labels=labels)
    assert n == 10
    with torch.no_grad():
        n_pred = int((model(x).argmax(1) == 3).sum())
    if n_pred:
        assert pooled_gradient(model, x, None, "feat", 3, distribution="class")[1] == n_pred
    with pytest.raises(ValueError, match="empty"):
        pooled_gradient(model, x, None, "feat", 3, distribution="class", labels=labels)


def test_quantity_and_concentration():
    assert Quantity.parse({"class": 3, "versus": 5}) == Quantity(3, 5)
    assert Quantity.parse(4) == Quantity(4)
    for bad in ({"klass": 1}, {"class": 1, "versus": 1}, "3"):
        with pytest.raises(ValueError):
            Quantity.parse(bad)
    chi = np.array([1.0, -3.0, 0.0, 4.0, 2.0])
    assert concentration(chi, 1) == pytest.approx(0.4)
    assert concentration(chi, [2, 5]) == pytest.approx([0.7, 1.0])
    assert concentration(chi)[-1] == pytest.approx(1.0)
    assert influence_order(chi).tolist() == [3, 1, 4, 0, 2]
    sel = select_units(np.ones(5), 2, "influence", influence=chi, responses_std=np.array([1, 1, 1, 0, 1]))
    assert sel.tolist() == [1, 4]


def test_direction_form_removes_code_scale():
    basis = NeuronBasis().fit(np.random.default_rng(0).random((10, 3)))
    basis.components_ = np.diag([2.0, 1.0, 0.5])
    g = np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(influence_from_gradient(basis, g), [2.0, 1.0, 0.5])
    np.testing.assert_allclose(influence_from_gradient(basis, g, per="direction"), [1.0, 1.0, 1.0])


def test_demo_network_influence(demo, digits, demo_activations):
    basis = NeuronBasis().fit(demo_activations.values["conv2"])
    sub = digits.subset(np.arange(200))
    chi = distributional_influence(demo.model, sub, demo.preprocess, "conv2", basis, {"class": 3},
                                   distribution="class", labels=sub.labels)
    assert chi.shape == (32,) and np.isfinite(chi).all() and np.abs(chi).sum() > 0


def test_pipeline_influence_selection_and_overlays(tmp_path, stimuli_cache):
    from stimuli.artifact import read_manifest
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    config = StimulusConfig.of(n_units=2, bases=["neuron", "pca"], unit_selection="influence", influence_class=3,
                            attribution_overlays=True, completeness=False, max_images=300)
    m = read_manifest(run(config, tmp_path / "a"))
    for entry in m["layers"]:
        conc = entry["influence_concentration"]
        assert len(conc) == entry["n_components"] and conc[-1] == pytest.approx(1.0)
        assert entry["influence_quantity"]["class"] == 3 and entry["attribution_method"] == "gradcam"
        ranks = [u["measures"]["influence_rank"] for u in entry["units"]]
        assert ranks == [1, 2]
        for u in entry["units"]:
            assert len(u["attribution_overlays_max"]) == len(u["references_max"])
            assert all((tmp_path / "a" / f).is_file() for f in u["attribution_overlays_max"])
    with pytest.raises(ValueError, match="influence_class"):
        StimulusConfig.of(unit_selection="influence")
