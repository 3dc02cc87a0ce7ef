import numpy as np
import pytest
from scipy.linalg import subspace_angles

from stimuli.bases import DictionaryBasis, NeuronBasis, NMFBasis, PCABasis, make_basis
from stimuli.measures.completeness import cumulative_explained_variance


def _match_cosines(truth, fitted):
    t = truth / np.linalg.norm(truth, axis=1, keepdims=True)
    f = fitted / np.maximum(np.linalg.norm(fitted, axis=1, keepdims=True), 1e-12)
    return np.abs(t @ f.T).max(axis=1)


def test_neuron_basis_is_the_identity():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 7)) * np.arange(1, 8)
    b = NeuronBasis().fit(A)
    np.testing.assert_array_equal(b.transform(A), A)
    np.testing.assert_array_equal(b.components_, np.eye(7))
    var = A.var(axis=0)
    np.testing.assert_allclose(b.explained_variance_ratio_, var / var.sum())
    np.testing.assert_allclose(b.inverse_transform(b.transform(A)), A)


def test_pca_recovers_planted_subspace():
    rng = np.random.default_rng(1)
    V = np.linalg.qr(rng.normal(size=(20, 3)))[0].T  # 3 orthonormal directions in 20 dims
    Z = rng.normal(size=(500, 3)) * np.array([5.0, 3.0, 2.0])
    A = Z @ V + 5.0 + 0.01 * rng.normal(size=(500, 20))
    b = PCABasis().fit(A)
    assert b.components_.shape == (20, 20)
    assert np.all(np.diff(b.explained_variance_ratio_) <= 1e-12)
    assert b.explained_variance_ratio_[:3].sum() > 0.999
    assert np.degrees(subspace_angles(b.components_[:3].T, V.T)).max() < 1.0
    codes = b.transform(A)
    np.testing.assert_allclose(codes.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(b.inverse_transform(codes), A, atol=1e-8)


def test_nmf_recovers_planted_parts():
    rng = np.random.default_rng(2)
    parts = np.zeros((4, 16))
    for k in range(4):
        parts[k, 4 * k:4 * k + 4] = rng.uniform(0.5, 1.5, size=4)
    H = rng.exponential(size=(400, 4))
    A = H @ parts
    b = NMFBasis(n_components=4, max_iter=1000, random_state=0).fit(A)
    assert (b.components_ >= 0).all()
    assert _match_cosines(parts, b.components_).min() > 0.99
    assert np.all(np.diff(b.explained_variance_ratio_) <= 1e-12)  # sorted, largest first
    cum = cumulative_explained_variance(b, A)
    assert cum[-1] > 0.999


def test_nmf_refuses_negative_activations():
    with pytest.raises(ValueError, match="non-negative"):
        NMFBasis(n_components=2).fit(np.array([[1.0, -0.5], [0.2, 0.3], [0.1, 0.1]]))


def test_dictionary_recovers_planted_sparse_atoms():
    rng = np.random.default_rng(3)
    atoms = rng.normal(size=(6, 12))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = rng.exponential(size=(1500, 6)) * (rng.random((1500, 6)) < 0.25)
    A = codes @ atoms
    b = DictionaryBasis(n_components=6, alpha=0.2, batch_size=32, random_state=0).fit(A)
    assert _match_cosines(atoms, b.components_).min() > 0.95
    assert (b.transform(A) >= 0).all()


def _least_squares_share(A, codes, W, units):
    """R² of the centred data regressed on the units' contributions c_j w_jᵀ (one scale each)."""
    X = A - A.mean(0)
    C = codes - codes.mean(0)
    design = np.stack([np.outer(C[:, j], W[j]).ravel() for j in units], axis=1)
    beta = np.linalg.lstsq(design, X.ravel(), rcond=None)[0]
    return 1 - ((X.ravel() - design @ beta) ** 2).sum() / (X ** 2).sum()


def test_cumulative_explained_variance_is_the_least_squares_fit_of_the_top_units():
    rng = np.random.default_rng(4)
    A = np.abs(rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)))
    b = NMFBasis(n_components=5, random_state=0).fit(A)
    codes = b.transform(A)
    cum = cumulative_explained_variance(b, A, codes)
    for k in range(1, 6):  # units are in variance order already
        assert cum[k - 1] == pytest.approx(_least_squares_share(A, codes, b.components_, range(k)), rel=1e-6, abs=1e-9)
    # the old figure, the codes' own reconstruction with the rest at their mean, is never above it
    kept = codes.copy()
    kept[:, 1:] = b.code_mean_[1:]
    total = ((A - A.mean(0)) ** 2).sum()
    assert 1 - ((A - b.inverse_transform(kept)) ** 2).sum() / total <= cum[0] + 1e-12


@pytest.mark.parametrize("name,params", [("nmf", {"n_components": 32}),
                                         ("dictionary", {"n_components": 48, "alpha": 0.1}),
                                         ("sae", {"n_components": 48, "k": 4, "epochs": 20, "device": "cpu"})])
def test_variance_shares_lie_in_0_1_with_a_monotone_curve_on_the_demo(demo_activations, name, params):
    """The old figures (each atom's code variance times its norm) summed to 12 for the dictionary on the
    demo's conv1 and its curve started at −1.8; here on conv2, the layer the fixture extracts."""
    A = demo_activations.values["conv2"]
    b = make_basis(name, random_state=0, **params)
    codes = b.fit_transform(A)  # the codes the study's exemplars come from
    ratio = b.explained_variance_ratio_
    assert ((ratio >= 0) & (ratio <= 1)).all()
    assert np.all(np.diff(ratio) <= 1e-12)  # units ranked by their share
    cum = cumulative_explained_variance(b, A, codes)
    assert ((cum >= 0) & (cum <= 1)).all() and np.all(np.diff(cum) >= 0)
    assert cum[0] == pytest.approx(ratio[0], rel=1e-6)
    assert cum[-1] > 0.5


def test_cumulative_for_orthonormal_bases_is_a_cumsum():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(200, 6)) * np.array([1, 4, 2, 3, 0.5, 1])
    p = PCABasis().fit(A)
    np.testing.assert_allclose(cumulative_explained_variance(p, A), np.cumsum(p.explained_variance_ratio_),
                               atol=1e-10)
    n = NeuronBasis().fit(A)
    share = A.var(0) / A.var(0).sum()
    np.testing.assert_allclose(cumulative_explained_variance(n, A), np.cumsum(np.sort(share)[::-1]), atol=1e-10)


def test_make_basis_factory():
    assert isinstance(make_basis("pca", n_components=2), PCABasis)
    with pytest.raises(ValueError, match="unknown basis"):
        make_basis("ica")
    with pytest.raises(ValueError, match="bad parameters"):
        make_basis("nmf", beta=3)


def test_pca_beats_neurons_on_demo_layer(demo_activations):
    A = demo_activations.values["conv2"]
    pca = cumulative_explained_variance(PCABasis().fit(A), A)
    neurons = cumulative_explained_variance(NeuronBasis().fit(A), A)
    assert all(pca[k - 1] > neurons[k - 1] for k in (1, 2, 4, 8))


@pytest.mark.parametrize("name", ["neuron", "pca", "nmf", "dictionary", "sae"])
def test_every_basis_is_a_scikit_learn_estimator(name):
    from sklearn.base import clone

    from stimuli.bases import BASIS_CLASSES

    rng = np.random.default_rng(5)
    A = np.abs(rng.normal(size=(60, 6)))
    params = {"sae": {"k": 2, "epochs": 3, "device": "cpu"}, "nmf": {"max_iter": 50},
              "dictionary": {"max_iter": 5}}.get(name, {})
    basis = make_basis(name, random_state=3, **params)
    assert set(basis.get_params()) == set(BASIS_CLASSES[name]().get_params())
    fitted = basis.fit(A)
    copy = clone(fitted)
    assert type(copy) is type(basis) and copy is not basis
    assert copy.get_params() == basis.get_params()
    assert not hasattr(copy, "components_")  # clone copies parameters, never learned state
    np.testing.assert_allclose(copy.fit(A).components_, fitted.components_)
    np.testing.assert_allclose(copy.transform(A), fitted.transform(A))
    other = clone(basis).set_params(random_state=4)
    assert other.random_state == 4 and basis.random_state == 3


@pytest.mark.parametrize("name", ["neuron", "pca", "nmf"])
def test_block_sums_leave_float64_activations_and_codes_untouched(name):
    """The row blocks are centred in place, so they must be copies, never views of the caller's float64
    arrays (a view once centred NMF's codes before they were sorted)."""
    from stimuli.bases import unit_shares
    from stimuli.scores import Codes

    rng = np.random.default_rng(6)
    A = np.abs(rng.normal(size=(300, 8)))
    A0 = A.copy()
    b = make_basis(name, random_state=0).fit(A)
    codes = b.transform(A)
    codes0 = codes.copy()
    shares = unit_shares(A, codes, b.components_)
    cum = cumulative_explained_variance(b, A, codes)
    held = Codes(b, A)
    np.testing.assert_allclose(cumulative_explained_variance(b, A, held), cum, atol=1e-5)
    held.column(0), held.rows([0, 5])
    np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(codes, codes0)
    np.testing.assert_allclose(shares, b.explained_variance_ratio_, atol=1e-5)
