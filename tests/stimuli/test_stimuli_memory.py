"""Memory that does not grow with the number of images N beyond the pooled N x C matrices.

Activation extraction holds one batch of feature maps at a time, whatever N and H x W are: checked
structurally rather than by timing or RSS, the layer's outputs watched through weak references, so
the test sees how many feature maps are alive when each batch is computed and after the pass, and the
returned arrays must be N x C. Fitting the bases and choosing units are checked with tracemalloc
(NumPy reports its buffers to it): deterministic byte counts at two sizes, no timing.
"""

import gc
import weakref

import numpy as np
import pytest
import torch
from torch import nn

from stimuli.activations import extract
from stimuli.datasets import load_dataset


class _BigMaps(nn.Module):
    """8x8 digits upsampled to 256x256 feature maps of 16 channels: 4 MiB per image and layer."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=32)
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.conv(self.up(x)))


def _preprocess(image):
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)


def test_feature_maps_do_not_outlive_their_batch(stimuli_cache):
    torch.manual_seed(0)
    images = load_dataset("digits").subset(range(40))  # 10 batches of 4 x 16 x 256 x 256
    model = _BigMaps().eval()
    seen = []
    handle = model.conv.register_forward_hook(lambda _m, _i, out: seen.append(weakref.ref(out)))
    alive_per_batch = []
    model.conv.register_forward_pre_hook(
        lambda _m, _i: alive_per_batch.append(sum(r() is not None for r in seen)))
    try:
        acts = extract(model, images, _preprocess, ["conv", "head"], pooling="max", batch_size=4)
    finally:
        handle.remove()
    gc.collect()
    assert len(seen) == 10
    # when a batch's maps are computed, no earlier batch's maps are alive, and none survive the pass
    assert alive_per_batch == [0] * 10
    assert all(r() is None for r in seen)
    assert acts.values["conv"].shape == (40, 16) and acts.values["conv"].dtype == np.float32
    assert acts.values["head"].shape == (40, 10)
    assert acts.shapes["conv"] == (16, 256, 256)
    # the pooled rows are the maxima of the ReLU'd maps, computed per batch
    x = torch.stack([_preprocess(images.load(i)) for i in range(4)])
    with torch.no_grad():
        ref = torch.relu(model.conv(model.up(x))).amax((2, 3))
    np.testing.assert_allclose(acts.values["conv"][:4], ref.numpy(), rtol=1e-6)


def test_no_hook_is_left_on_the_model(stimuli_cache):
    images = load_dataset("digits").subset(range(12))
    model = _BigMaps().eval()
    extract(model, images, _preprocess, ["conv"], batch_size=4)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_the_pass_gives_freed_heap_pages_back_every_few_batches(stimuli_cache, monkeypatch):
    import stimuli.activations as activations

    images = load_dataset("digits").subset(range(68))  # 17 batches of 4
    calls = []
    monkeypatch.setattr(activations, "release_free_heap", lambda: calls.append(len(calls)) or True)
    extract(_BigMaps().eval(), images, _preprocess, ["conv"], batch_size=4)
    assert len(calls) == 17 // activations.TRIM_EVERY_BATCHES == 2


def test_release_free_heap_calls_glibc_where_it_runs():
    import platform

    from stimuli.heap import release_free_heap

    assert release_free_heap() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("name", ["neuron", "pca"])
def test_neuron_and_pca_fit_without_copying_the_activations(name):
    """Both are fitted from sums over row blocks (the channels' moments; the C x C covariance), so a
    fit allocates a few blocks, not the float64 copy and centred copies it once took (five N x C
    float64 arrays at once); fit_transform's codes are then the one N x C float64 array."""
    import tracemalloc

    from stimuli.bases import make_basis

    A = np.random.default_rng(0).random((40000, 64), dtype=np.float32)
    copy64 = A.size * 8
    tracemalloc.start()
    try:
        basis = make_basis(name).fit(A)
        _, fit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        codes = basis.fit_transform(A)
        _, codes_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fit_peak < 0.25 * copy64, fit_peak / copy64
    assert codes_peak < 2.5 * copy64, codes_peak / copy64
    if name == "neuron":
        np.testing.assert_array_equal(codes, A.astype(np.float64))
        owned = A.astype(np.float64)
        assert not np.shares_memory(basis.fit_transform(owned), owned)


def _pooled(n: int, c: int, seed: int) -> np.ndarray:
    """Post-ReLU-like pooled activations: a few shared directions plus noise, clipped at zero."""
    rng = np.random.default_rng(seed)
    low = rng.standard_normal((n, 8), dtype=np.float32) @ rng.standard_normal((8, c), dtype=np.float32)
    return np.maximum(low + rng.standard_normal((n, c), dtype=np.float32), 0)


def _traced_peak_of_the_stages(n: int, c: int = 256) -> int:
    """Peak memory numpy allocates (tracemalloc sees its buffers) while the bases are fitted, the units
    chosen with their exemplars and measures, and the variance curves computed, on pooled matrices that
    exist before tracing starts: what the stages add beyond the pooled activations."""
    import tracemalloc
    from types import SimpleNamespace

    from stimuli.config import StimulusConfig
    from stimuli.measures.completeness import cumulative_explained_variance
    from stimuli.pipeline import Inputs, choose_units, fit_bases

    layers = ["a", "b"]
    acts = SimpleNamespace(values={layer: _pooled(n, c, seed) for seed, layer in enumerate(layers)})
    config = StimulusConfig.of(layers=layers, bases=["neuron", "pca"], n_units=4, completeness=False)
    report = lambda stage, fraction: None  # noqa: E731
    tracemalloc.start()
    try:
        fitted = fit_bases(config, acts, report)
        chosen = choose_units(config, Inputs(net=None, images=None, device=None), fitted, {}, report)
        for (layer, _name), (basis, codes) in fitted.items():
            cumulative_explained_variance(basis, acts.values[layer], codes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(units) for units in chosen.units.values()) == 16
    return peak


def test_fitting_and_choosing_units_add_no_memory_that_grows_with_the_images():
    """Issue 17's rule: beyond the pooled N x C matrices, memory may not grow with N. Between 12,288 and
    36,864 images the stages' peak may grow by a quarter of one layer's float32 matrix at most (one
    unit's responses and its sort orders are O(N)); float64 codes per (layer, basis) and float64 copies
    for fitting grew it by about sixteen such matrices here."""
    c, small, large = 256, 12288, 36864  # both several row blocks (stimuli.bases.block_rows)
    growth = _traced_peak_of_the_stages(large, c) - _traced_peak_of_the_stages(small, c)
    one_matrix = (large - small) * c * 4
    assert growth < 0.25 * one_matrix, growth / one_matrix
