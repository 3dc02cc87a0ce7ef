"""Attribution maps peak where a planted feature is; overlays are images of the display's size."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli.attribution import input_crop_fraction, overlay, unit_attribution, unit_readout
from stimuli.bases import NeuronBasis, NMFBasis, PCABasis


class _Detector(nn.Module):
    """layer 'conv': channel 0 detects a bright 3x3 blob, channel 1 its negative; a head follows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight[0] = 1.0 / 9
            self.conv.weight[1] = -1.0 / 9
        self.head = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _planted(row, col, size=16):
    x = torch.zeros(1, size, size)
    x[0, row - 1:row + 2, col - 1:col + 2] = 1.0
    return x


def _bases(model):
    xs = torch.stack([_planted(r, c) for r in range(2, 14, 3) for c in range(2, 14, 3)])
    with torch.no_grad():
        A = torch.relu(model.conv(xs)).mean((2, 3)).double().numpy()
    A = A + np.random.default_rng(0).random(A.shape) * 1e-3
    return {"neuron": NeuronBasis().fit(A), "pca": PCABasis().fit(A), "nmf": NMFBasis(n_components=1).fit(A)}


@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion"])
def test_maps_peak_at_the_planted_blob(method):
    model = _Detector()
    bases = _bases(model)
    x = _planted(11, 4)
    for name, basis in bases.items():
        unit = 0
        if name == "pca":
            unit = 0
            x_sign = np.sign(basis.components_[0, 0])
            if x_sign < 0:
                basis.components_[0] *= -1  # the direction that grows with the blob
        heat = unit_attribution(model, x, "conv", basis, unit, method, window=3, stride=1)
        assert heat.shape == (16, 16)
        r, c = np.unravel_index(np.argmax(heat), heat.shape)
        assert abs(r - 11) <= 2 and abs(c - 4) <= 2, (name, method, r, c)


def test_readout_of_an_nmf_atom_is_its_active_set_inverse():
    W = np.array([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    basis = NMFBasis(n_components=2).fit(np.random.default_rng(0).random((20, 3)))
    basis.components_ = W
    basis._nmf.components_ = W
    pooled = np.array([1.0, 2.0, 1.0])  # codes (1, 1), both active
    r = unit_readout(basis, pooled, 0)
    np.testing.assert_allclose(r, [0.5, 0.0, 0.5], atol=1e-6)


def test_overlay_and_crop_fraction():
    from stimuli.networks import imagenet_preprocess

    assert input_crop_fraction(imagenet_preprocess()) == pytest.approx(224 / 256)
    assert input_crop_fraction(lambda im: im) == 1.0
    display = Image.new("L", (64, 64), 200)
    heat = np.zeros((8, 8))
    heat[0, 0] = 1.0
    out = overlay(display, heat)
    assert out.size == (64, 64) and out.mode == "RGB"
    arr = np.asarray(out).astype(int)
    # hot: a warm colour (red above blue); cold: the grey, only darkened
    assert arr[2, 2, 0] > arr[2, 2, 2] + 20 and arr[2, 2, 0] > arr[60, 60, 0]
    assert arr[60, 60, 0] == arr[60, 60, 2]


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown attribution method"):
        unit_attribution(_Detector(), _planted(5, 5), "conv", _bases(_Detector())["neuron"], 0, "lrp")
