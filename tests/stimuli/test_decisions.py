"""From units to decisions: essence against a brute-force re-computation, ablation of planted and dead
units, surrogate rules of a two-unit rule network, second-order Sobol of the g-function, superpixels,
the network cut at a layer, and the figures."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from torch import nn

from stimuli.bases import make_basis
from stimuli.measures.ablation import unit_ablation, units_at_mean
from stimuli.measures.essence import balanced_accuracy, essence
from stimuli.measures.purity import top_label_entropy
from stimuli.measures.surrogate import surrogate_rules
from stimuli.measures.tail import split_at


class Planted(nn.Module):
    """Four hidden units copied from the input; the decision reads unit 1 only."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.hidden.weight.copy_(torch.eye(4))
            self.hidden.bias.zero_()
            self.head.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 8.0, 0.0, 0.0]]))
            self.head.bias.copy_(torch.tensor([0.0, -4.0]))

    def forward(self, x):
        return self.head(self.hidden(x))


class TwoUnitRule(nn.Module):
    """Class 1 exactly when hidden units 0 and 2 both exceed 0.5; units 1, 3, 4 are distractors."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Identity()

    def forward(self, x):
        h = self.hidden(x)
        score = torch.minimum(h[:, 0] - 0.5, h[:, 2] - 0.5)
        return torch.stack([torch.zeros_like(score), score], 1)


def _away_from_half(rng, shape):
    """Uniform values in [0, 0.4] ∪ [0.6, 1]: a margin so that held-out images never fall between a
    tree's threshold and the rule's."""
    u = rng.uniform(0, 0.4, size=shape)
    return np.where(rng.random(shape) < 0.5, u, u + 0.6)


def test_ablation_finds_the_planted_unit_and_not_the_dead_one():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(400, 4)).astype(np.float32)
    x[:, 3] = 0.0  # a dead unit: never responds
    model = Planted()
    basis = make_basis("neuron").fit(x.astype(np.float64))
    r = unit_ablation(model, torch.as_tensor(x), None, "hidden", basis, [0, 1, 2, 3], activation="pre_relu")
    drops, changes = np.array(r["accuracy_drop"]), np.array(r["logit_change"])
    assert r["reference"] == "predictions" and r["baseline_accuracy"] == 1.0
    assert np.argmax(drops) == 1 and drops[1] > 0.3
    assert np.argmax(changes) == 1
    assert drops[3] == 0 and changes[3] == 0
    # units the decision does not read change nothing either
    assert drops[0] == drops[2] == 0 and changes[0] == changes[2] == 0
    assert not any(m._forward_hooks for m in model.modules())


def test_units_at_mean_without_a_cut_matches_the_cut(monkeypatch):
    """The hook path (used where the model cannot be traced) gives the same outputs as the tail."""
    import stimuli.measures.tail

    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.uniform(0, 1, size=(64, 4)).astype(np.float32))
    model = Planted()
    basis = make_basis("pca").fit(x.double().numpy())
    variants = [[], [0], [1, 2], [0, 1, 2, 3], [0, 1, 3]]
    cut = units_at_mean(model, x, None, "hidden", basis, variants, activation="pre_relu")
    # by hand: the hidden layer is the input itself, so the sets' codes are the basis's own codes
    codes = basis.transform(x.double().numpy())
    W = np.asarray(basis.components_)
    with torch.inference_mode():
        clean = model(x).argmax(1).numpy()
        for v, S in enumerate(variants):
            changed = x.double().numpy() - (codes[:, S] - basis.code_mean_[S]) @ W[S]
            logits = model.head(torch.as_tensor(changed, dtype=torch.float32)).numpy()
            np.testing.assert_allclose(cut.target_logit[v], logits[np.arange(len(x)), clean], atol=1e-4)
    assert split_at(torch.jit.script(model), "hidden") is None
    monkeypatch.setattr(stimuli.measures.tail, "split_at", lambda *_: None)
    hooked = units_at_mean(model, x, None, "hidden", basis, variants, activation="pre_relu")
    assert cut.split and not hooked.split
    np.testing.assert_allclose(cut.target_logit, hooked.target_logit, atol=1e-5)
    # all four PCA units at their mean: every image gets the mean image's logit
    assert np.ptp(cut.target_logit[3][cut.clean_predictions == 1]) < 1e-4


def test_a_cut_that_differs_from_the_network_is_not_used():
    class Branchy(nn.Module):
        """Traces without error, but the graph keeps the branch taken for the tracer's proxy."""

        def __init__(self):
            super().__init__()
            self.hidden = nn.Identity()

        def forward(self, x):
            h = self.hidden(x)
            scale = 2.0 if isinstance(h, torch.fx.Proxy) else 1.0
            return torch.stack([h.sum(1), -h.sum(1)], 1) * scale

    x = torch.rand(8, 3)
    assert split_at(Branchy(), "hidden") is not None
    basis = make_basis("neuron").fit(x.double().numpy())
    run = units_at_mean(Branchy(), x, None, "hidden", basis, [[0]], activation="pre_relu")
    assert not run.split
    np.testing.assert_allclose(run.clean_logits, Branchy()(x).numpy(), atol=1e-6)


def test_split_at_an_inner_layer_carries_the_skip_connection():
    from torchvision.models import resnet18

    model = resnet18(weights=None).eval()
    x = torch.randn(2, 3, 64, 64)
    split = split_at(model, "layer3.1.conv1")
    assert split is not None and split.n_carried >= 1
    with torch.inference_mode():
        t, *carried = split.head(x)
        np.testing.assert_allclose(split.tail(t, *carried).numpy(), model(x).numpy(), atol=1e-4)


def test_surrogate_rule_of_two_units_is_found_with_fidelity_one():
    rng = np.random.default_rng(0)
    h = _away_from_half(rng, (600, 5))
    model = TwoUnitRule()
    with torch.inference_mode():
        predictions = model(torch.as_tensor(h)).argmax(1).numpy()
    assert 0.1 < predictions.mean() < 0.5
    order = [4, 0, 1, 2, 3]  # the rule's units are not simply the first
    r = surrogate_rules(h, predictions, order, ks=[1, 2, 4, 5], depths=[1, 2, 3], layer="hidden", basis="neuron")
    assert r["fidelity"] == 1.0 and r["depth"] == 2
    assert r["units"] == ["hidden:neuron:0", "hidden:neuron:2"]
    assert "hidden:neuron:0" in r["rules"] and "hidden:neuron:2" in r["rules"]
    assert "hidden:neuron:1" not in r["rules"] and "hidden:neuron:4" not in r["rules"]
    # a tree with one split cannot express a conjunction
    assert max(row[0] for row in r["fidelity_grid"]) < 1.0


def test_top_label_entropy():
    responses = np.arange(10.0)
    assert top_label_entropy(responses, np.array([0] * 5 + [1] * 5), 5) == 0.0
    assert top_label_entropy(responses, np.array([0, 1] * 5), 4) == pytest.approx(1.0)
    assert top_label_entropy(responses, np.arange(10), 8) == pytest.approx(3.0)


def test_balanced_accuracy():
    truth = np.array([True] * 2 + [False] * 8)
    assert balanced_accuracy(np.zeros(10, bool), truth) == 0.5
    assert balanced_accuracy(truth, truth) == 1.0


def _brute_force_accuracy(model, x, layer, keep, means, cls, reference):
    """Balanced accuracy of "class vs rest" with the channels outside ``keep`` set to their pooled mean,
    by a hook written without any of stimuli's code."""
    def hook(_m, _i, out):
        a = torch.relu(out).clone()
        drop = [c for c in range(a.shape[1]) if c not in set(keep)]
        a[:, drop] = torch.as_tensor(means[drop], dtype=a.dtype)[None, :, None, None]
        return a

    handle = model.get_submodule(layer).register_forward_hook(hook)
    try:
        with torch.inference_mode():
            pred = model(x).argmax(1).numpy()
    finally:
        handle.remove()
    decided, truth = pred == cls, reference == cls
    return 0.5 * (decided[truth].mean() + (~decided[~truth]).mean())


def test_essence_matches_brute_force_and_influence_leads(demo, digits, demo_activations):
    from stimuli.measures.completeness import unit_order
    from stimuli.measures.influence import influence_from_gradient, influence_order, pooled_gradient

    cls = 3
    keep_images = np.arange(0, len(digits), 3)
    images = digits.subset(keep_images)
    labels = np.asarray(digits.labels)[keep_images]
    A = demo_activations.values["conv2"]
    basis = make_basis("neuron").fit(A)
    g, _ = pooled_gradient(demo.model, images, demo.preprocess, "conv2", cls, labels=labels, distribution="class")
    by_influence = influence_order(influence_from_gradient(basis, g, per="direction"))
    by_variance = unit_order(basis)
    ks = [1, 2, 4, 8, 16, 32]
    e = essence(demo.model, images, demo.preprocess, "conv2", basis, cls, by_influence, by_variance, ks,
                n_random=3, labels=labels)
    x = torch.stack([demo.preprocess(images.load(i)) for i in range(len(images))])
    means = np.asarray(basis.code_mean_)
    for k, got in zip(ks, e["accuracy_influence"]):
        assert got == pytest.approx(_brute_force_accuracy(demo.model, x, "conv2", by_influence[:k], means, cls,
                                                           labels), abs=1e-6)
    for k, got in zip(ks[:3], e["accuracy_variance"]):
        assert got == pytest.approx(_brute_force_accuracy(demo.model, x, "conv2", by_variance[:k], means, cls,
                                                           labels), abs=1e-6)
    # k = all changes nothing: every order reaches the network's own accuracy
    full = e["baseline_accuracy"]
    assert e["accuracy_influence"][-1] == e["accuracy_variance"][-1] == e["accuracy_random_mean"][-1] == full
    assert full > 0.95
    # at small k the influence order carries at least as much of the class's decision
    small = slice(0, 4)
    assert np.mean(e["accuracy_influence"][small]) >= np.mean(e["accuracy_variance"][small])
    assert np.mean(e["accuracy_influence"][small]) > np.mean(e["accuracy_random_mean"][small])


def test_g_function_second_order_within_the_bootstrap_half_width():
    from stimuli.measures.sobol import sobol_indices

    a = np.array([0.0, 0.5, 3.0])
    f = lambda u: np.prod((np.abs(4 * u - 2) + a) / (1 + a), axis=1)  # noqa: E731
    Vi = 1 / (3 * (1 + a) ** 2)
    V = np.prod(1 + Vi) - 1
    r = sobol_indices(f, 3, 16384, seed=3, second_order=True, n_boot=200)
    for i in range(3):
        for j in range(i + 1, 3):
            expected = Vi[i] * Vi[j] / V
            assert abs(r["S2"][i, j] - expected) <= r["S2_conf"][i, j], (i, j, r["S2"][i, j], expected)
            assert r["S2_conf"][i, j] < 0.04
    # the largest interaction is that of the two most important inputs
    assert np.nanargmax(np.where(np.triu(np.ones((3, 3)), 1) > 0, r["S2"], np.nan)) == 1


def test_superpixels_partition_the_image_and_round_trip_as_png():
    import io

    from PIL import Image

    from stimuli.measures.sobol import label_map_png, superpixel_labels, upper_triangle

    rng = np.random.default_rng(0)
    x = torch.zeros(3, 48, 64)
    x[0, :, 32:] = 1.0
    x[1, 24:, :] = 1.0
    x += 0.05 * torch.as_tensor(rng.standard_normal(x.shape), dtype=torch.float32)
    labels = superpixel_labels(x, n_segments=8)
    assert labels.shape == (48, 64)
    D = labels.max() + 1
    assert set(np.unique(labels)) == set(range(D)) and 4 <= D <= 16
    # the four coloured quadrants are never split across a region
    for region in range(D):
        quad = {(r >= 24, c >= 32) for r, c in zip(*np.nonzero(labels == region))}
        assert len(quad) == 1
    back = np.asarray(Image.open(io.BytesIO(label_map_png(labels))))
    np.testing.assert_array_equal(back, labels)
    m = np.array([[np.nan, 1, 2], [1, np.nan, 3], [2, 3, np.nan]])
    assert upper_triangle(m) == [[1.0, 2.0], [3.0]]


def test_region_sobol_with_superpixels_and_second_order():
    from stimuli.measures.sobol import region_sobol_images, superpixel_labels

    class RightHalf(nn.Module):
        def forward(self, x):
            s = x[:, 0, :, 16:].mean((1, 2))
            return torch.stack([s, -s], 1)

    x = torch.zeros(1, 3, 16, 32)
    x[0, :, :, 16:] = 1.0
    res = region_sobol_images(RightHalf(), [x[0]], None, [0], regions=lambda t: superpixel_labels(t, 4),
                              n_samples=64, perturbation="mean", second_order=True, n_boot=20)[0]
    assert res.grid is None and res.S2.shape == (res.n_regions, res.n_regions) and res.S2_conf is not None
    left = np.unique(res.labels[:, :16])
    assert np.all(res.ST[left] < 0.05)  # regions over the left half do not matter


def test_pipeline_writes_decisions_sobol_regions_and_figures(tmp_path, stimuli_cache):
    from stimuli.pipeline import run

    config = {"n_units": 2, "bases": ["neuron", "pca"], "influence_class": 3, "essence_k": [1, 4, 32],
              "essence_random_seeds": 2, "ablation_max_units": 4, "surrogate_k": [2, 4], "surrogate_depth": [2, 3],
              "decision_max_images": 300, "sobol_images": 1, "sobol_n_samples": 16, "sobol_second_order": True,
              "sobol_regions": "superpixels", "sobol_superpixels": 6, "completeness_k": [1, 32]}
    path = run(config, tmp_path / "a")
    m = json.loads((path / "manifest.json").read_text())
    for entry in m["layers"]:
        e = entry["essence"]
        assert e["k"] == [1, 4, 32] and e["class"] == 3 and e["accuracy_influence"][-1] == e["baseline_accuracy"]
        assert len(entry["ablation"]["units"]) == 4 and entry["ablation"]["n_images"] == 300
        assert entry["surrogate"]["rules"] and entry["surrogate"]["k"] in (2, 4)
        for unit in entry["units"]:
            for key in ("ablation_accuracy_drop", "ablation_logit_change", "top_label_entropy"):
                assert key in unit["measures"]
    image = m["sobol"]["images"][0]
    D = image["n_regions"]
    assert m["sobol"]["regions"] == "superpixels" and m["sobol"]["second_order"] is True
    assert [len(row) for row in image["S2"]] == list(range(D - 1, 0, -1)) and len(image["S2_conf"]) == D - 1
    assert (path / image["regions"]).is_file()
    kinds = {f["kind"] for f in m["figures"]}
    assert kinds == {"explained_variance", "completeness", "essence", "surrogate"}
    for f in m["figures"]:
        root = ET.parse(path / f["file"]).getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 50


def test_cli_essence_ablate_surrogate_print_json(capsys, stimuli_cache):
    from stimuli.__main__ import main

    common = ["--layer", "conv2", "--bases", "neuron", "--max-images", "300", "--device", "cpu"]
    assert main(["essence", *common, "--class", "3", "--k", "1,32", "--random-orders", "2"]) == 0
    e = json.loads(capsys.readouterr().out)["bases"]["neuron"]
    assert e["k"] == [1, 32] and e["accuracy_influence"][-1] == e["baseline_accuracy"] and e["n_random"] == 2
    assert main(["ablate", *common, "--units", "0,5"]) == 0
    a = json.loads(capsys.readouterr().out)["bases"]["neuron"]
    assert a["units"] == [0, 5] and len(a["accuracy_drop"]) == 2 and a["reference"] == "labels"
    assert main(["surrogate", *common, "--k", "2,4", "--depth", "2"]) == 0
    s = json.loads(capsys.readouterr().out)["bases"]["neuron"]
    assert s["order"] == "variance" and s["depth"] == 2 and s["rules"].count("conv2:neuron:") >= 1
    with pytest.raises(SystemExit):
        main(["essence", *common])  # the essence is that of a class


def test_a_layer_the_interventions_cannot_reach_loses_them_not_the_job(tmp_path, stimuli_cache, monkeypatch):
    import stimuli.measures.ablation
    from stimuli.pipeline import run

    def refuse(*_args, **_kwargs):
        raise ValueError("ablation needs a module layer; 'add' is not a submodule")

    monkeypatch.setattr(stimuli.measures.ablation, "units_at_mean_bases", refuse)
    path = run({"n_units": 2, "bases": ["neuron"], "influence_class": 3, "completeness": False}, tmp_path / "a")
    entry = json.loads((path / "manifest.json").read_text())["layers"][0]
    assert entry["decisions_error"].startswith("ablation needs a module layer")
    assert "essence" not in entry and "surrogate" not in entry
    assert "top_label_entropy" in entry["units"][0]["measures"]
