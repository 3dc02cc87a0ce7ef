"""Sobol estimators against analytically known indices, and region Sobol on a planted toy model."""

import numpy as np
import pytest
import torch

from stimuli.measures.sobol import grid_labels, region_sobol, saltelli_points, sobol_indices


def ishigami(u, a=7.0, b=0.1):
    x = -np.pi + 2 * np.pi * u
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def test_ishigami_matches_analytic_indices():
    # Ishigami & Homma (1990), a = 7, b = 0.1: closed-form variances of the ANOVA terms
    r = sobol_indices(ishigami, 3, 4096, seed=1, n_boot=50)
    assert r["n_base"] == 4096 and r["n_evaluations"] == 4096 * 8
    np.testing.assert_allclose(r["S1"], [0.3139, 0.4424, 0.0], atol=0.03)
    np.testing.assert_allclose(r["ST"], [0.5576, 0.4424, 0.2437], atol=0.03)
    assert abs(r["S2"][0, 2] - 0.2437) < 0.04 and abs(r["S2"][2, 0] - 0.2437) < 0.04
    assert abs(r["S2"][0, 1]) < 0.04 and abs(r["S2"][1, 2]) < 0.04
    assert np.isnan(np.diag(r["S2"])).all()
    assert (r["S1_conf"] > 0).all() and (r["S1_conf"] < 0.1).all()


def test_linear_additive_shares():
    a = np.array([1.0, 2.0, 3.0, 0.0])
    r = sobol_indices(lambda u: u @ a, 4, 1024, seed=0, n_boot=0)
    expected = a ** 2 / (a ** 2).sum()  # Var(a_i U_i) = a_i^2 / 12
    np.testing.assert_allclose(r["S1"], expected, atol=0.01)
    np.testing.assert_allclose(r["ST"], expected, atol=0.01)
    off = r["S2"][~np.eye(4, dtype=bool)]
    assert np.abs(off).max() < 0.02


def test_g_function():
    a = np.array([0.0, 1.0, 4.5, 9.0, 99.0])
    f = lambda u: np.prod((np.abs(4 * u - 2) + a) / (1 + a), axis=1)  # noqa: E731
    Vi = 1 / (3 * (1 + a) ** 2)
    expected = Vi / (np.prod(1 + Vi) - 1)
    r = sobol_indices(f, 5, 8192, seed=2, second_order=False, n_boot=0)
    np.testing.assert_allclose(r["S1"], expected, atol=0.03)
    assert "S2" not in r


def test_saltelli_design_blocks():
    X = saltelli_points(3, 10, seed=0)  # rounded up to 16
    n = 16
    assert X.shape == (n * 8, 3) and (X >= 0).all() and (X <= 1).all()
    A, B = X[:n], X[n:2 * n]
    AB1 = X[3 * n:4 * n]
    np.testing.assert_array_equal(AB1[:, 1], B[:, 1])
    np.testing.assert_array_equal(AB1[:, [0, 2]], A[:, [0, 2]])


def test_grid_labels():
    L = grid_labels(8, 8, 4)
    assert L.shape == (8, 8) and L[0, 0] == 0 and L[7, 7] == 15 and L[0, 2] == 1
    with pytest.raises(ValueError):
        grid_labels(4, 4, 5)


class _OneRegion(torch.nn.Module):
    """Class 1's logit reads only the top-left quarter of the image (with an interaction inside it)."""

    def forward(self, x):
        q = x[:, 0, :4, :4]
        s = q.mean((1, 2)) + q[:, 0, 0] * q[:, 3, 3]
        return torch.stack([torch.zeros_like(s), s], 1)


def test_region_sobol_finds_the_region():
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0)) + 1.0
    res = region_sobol(_OneRegion(), x, None, target_class=1, grid=2, n_samples=256, perturbation="mean",
                       n_boot=20)
    assert res.n_regions == 4 and res.S2.shape == (4, 4)
    assert int(np.argmax(res.S1)) == 0 and int(np.argmax(res.ST)) == 0
    assert res.ST[0] > 0.9 and np.abs(res.ST[1:]).max() < 0.05
    assert res.map("ST").shape == (8, 8)
    d = res.to_dict()
    assert d["grid"] == [2, 2] and abs(d["interaction_share"] - (1 - sum(d["S1"]))) < 1e-5


def test_region_sobol_label_map_and_errors():
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    labels = np.zeros((8, 8), dtype=int)
    labels[4:, :] = 1
    res = region_sobol(_OneRegion(), x, None, target_class=1, grid=labels, n_samples=64, perturbation="inpaint-blur",
                       second_order=False, n_boot=0)
    assert res.S2 is None and res.ST[0] > res.ST[1]
    with pytest.raises(ValueError):
        region_sobol(_OneRegion(), x, None, target_class=5, grid=2, n_samples=8)


def test_cli_sobol_and_influence_json(capsys, stimuli_cache):
    import json

    from stimuli.__main__ import main

    assert main(["sobol", "--network", "demo", "--image-index", "0", "--grid", "2", "--samples", "32",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_regions"] == 4 and len(out["S2"]) == 4 and "interaction_share" in out
    assert main(["influence", "--network", "demo", "--layer", "conv2", "--bases", "neuron,pca", "--class", "3",
                 "--versus", "5", "--max-images", "300", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quantity"] == {"class": 3, "versus": 5}
    assert len(out["bases"]["pca"]["top_units"]) == 5 and out["bases"]["neuron"]["concentration"]["share"][-1] == 1.0
    assert main(["sobol", "--image-index", "99999"]) == 2
