"""BatchTopK, JumpReLU and archetypal sparse autoencoders, each checked against its paper's definition on
planted data; for all three, codes that completeness projects exactly and variance shares in [0, 1]."""

import numpy as np
import pytest
import torch

from stimuli.bases import (
    ArchetypalBasis,
    BatchTopKBasis,
    JumpReLUBasis,
    basis_names,
    make_basis,
)
from stimuli.bases.batchtopk import BatchTopKVariant
from stimuli.bases.jumprelu import _jump_functions
from stimuli.measures.completeness import _Projector, cumulative_explained_variance


def _planted(seed=0, n=2000, n_atoms=16, n_channels=24, k=3):
    """Rows that are sums of exactly k of n_atoms unit atoms with positive weights, on a constant offset."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, n_channels))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, n_atoms))
    for i in range(n):
        codes[i, rng.choice(n_atoms, size=k, replace=False)] = rng.uniform(0.5, 2.0, size=k)
    return codes @ atoms + 1.0 + 0.01 * rng.normal(size=(n, n_channels)), atoms


def _best_cosines(truth, fitted):
    fitted = fitted / np.linalg.norm(fitted, axis=1, keepdims=True)
    return np.abs(truth @ fitted.T).max(axis=1)


def _pre(basis, A):
    """The encoder's pre-activations in the scaled units, from the stored weights (the definition)."""
    return (A / basis.scale_ - basis._b_dec) @ basis._W_enc.T + basis._b_enc


@pytest.fixture(scope="module")
def planted():
    return _planted()


@pytest.fixture(scope="module")
def batchtopk(planted):
    return BatchTopKBasis(n_components=32, k=3, epochs=100, random_state=0, device="cpu").fit(planted[0])


@pytest.fixture(scope="module")
def jumprelu(planted):
    return JumpReLUBasis(n_components=32, epochs=100, random_state=0, device="cpu").fit(planted[0])


@pytest.fixture(scope="module")
def archetypal(planted):
    return ArchetypalBasis(
        n_components=32, k=3, epochs=100, n_candidates=128, delta=0.1, random_state=0, device="cpu"
    ).fit(planted[0])


def test_the_three_are_registered_bases():
    assert {"batchtopk", "jumprelu", "archetypal"} <= set(basis_names())
    assert isinstance(make_basis("jumprelu", sparsity=0.1), JumpReLUBasis)
    with pytest.raises(ValueError, match="bad parameters"):
        make_basis("jumprelu", k=3)  # no k: the L0 penalty sets the sparsity


def test_batchtopk_training_keeps_k_per_image_on_average_over_the_batch():
    lin = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    z = BatchTopKVariant(k=2).codes(lin)
    assert int((z > 0).sum()) == 10  # k·B in all, however they fall on the images
    kept = torch.relu(lin).flatten().topk(10).values
    assert torch.equal(z[z > 0].sort().values, kept.sort().values)


def test_batchtopk_inference_is_the_global_threshold(batchtopk, planted):
    A, atoms = planted
    codes = batchtopk.transform(A)
    pre = np.maximum(_pre(batchtopk, A), 0)
    np.testing.assert_allclose(codes, pre * (pre > batchtopk.threshold_) * batchtopk.scale_, rtol=1e-9, atol=1e-12)
    # the threshold is the mean smallest kept activation over training batches: about k per image
    assert 2.0 <= (codes > 0).sum(1).mean() <= 4.5
    assert _best_cosines(atoms, batchtopk.components_).min() > 0.95


def test_jumprelu_functions_and_their_straight_through_gradients():
    jump, step = _jump_functions()
    x = torch.tensor([[0.05, 0.12, 0.3], [0.2, 0.09, 0.0]], requires_grad=True)
    theta = torch.tensor([0.1, 0.1, 0.1], requires_grad=True)
    eps = 0.1
    y = jump.apply(x, theta, eps)
    assert torch.equal(y.detach(), torch.tensor([[0.0, 0.12, 0.3], [0.2, 0.0, 0.0]]))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]))
    # -(θ/ε)·K((x−θ)/ε) summed over the batch; K is 1 where |x − θ| < ε/2: 0.05 (edge excluded), 0.12, 0.09
    inside = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(theta.grad.numpy(), (-(0.1 / eps) * inside).sum(0).numpy(), atol=1e-6)
    theta.grad = None
    step.apply(x, theta, eps).sum().backward()
    np.testing.assert_allclose(theta.grad.numpy(), (-(1 / eps) * inside).sum(0).numpy(), atol=1e-5)


def test_jumprelu_codes_are_the_unshrunk_pre_activations_above_each_threshold(jumprelu, planted):
    A, atoms = planted
    codes = jumprelu.transform(A)
    pre = _pre(jumprelu, A)
    np.testing.assert_allclose(codes, pre * (pre > jumprelu.thresholds_) * jumprelu.scale_, rtol=1e-9, atol=1e-12)
    assert (jumprelu.thresholds_ > 0).all()
    assert (codes > 0).sum(1).mean() < 6  # the L0 penalty made it sparse (32 latents, 3 planted per row)
    assert _best_cosines(atoms, jumprelu.components_).min() > 0.95


def test_jumprelu_sparsity_penalty_sets_the_number_of_active_latents(planted):
    A = planted[0][:600]
    l0 = [
        (JumpReLUBasis(n_components=16, sparsity=s, epochs=40, random_state=0, device="cpu").fit_transform(A) > 0)
        .sum(1)
        .mean()
        for s in (0.0, 0.1)
    ]
    assert l0[1] < l0[0]


def test_archetypal_atoms_are_convex_combinations_of_candidates_plus_a_bounded_relaxation(archetypal, planted):
    A, _ = planted
    a = archetypal
    np.testing.assert_allclose(a.components_, a.weights_ @ a.candidates_ + a.relaxation_, rtol=1e-5, atol=1e-6)
    assert (a.weights_ >= 0).all()
    np.testing.assert_allclose(a.weights_.sum(1), 1.0, atol=1e-6)
    assert (np.linalg.norm(a.relaxation_, axis=1) <= 0.1 * (1 + 1e-5)).all()
    # the candidates are k-means centroids of the (scaled) data; no decoder bias
    from sklearn.cluster import KMeans

    centroids = KMeans(n_clusters=128, n_init=1, random_state=0).fit(A / a.scale_).cluster_centers_
    np.testing.assert_allclose(a.candidates_, centroids, rtol=1e-6, atol=1e-9)
    assert a.candidates_.shape == (128, A.shape[1]) and np.all(a.offset_ == 0)
    codes = a.transform(A)
    assert ((codes > 0).sum(1) <= 3).all()
    r2 = 1 - ((A - a.inverse_transform(codes)) ** 2).sum() / ((A - A.mean(0)) ** 2).sum()
    assert r2 > 0.3


def test_strict_archetypal_atoms_stay_in_the_candidates_hull(planted):
    A = planted[0][:500]
    a = ArchetypalBasis(n_components=8, k=2, epochs=10, n_candidates=32, delta=0.0, random_state=1, device="cpu").fit(A)
    np.testing.assert_allclose(a.components_, a.weights_ @ a.candidates_, rtol=1e-5, atol=1e-6)
    lo, hi = a.candidates_.min(0), a.candidates_.max(0)
    assert ((a.components_ >= lo - 1e-6) & (a.components_ <= hi + 1e-6)).all()


@pytest.mark.parametrize("name", ["batchtopk", "jumprelu", "archetypal"])
def test_exact_codes_and_variance_shares(name, request, planted):
    A = planted[0]
    basis = request.getfixturevalue(name)
    rows = torch.as_tensor(A[:50], dtype=torch.float32)
    # completeness projects the codes the basis itself gives, at every position
    projected = _Projector(basis, torch.device("cpu")).codes(rows)
    np.testing.assert_allclose(projected.numpy(), basis.transform(A[:50]), rtol=1e-4, atol=1e-4)
    share = basis.explained_variance_ratio_
    assert ((share >= 0) & (share <= 1)).all() and np.all(np.diff(share) <= 1e-12)
    curve = cumulative_explained_variance(basis, A)
    assert np.all(np.diff(curve) >= -1e-12) and 0 < curve[-1] <= 1
