"""Layer layouts (stimuli.layers.Layout): units live in the channel dimension of convolutional maps,
transformer tokens and channels-last maps, and every consumer of a layer — pooling, influence,
completeness, Grad-CAM — reads that dimension. A two-block ViT of 16 channels stands in for the large
transformers (tests/stimuli/test_networks_zoo.py runs those)."""

import numpy as np
import pytest
import torch
from torchvision.models import VisionTransformer

from stimuli.activations import pool
from stimuli.datasets import ImageSet
from stimuli.layers import Layout, layer_layouts

LAYER = "encoder.layers.encoder_layer_0"


@pytest.fixture(scope="module")
def tiny_vit():
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=3
    ).eval()
    # torchvision starts the head at zero: every logit 0, nothing to measure
    torch.nn.init.normal_(model.heads.head.weight)
    return model


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))


class _Inputs(ImageSet):
    """Network inputs as an image set (preprocessing: none), for the functions that read image sets."""

    name, source, labels, class_names, n_skipped = "inputs", "test", None, None, 0

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def load(self, i):
        return self.x[i]


@pytest.mark.parametrize(
    "shape, kind, channels, prefix, grid",
    [
        ((2, 64, 7, 7), "BCHW", 64, 0, (7, 7)),
        ((2, 50, 768), "BTC", 768, 1, (7, 7)),  # ViT-B/32: a class token and 7 x 7 patches
        ((2, 197, 768), "BTC", 768, 1, (14, 14)),  # ViT-B/16
        ((2, 201, 384), "BTC", 384, 5, (14, 14)),  # a class token and four registers
        ((2, 49, 512), "BTC", 512, 0, (7, 7)),  # patch tokens only
        ((2, 28, 28, 192), "BHWC", 192, 0, (28, 28)),  # Swin-T's features.3
        ((2, 1024), "BC", 1024, 0, None),
    ],
)
def test_layouts_are_read_from_the_shape(shape, kind, channels, prefix, grid):
    layout = Layout.detect(shape)
    assert (layout.kind, layout.n_channels, layout.n_prefix, layout.grid) == (kind, channels, prefix, grid)


def test_every_layout_pools_over_its_positions_to_one_value_per_channel():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 5, 4, 4, generator=g)
    np.testing.assert_allclose(pool(maps, "mean"), maps.mean((2, 3)), rtol=1e-6)
    # the same map as channels-last and as tokens behind a class token: the same pooled values
    channels_last = maps.permute(0, 2, 3, 1).contiguous()
    tokens = torch.cat([torch.full((2, 1, 5), 100.0), maps.flatten(2).transpose(1, 2)], 1)
    for t in (channels_last, tokens):
        np.testing.assert_allclose(pool(t, "mean"), maps.mean((2, 3)), rtol=1e-6)
        np.testing.assert_allclose(pool(t, "max"), maps.amax((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(pool(tokens, "class_token"), torch.full((2, 5), 100.0))
    with pytest.raises(ValueError, match="class token"):
        pool(maps, "class_token")
    # positions round-trip, and patch tokens land on their grid
    for t in (maps, channels_last, tokens):
        layout = Layout.detect(t.shape)
        assert torch.equal(layout.from_positions(layout.positions(t), t.shape), t)
        assert torch.equal(layout.spatial(t), maps)


def test_layer_layouts_of_a_transformer(tiny_vit, inputs):
    layouts = layer_layouts(tiny_vit, inputs[:1])
    assert layouts[LAYER] == Layout("BTC", 16, 1, (4, 4))
    assert layouts["conv_proj"] == Layout("BCHW", 16, 0, (4, 4))
    assert layouts["heads"] == Layout("BC", 3, 0, None)


@pytest.mark.parametrize("pooling", ["mean", "max", "class_token"])
def test_influence_on_tokens_is_the_derivative_along_the_unit(tiny_vit, inputs, pooling):
    """χ_j = ∂q/∂h_j, checked by moving the block's output along a PCA direction as the pooling lifts it
    (every patch token, the arg-max tokens, or the class token) and differencing the class logit."""
    from stimuli.bases import make_basis
    from stimuli.layers import hook
    from stimuli.measures.influence import influence_from_gradient, pooled_gradient

    g, n = pooled_gradient(tiny_vit, inputs, None, LAYER, 1, activation="pre_relu", pooling=pooling)
    assert n == len(inputs)
    rng = np.random.default_rng(0)
    W = np.linalg.qr(rng.normal(size=(16, 16)))[0][:3]
    basis = make_basis("pca", n_components=3).fit(rng.normal(size=(40, 16)))
    basis.components_ = W
    chi = influence_from_gradient(basis, g)
    eps = 1e-3
    for j in range(3):
        step = torch.as_tensor(W[j], dtype=torch.float32)

        def moved(t, sign, step=step):
            out = t.clone()
            if pooling == "mean":
                out[:, 1:] += sign * eps * step
            elif pooling == "class_token":
                out[:, 0] += sign * eps * step
            else:
                where = t[:, 1:].argmax(1) + 1  # B x C: each channel's arg-max patch token
                out.scatter_add_(1, where[:, None, :], (sign * eps * step).expand(len(t), 1, 16).contiguous())
            return out

        logits = []
        for sign in (1, -1):
            with hook(tiny_vit, LAYER, lambda t, s=sign: moved(t, s)), torch.no_grad():
                logits.append(tiny_vit(inputs)[:, 1].double().mean().item())
        assert chi[j] == pytest.approx((logits[0] - logits[1]) / (2 * eps), rel=2e-2, abs=1e-4)
    assert np.abs(chi).max() > 1e-2  # a derivative, not two zeros agreeing


def test_completeness_on_tokens_replaces_every_token_by_its_projection(tiny_vit, inputs):
    """All of PCA's components rebuild every token exactly: accuracy 1 and KL 0 at k = K; fewer do not."""
    from stimuli.activations import extract
    from stimuli.bases import make_basis
    from stimuli.measures.completeness import network_completeness

    images = _Inputs(inputs)
    A = extract(tiny_vit, images, lambda x: x, [LAYER], activation="pre_relu").values[LAYER]
    assert A.shape == (6, 16)
    rng = np.random.default_rng(0)
    basis = make_basis("pca").fit(np.concatenate([A, rng.normal(size=(40, 16))]))
    assert basis.n_components_ == 16
    out = network_completeness(tiny_vit, images, lambda x: x, LAYER, basis, [1, 16], activation="pre_relu")
    assert out["accuracy"][-1] == 1.0 and out["kl"][-1] == pytest.approx(0.0, abs=1e-5)
    assert out["kl"][0] > 1e-4


def test_gradcam_draws_a_map_on_the_patch_grid(tiny_vit, inputs):
    from stimuli.bases import make_basis
    from stimuli.measures.attribution import unit_attribution

    basis = make_basis("neuron").fit(np.abs(np.random.default_rng(0).normal(size=(10, 16))))
    heat = unit_attribution(tiny_vit, inputs[0], LAYER, basis, 3, "gradcam")
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and heat.max() > 0
