import numpy as np
import pytest
import torch

from stimuli.bases import SAEBasis, make_basis
from stimuli.measures.completeness import _Projector, cumulative_explained_variance


def _planted(seed=0, n=2000, n_atoms=16, n_channels=24, k=3):
    """Rows that are sums of exactly k of n_atoms unit atoms with positive weights, on a constant offset."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, n_channels))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for i in range(n):
        codes[i, rng.choice(n_atoms, size=k, replace=False)] = rng.uniform(0.5, 2.0, size=k)
    A = codes @ atoms + 1.0 + 0.01 * rng.normal(size=(n, n_channels))
    return A, atoms, codes


def _best_cosines(truth, fitted):
    return np.abs(truth @ fitted.T).max(axis=1)  # both have unit rows


@pytest.fixture(scope="module")
def planted_fit():
    A, atoms, codes = _planted()
    # a modestly overcomplete dictionary, as SAEs are used; exactly complete ones can merge two atoms
    sae = SAEBasis(n_components=32, k=3, epochs=100, random_state=0).fit(A)
    return A, atoms, codes, sae


def test_sae_recovers_planted_atoms(planted_fit):
    A, atoms, _, sae = planted_fit
    assert sae.components_.shape == (32, 24)
    np.testing.assert_allclose(np.linalg.norm(sae.components_, axis=1), 1.0, atol=1e-5)
    assert _best_cosines(atoms, sae.components_).min() > 0.98


def test_sae_codes_are_topk_sparse_and_decode_linearly(planted_fit):
    A, _, _, sae = planted_fit
    codes = sae.transform(A)
    assert codes.shape == (len(A), 32)
    assert (codes >= 0).all()
    assert ((codes > 0).sum(axis=1) <= 3).all()
    rec = sae.inverse_transform(codes)
    np.testing.assert_allclose(rec, sae.offset_ + codes @ sae.components_)
    r2 = 1 - ((A - rec) ** 2).sum() / ((A - A.mean(0)) ** 2).sum()
    assert r2 > 0.98
    # refitting the units' scales can only improve on the codes' own reconstruction
    assert r2 - 1e-9 <= cumulative_explained_variance(sae, A, codes)[-1] <= 1
    # sorted by explained variance, largest first, like the other sparse bases
    assert np.all(np.diff(sae.explained_variance_ratio_) <= 1e-12)


def test_sae_torch_encoder_matches_numpy(planted_fit):
    A, _, _, sae = planted_fit
    t = sae.encode(torch.as_tensor(A[:100], dtype=torch.float32))
    np.testing.assert_allclose(t.numpy(), sae.transform(A[:100]), rtol=1e-4, atol=1e-4)
    projector = _Projector(sae, torch.device("cpu"))
    assert torch.equal(projector.codes(torch.as_tensor(A[:5], dtype=torch.float32)),
                       sae.encode(torch.as_tensor(A[:5], dtype=torch.float32)))


def test_sae_is_deterministic_on_cpu():
    A, _, _ = _planted(seed=1, n=400)
    a = SAEBasis(n_components=20, k=3, epochs=15, random_state=7, device="cpu").fit(A)
    b = SAEBasis(n_components=20, k=3, epochs=15, random_state=7, device="cpu").fit(A)
    np.testing.assert_array_equal(a.components_, b.components_)
    np.testing.assert_array_equal(a.transform(A), b.transform(A))
    assert a.loss_curve_ == b.loss_curve_
    c = SAEBasis(n_components=20, k=3, epochs=15, random_state=8, device="cpu").fit(A)
    assert not np.array_equal(a.components_, c.components_)


def test_sae_parameters_and_factory():
    sae = make_basis("sae", n_components=4, k=10, epochs=2)
    assert isinstance(sae, SAEBasis) and sae.get_params()["k"] == 10
    A = np.abs(np.random.default_rng(0).normal(size=(50, 6)))
    codes = sae.fit_transform(A)
    assert sae.k_ == 4 and codes.shape == (50, 4)  # k is capped at the number of latents
    assert len(sae.loss_curve_) == 2
    with pytest.raises(ValueError, match="sae basis needs"):
        SAEBasis(k=0).fit(A)
    with pytest.raises(ValueError, match="bad parameters"):
        make_basis("sae", sparsity=3)


def test_sae_in_the_pipeline(tmp_path):
    from stimuli.artifact import read_manifest
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    config = StimulusConfig.of(bases=["sae"], n_units=2, n_components=48, sae={"k": 4, "epochs": 10},
                            completeness_k=[1, 48], completeness_max_images=200, max_images=600)
    assert StimulusConfig.from_dict(config.to_dict()) == config
    m = read_manifest(run(config, tmp_path / "sae"))
    (entry,) = m["layers"]
    assert entry["basis"] == "sae" and entry["n_components"] == 48
    assert m["parameters"]["sae"] == {"k": 4, "epochs": 10}
    assert len(entry["units"]) == 2 and len(entry["units"][0]["references_max"]) == 9
    comp = entry["completeness"]
    assert comp["k"] == [1, 48] and 0.0 <= comp["accuracy"][0] <= comp["accuracy"][1] + 0.05
    assert 0 < entry["cumulative_explained_variance"][-1] <= 1
