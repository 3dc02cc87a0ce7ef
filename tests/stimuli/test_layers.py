"""Every name ``python -m stimuli layers`` prints works in every consumer of a layer: activation
extraction (generate), completeness, influence, attribution and the decision measures (ablation,
essence); and they all read the same value."""

import io
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch

from stimuli.__main__ import main
from stimuli.activations import extract, pool
from stimuli.bases import NeuronBasis
from stimuli.layers import Site, hook, resolve
from stimuli.measures.ablation import units_at_mean
from stimuli.measures.attribution import unit_attribution
from stimuli.measures.completeness import network_completeness
from stimuli.measures.influence import pooled_gradient
from stimuli.networks import imagenet_preprocess, load_network

SIZE = 32  # ResNet-18 still ends in a 1 x 1 map at this input size, at a fiftieth of 224's cost


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return load_network("resnet18", allow_download=False).model


@pytest.fixture(scope="module")
def images(digits):
    return digits.subset([0, 1])


@pytest.fixture(scope="module")
def preprocess():
    return imagenet_preprocess(resize=SIZE, crop=SIZE)


@pytest.fixture(scope="module")
def printed():
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["layers", "--network", "resnet18", "--offline"]) == 0
    # each line: the name, then (for a tensor) its layout and channel count
    names = [line.split("\t")[0] for line in out.getvalue().splitlines()]
    assert {"layer1", "layer1.0.relu_1", "layer1.0.add", "flatten", "fc"} <= set(names)
    return names


@pytest.fixture(scope="module")
def activations(resnet, images, preprocess, printed):
    acts = extract(resnet, images, preprocess, printed, activation="post_relu")
    assert set(acts.values) == set(printed)
    return acts


def test_names_resolve_to_the_call_that_carries_them(resnet):
    assert resolve(resnet, "layer1.0.relu") == Site("layer1.0.relu", "layer1.0.relu", 0, "output")
    assert resolve(resnet, "layer1.0.relu_1") == Site("layer1.0.relu_1", "layer1.0.relu", 1, "output")
    # a function node is what the module after it reads
    assert resolve(resnet, "layer1.0.add") == Site("layer1.0.add", "layer1.0.relu", 1, "input")
    assert resolve(resnet, "flatten") == Site("flatten", "fc", 0, "input")
    # a container is its last node, as in torchvision's feature extractor
    assert resolve(resnet, "layer2") == Site("layer2", "layer2.1.relu", 1, "output")
    with pytest.raises(ValueError, match="unknown layer.*layer1.0.relu_1"):
        resolve(resnet, "layer9")


def test_every_printed_name_reads_what_generate_reads(resnet, images, preprocess, printed, activations):
    x = torch.stack([preprocess(images.load(i)) for i in range(len(images))])
    for name in printed:
        seen = []
        with hook(resnet, name, seen.append), torch.no_grad():
            resnet(x)
        assert len(seen) == 1, name
        got = pool(torch.relu(seen[0]).float()).numpy()
        np.testing.assert_allclose(got, activations.values[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_every_printed_name_works_in_completeness(resnet, images, preprocess, printed, activations):
    for name in printed:
        basis = NeuronBasis().fit(activations.values[name])
        K = basis.n_components_
        out = network_completeness(resnet, images, preprocess, name, basis, [1, K], activation="pre_relu")
        assert out["baseline_accuracy"] == 1.0, name
        # every unit kept: the layer's value comes back as it was, so nothing downstream changes
        assert out["kl"][-1] < 1e-6 and out["accuracy"][-1] == 1.0, name
        if K > 1:
            # one unit kept: the replacement reached the rest of the network
            assert out["kl"][0] > 0, name


def test_every_printed_name_works_in_influence(resnet, images, preprocess, printed, activations):
    for name in printed:
        g, n = pooled_gradient(resnet, images, preprocess, name, 3, distribution="all")
        assert n == len(images) and g.shape == (activations.values[name].shape[1],), name
        assert np.isfinite(g).all() and np.abs(g).sum() > 0, name
    g, _ = pooled_gradient(resnet, images, preprocess, "fc", 3, distribution="all", activation="pre_relu")
    np.testing.assert_allclose(g, np.eye(1000)[3], atol=1e-12)


def test_every_printed_name_works_in_attribution(resnet, images, preprocess, printed, activations):
    x = preprocess(images.load(0))
    for name in printed:
        basis = NeuronBasis().fit(activations.values[name].astype(np.float64))
        unit = int(np.argmax(activations.values[name][0]))
        methods = ["saliency", "gradcam"] if len(activations.shapes[name]) == 3 else ["saliency"]
        for method in methods:
            heat = unit_attribution(resnet, x, name, basis, unit, method)
            assert heat.shape == (SIZE, SIZE) and np.isfinite(heat).all(), (name, method)


def test_every_printed_name_works_in_the_decision_measures(resnet, images, preprocess, printed, activations):
    """Ablation (and essence, built on it) replaces the layer's value where completeness does: a function
    node (``layer1.0.add``) or a module's later call (``layer1.0.relu_1``) as well as a module."""
    for name in printed:
        basis = NeuronBasis().fit(activations.values[name])
        K = basis.n_components_
        run = units_at_mean(resnet, images, preprocess, name, basis, [[], list(range(K))], activation="pre_relu")
        clean = run.clean_logits[np.arange(len(images)), run.clean_predictions]
        # nothing ablated: the network's own logits
        np.testing.assert_allclose(run.target_logit[0], clean, rtol=1e-5, atol=1e-5, err_msg=name)
        # every channel at its mean over the two images: the replacement reached the rest of the network
        assert not np.allclose(run.target_logit[1], clean, rtol=1e-5, atol=1e-5), name
        # the interventions re-run only the network after the layer, function nodes included
        if name in ("layer1.0.add", "layer1.0.relu_1", "layer1", "layer4.1.add", "flatten"):
            assert run.split, name


def test_the_influence_command_takes_a_function_node(capsys):
    code = main(["influence", "--network", "resnet18", "--offline", "--max-images", "2", "--layer",
                 "layer1.0.add", "--class", "3", "--distribution", "all", "--bases", "neuron", "--json"])
    assert code == 0, capsys.readouterr().err
    assert '"layer": "layer1.0.add"' in capsys.readouterr().out


def test_a_function_node_read_by_more_than_one_module_is_refused():
    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.a(x) + x
            return self.c(self.b(h) + h)

    model = Residual()
    assert resolve(model, "add_1") == Site("add_1", "c", 0, "input")
    with pytest.raises(ValueError, match="'add' is the result of .* not read by exactly one module"):
        resolve(model, "add")


def test_generate_takes_node_names_for_every_measure(tmp_path):
    from stimuli.artifact import read_manifest
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    # layer1.0.add: the name of the job that once stored "ablation needs a module layer"
    names = ["layer1.0.add", "layer4.1.add", "layer4.1.relu_1", "layer4", "flatten"]
    config = StimulusConfig.of(network="resnet18", allow_download=False, dataset="digits", max_images=42,
                               layers=names, bases=["neuron"], n_units=1, completeness_k=[1],
                               completeness_max_images=2, influence_class=3, influence_distribution="all",
                               influence_max_images=2, render_size=16, batch_size=42, decision_max_images=8,
                               essence_k=[1], surrogate_k=[1], surrogate_depth=[1], ablation_max_units=0)
    m = read_manifest(run(config, tmp_path / "resnet"))
    assert [e["layer"] for e in m["layers"]] == names
    for entry in m["layers"]:
        assert "completeness_error" not in entry and entry["completeness"]["k"] == [1], entry["layer"]
        # the decision measures take the same names (a function node used to be refused here)
        assert "decisions_error" not in entry and entry["ablation"]["units"], entry["layer"]
        assert entry["n_channels"] == (64 if entry["layer"] == "layer1.0.add" else 512), entry["layer"]
        assert "influence" in entry["units"][0]["measures"], entry["layer"]
