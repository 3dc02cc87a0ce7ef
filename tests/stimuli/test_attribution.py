"""Attribution maps peak where a planted feature is; overlays are images of the display's size."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli.bases import NeuronBasis, NMFBasis, PCABasis
from stimuli.measures.attribution import input_crop_fraction, overlay, unit_attribution, unit_readout


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


def _lrp_by_hand(net, x, layer, readout, bounds=None):
    """zennit's EpsilonPlusFlat composite written out for _small_net, from the rules' definitions
    (Montavon et al., 2019; Kohlbrenner et al., 2020): BatchNorm folded into conv2 (what
    SequentialMergeBatchNorm does), LRP-0 through the readout and the mean pooling, z⁺ on conv2, max
    pooling's relevance to the maximum, ReLU passing relevance on, and the flat rule — or z^B within
    ``bounds`` — on conv1. Every denominator is stabilised as zennit does: z + 1e-6·sign(z)."""
    from torch.nn import functional as F

    def stab(z):
        return z + 1e-6 * torch.where(z >= 0, 1.0, -1.0)

    def rule(make_z, inputs, relevance):
        inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
        z = make_z(*inputs)
        grads = torch.autograd.grad((z * (relevance / stab(z)).detach()).sum(), inputs)
        return inputs, grads

    conv1, conv2, bn = net.conv1, net.conv2, net.bn
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w2, b2 = conv2.weight * scale[:, None, None, None], (conv2.bias - bn.running_mean) * scale + bn.bias
        a1 = torch.relu(conv1(x))
        p = net.pool(a1)
        z2 = F.conv2d(p, w2, b2, padding=1)
    assert layer == "bn"
    top = torch.relu(z2) * readout.view(1, -1, 1, 1) / z2[0, 0].numel()
    (pg,), (g,) = rule(lambda t: F.conv2d(t, w2.clamp(min=0), b2.clamp(min=0), padding=1), [p], top)
    relevance = (pg * g).detach()  # z⁺ on non-negative inputs: only the positive weights' part
    a1g = a1.clone().requires_grad_(True)
    (relevance,) = torch.autograd.grad((net.pool(a1g) * relevance).sum(), a1g)
    w1, b1 = conv1.weight, conv1.bias
    if bounds is None:
        (ones,), (g,) = rule(lambda t: F.conv2d(t, torch.ones_like(w1), None, padding=1), [torch.ones_like(x)],
                             relevance)
        return g.detach()
    lo, hi = (b.expand_as(x) for b in bounds)
    (xs, ls, hs), (gx, gl, gh) = rule(
        lambda a, l, h: (F.conv2d(a, w1, b1, padding=1) - F.conv2d(l, w1.clamp(min=0), b1.clamp(min=0), padding=1)
                         - F.conv2d(h, w1.clamp(max=0), b1.clamp(max=0), padding=1)), [x, lo, hi], relevance)
    # gl, gh carry the minus signs of z: R = x·wᵀs − l·w⁺ᵀs − h·w⁻ᵀs
    return (xs * gx + ls * gl + hs * gh).detach()


def _unit_code(net, x, layer, readout):
    from stimuli.measures.attribution import _layer_output

    with torch.no_grad():
        return float(torch.relu(_layer_output(net, layer, x)).mean((2, 3)) @ readout)


@pytest.mark.parametrize("with_bounds", [False, True])
def test_lrp_is_zennits_composite_as_the_rules_define_it(with_bounds):
    """The hand-written LRP this replaced used LRP-ε everywhere with ε relative to each layer's RMS and
    kept BatchNorm as a layer of its own; the library's composite uses z⁺ on convolutions, the flat /
    z^B rule at the input and folds BatchNorm, so the reference follows those definitions."""
    from stimuli.measures.attribution import lrp_relevance

    net = _small_net()
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    readout = torch.tensor([1.0, -0.5, 0.8, 0.0, 0.3, 1.2])
    bounds = (torch.full((1, 2, 1, 1), -2.5), torch.full((1, 2, 1, 1), 2.5)) if with_bounds else None
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = lrp_relevance(net, x, "bn", readout, input_bounds=None if bounds is None else (bounds[0][0], bounds[1][0]))
    want = _lrp_by_hand(net, x, "bn", readout, bounds)
    assert got.shape == x.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    # the canonizer gives the BatchNorm back as it was
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


def _resnet18(random_batchnorm=False):
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    if random_batchnorm:
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.1, 0.1)
    return model


def _pooled(model, layer, x):
    feats = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: feats.update(t=o))
    with torch.no_grad():
        model(x[None])
    handle.remove()
    return torch.relu(feats["t"]).mean((2, 3))[0].double().numpy()


@pytest.mark.parametrize("layer,with_bounds", [("layer2", False), ("layer4", True)])
def test_lrp_conserves_relevance_on_resnet18(layer, with_bounds):
    """torchvision's ResNet-18 as initialised (BatchNorm folds to a bias of 0): every rule of the
    composite conserves relevance up to its 1e-6 stabiliser, so the input's relevance adds up to the
    unit's value, for a channel and for a direction in channel space."""
    model = _resnet18()
    x = torch.randn(3, 96, 96, generator=torch.Generator().manual_seed(0))
    bounds = (torch.full((3, 1, 1), -2.2), torch.full((3, 1, 1), 2.7)) if with_bounds else None
    pooled = _pooled(model, layer, x)
    channels = len(pooled)
    basis = NeuronBasis().fit(np.eye(channels))
    unit = int(np.argmax(pooled))
    value = pooled[unit]
    heat = unit_attribution(model, x, layer, basis, unit, "lrp", input_bounds=bounds)
    assert value > 0 and heat.shape == (96, 96)
    assert heat.sum() == pytest.approx(value, rel=1e-4)
    # a direction v: relevance of <pooled activation, v> adds up to its value, negative parts included
    v = np.random.default_rng(1).normal(size=channels)
    pca = PCABasis(n_components=1).fit(np.random.default_rng(2).random((channels + 1, channels)))
    pca.components_ = v[None] / np.linalg.norm(v)
    direction = float(pca.components_[0] @ pooled)
    heat = unit_attribution(model, x, layer, pca, 0, "lrp", input_bounds=bounds)
    assert heat.sum() == pytest.approx(direction, rel=1e-3, abs=1e-4 * abs(value))


def test_lrp_batchnorm_biases_absorb_relevance_after_folding():
    """Random running statistics fold into non-zero biases, which take their share of relevance: the
    total stays close to, but below, the unit's value (the rules' definition, not an error)."""
    model = _resnet18(random_batchnorm=True)
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
    basis = NeuronBasis().fit(np.eye(128))
    value = _pooled(model, "layer2", x)[7]
    total = unit_attribution(model, x, "layer2", basis, 7, "lrp").sum()
    assert value > 0 and 0 < abs(total - value) < 0.25 * value


@pytest.mark.parametrize("module", [nn.GELU(), nn.LayerNorm([4, 8, 8])])
def test_lrp_refuses_a_layer_its_rules_do_not_cover(module):
    from collections import OrderedDict

    from stimuli.measures.attribution import lrp_relevance

    net = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(2, 4, 3, padding=1)), ("odd", module),
                                     ("conv2", nn.Conv2d(4, 6, 3, padding=1))])).eval()
    x = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match=rf"odd \({type(module).__name__}\)"):
        lrp_relevance(net, x, "conv2", torch.ones(6))
    # after the layer it is never reached, so it does not matter
    assert lrp_relevance(net, x, "conv1", torch.ones(4)).shape == x.shape


def test_lrp_runs_through_residual_blocks_with_inplace_relus():
    from torchvision.models import resnet18

    from stimuli.measures.attribution import unit_attribution

    torch.manual_seed(0)
    model = resnet18(num_classes=4).eval()
    x = torch.randn(3, 32, 32)
    basis = NeuronBasis().fit(np.random.default_rng(0).random((10, 128)))
    heat = unit_attribution(model, x, "layer2", basis, 5, "lrp", input_bounds=(-2.5, 2.5))
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and np.abs(heat).max() > 0


def test_input_bounds_are_black_and_white_through_the_preprocessing(demo, digits):
    from stimuli.measures.attribution import input_bounds

    low, high = input_bounds(demo.preprocess, digits.load(0))
    assert low.shape == high.shape == (1, 8, 8)
    torch.testing.assert_close(low, torch.full((1, 8, 8), (0 - demo.preprocess.mean) / demo.preprocess.std))
    torch.testing.assert_close(high, torch.full((1, 8, 8), (1 - demo.preprocess.mean) / demo.preprocess.std))
    x = demo.preprocess(digits.load(0))
    assert (x >= low - 1e-6).all() and (x <= high + 1e-6).all()
    assert input_bounds(lambda image: "not a tensor", digits.load(0)) is None
