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


@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion", "lrp"])
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
        unit_attribution(_Detector(), _planted(5, 5), "conv", _bases(_Detector())["neuron"], 0, "deeplift")


# ---------------------------------------------------------------------------------------------
# LRP
# ---------------------------------------------------------------------------------------------
def _small_net(bias=True, batchnorm=True, seed=0):
    """conv → ReLU → max pool → conv (→ BatchNorm) → ReLU (→ head), random weights and running statistics."""
    from collections import OrderedDict

    torch.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(2, 4, 3, padding=1, bias=bias)), ("relu1", nn.ReLU(inplace=True)),
              ("pool", nn.MaxPool2d(2)), ("conv2", nn.Conv2d(4, 6, 3, padding=1, bias=bias))]
    if batchnorm:
        bn = nn.BatchNorm2d(6)
        with torch.no_grad():
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
        layers.append(("bn", bn))
    layers += [("relu2", nn.ReLU()), ("flatten", nn.Flatten()), ("head", nn.Linear(6 * 4 * 4, 3))]
    return nn.Sequential(OrderedDict(layers)).eval()


def _reference_lrp(net, x, layer, readout, epsilon, bounds=None):
    """LRP written out layer by layer, as in the tutorial of Montavon et al. (2019): a_l, then
    R_l = a_l ⊙ ∂/∂a_l [z(a_l) · stop(R_{l+1} / (z + ε·sign z))] from the top down."""
    mods = []
    for name, m in net.named_children():
        mods.append(m)
        if name == layer:
            break
    A = [x]
    with torch.no_grad():
        for m in mods:
            A.append(m(A[-1].clone()))
    top = torch.relu(A[-1])
    R = top * readout.view(1, -1, 1, 1) / top[0, 0].numel()  # LRP-0 through mean pooling and the readout
    for i in range(len(mods) - 1, -1, -1):
        m, a = mods[i], A[i].clone().requires_grad_(True)
        if isinstance(m, nn.ReLU):
            continue
        if i == 0 and bounds is not None:
            lo = bounds[0].expand_as(a).clone().requires_grad_(True)
            hi = bounds[1].expand_as(a).clone().requires_grad_(True)
            w = m.weight.detach()
            z = (nn.functional.conv2d(a, w, None, m.stride, m.padding)
                 - nn.functional.conv2d(lo, w.clamp(min=0), None, m.stride, m.padding)
                 - nn.functional.conv2d(hi, w.clamp(max=0), None, m.stride, m.padding)) + 1e-9
            (z * (R / z).detach()).sum().backward()
            R = a * a.grad + lo * lo.grad + hi * hi.grad
            continue
        z = m(a)
        if not isinstance(m, nn.MaxPool2d):  # max pooling: LRP-0, winner takes all
            rms = z.detach().pow(2).mean().sqrt()
            z = z + epsilon * rms * torch.where(z >= 0, 1.0, -1.0)
        (z * (R / z).detach()).sum().backward()
        R = (a * a.grad).detach()
    return R.detach()


def _unit_code(net, x, layer, readout):
    from stimuli.attribution import _layer_output

    with torch.no_grad():
        return float(torch.relu(_layer_output(net, layer, x)).mean((2, 3)) @ readout)


@pytest.mark.parametrize("with_bounds", [False, True])
def test_lrp_matches_the_rules_written_out_layer_by_layer(with_bounds):
    from stimuli.attribution import lrp_relevance

    net = _small_net()
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    readout = torch.tensor([1.0, -0.5, 0.8, 0.0, 0.3, 1.2])
    bounds = (torch.full((1, 2, 1, 1), -2.5), torch.full((1, 2, 1, 1), 2.5)) if with_bounds else None
    got = lrp_relevance(net, x, "bn", readout, epsilon=0.25, input_bounds=bounds)
    want = _reference_lrp(net, x, "bn", readout, 0.25, bounds)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # biases and ε absorb relevance: the total is not the unit's code
    assert abs(float(got.sum()) - _unit_code(net, x, "bn", readout)) > 1e-3


@pytest.mark.parametrize("with_bounds", [False, True])
def test_lrp_conserves_relevance_on_a_bias_free_network(with_bounds):
    from stimuli.attribution import lrp_relevance

    net = _small_net(bias=False, batchnorm=False, seed=3)
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(2))
    readout = torch.tensor([0.7, 1.0, -0.4, 0.2, 0.9, 0.5])
    bounds = (torch.tensor(-3.0), torch.tensor(3.0)) if with_bounds else None
    code = _unit_code(net, x, "conv2", readout)
    R = lrp_relevance(net, x, "conv2", readout, epsilon=1e-9, input_bounds=bounds)
    assert abs(code) > 0.05
    assert float(R.sum()) == pytest.approx(code, rel=1e-4, abs=1e-6)
    # a large ε absorbs part of it
    assert abs(float(lrp_relevance(net, x, "conv2", readout, epsilon=1.0).sum())) < abs(code) * 0.9


def test_lrp_at_small_epsilon_is_gradient_times_input_on_a_bias_free_relu_network():
    from stimuli.attribution import _layer_output, lrp_relevance

    net = _small_net(bias=False, batchnorm=False, seed=4)
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    readout = torch.tensor([1.0, 0.5, -0.3, 0.8, 0.1, 0.6])
    u = torch.relu(_layer_output(net, "conv2", x)).mean((2, 3)) @ readout
    (g,) = torch.autograd.grad(u.sum(), x)
    R = lrp_relevance(net, x.detach(), "conv2", readout, epsilon=1e-9)
    torch.testing.assert_close(R, (x * g).detach(), rtol=1e-4, atol=1e-7)
    # and ε really changes the result once it is not small
    assert not torch.allclose(lrp_relevance(net, x.detach(), "conv2", readout, epsilon=0.5), R, rtol=1e-2)


def test_lrp_runs_through_residual_blocks_with_inplace_relus():
    from torchvision.models import resnet18

    from stimuli.attribution import unit_attribution

    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    x = torch.randn(3, 32, 32)
    basis = NeuronBasis().fit(np.random.default_rng(0).random((10, 128)))
    heat = unit_attribution(model, x, "layer2", basis, 5, "lrp", input_bounds=(-2.5, 2.5))
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and np.abs(heat).max() > 0


def test_input_bounds_are_black_and_white_through_the_preprocessing(demo, digits):
    from stimuli.attribution import input_bounds

    low, high = input_bounds(demo.preprocess, digits.load(0))
    assert low.shape == high.shape == (1, 8, 8)
    torch.testing.assert_close(low, torch.full((1, 8, 8), (0 - demo.preprocess.mean) / demo.preprocess.std))
    torch.testing.assert_close(high, torch.full((1, 8, 8), (1 - demo.preprocess.mean) / demo.preprocess.std))
    x = demo.preprocess(digits.load(0))
    assert (x >= low - 1e-6).all() and (x <= high + 1e-6).all()
    assert input_bounds(lambda image: "not a tensor", digits.load(0)) is None
