"""Activation extraction holds one batch of feature maps at a time, whatever N and H x W are.

Checked structurally rather than by timing or RSS: the layer's outputs are watched through weak
references, so the test sees how many feature maps are alive when each batch is computed and after
the pass, and the returned arrays must be N x C.
"""

import gc
import weakref

import numpy as np
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


def test_the_neuron_basis_holds_one_float64_copy_beyond_its_centring():
    import tracemalloc

    from stimuli.bases import NeuronBasis

    A = np.random.default_rng(0).random((4000, 64), dtype=np.float32)
    copy64 = A.size * 8
    tracemalloc.start()
    try:
        codes = NeuronBasis().fit_transform(A)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the float64 codes, one centred matrix and a squared temporary while the shares are computed (three
    # N x C float64 arrays at once); a second centred copy for the codes made it four, then a fifth copy
    assert peak < 3.5 * copy64, peak / copy64
    np.testing.assert_array_equal(codes, A.astype(np.float64))
    owned = A.astype(np.float64)
    assert not np.shares_memory(NeuronBasis().fit_transform(owned), owned)
