"""Feature visualizations (stimuli.featurevis): judged from the PNGs on disk, against the natural images'
scores under the same score function (stimuli.scores)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stimuli.artifact import read_manifest
from stimuli.config import StimulusConfig
from stimuli.pipeline import _basis_params, run

ROOT = Path(__file__).resolve().parents[2]
BASES = ["neuron", "pca", "nmf", "dictionary", "sae"]
FV = {"method": "fourier", "steps": 128, "lr": 0.1, "seed": 0}


def _refit(config, net, images):
    """The job's bases, fitted again from scratch (each is deterministic for its seed), and the natural
    images' scores under the units' score function."""
    from stimuli.activations import extract
    from stimuli.bases import make_basis
    from stimuli.scores import score_matrix

    acts = extract(net.model, images, net.preprocess, config.activations.layers, pooling=config.activations.pooling,
                   activation=config.activations.activation, batch_size=256)
    out = {}
    for layer in config.activations.layers:
        A = acts.values[layer]
        for name in config.bases.names:
            basis = make_basis(name, **_basis_params(config, name)).fit(A)
            out[(layer, name)] = (basis, score_matrix(basis, A))
    return out


def _png_score(net, images, path, layer, basis, unit, config):
    from stimuli.featurevis import DisplayToInput, score_png

    return score_png(net.model, layer, basis, unit, Path(path).read_bytes(), DisplayToInput(net, images),
                     config.activations.pooling, config.activations.activation)


def _check_against_natural(path, config, net, images, share):
    m = read_manifest(path)
    refit = _refit(config, net, images)
    for entry in m["layers"]:
        basis, codes = refit[(entry["layer"], entry["basis"])]
        above = below = 0
        for u in entry["units"]:
            k = u["index"]
            assert len(u["synthetic_max"]) == len(u["synthetic_min"]) == config.exemplars.n_references
            smax = _png_score(net, images, path / u["synthetic_max"][0], entry["layer"], basis, k, config)
            smin = _png_score(net, images, path / u["synthetic_min"][0], entry["layer"], basis, k, config)
            above += smax > codes[:, k].max()
            below += smin <= codes[:, k].min() + 1e-6
            meas = u["measures"]
            assert meas["synthetic_max_score"] == pytest.approx(smax, abs=1e-4)
            assert meas["natural_max_score"] == pytest.approx(codes[:, k].max(), abs=1e-4)
            assert meas["natural_min_score"] == pytest.approx(codes[:, k].min(), abs=1e-4)
            if meas["natural_max_score"] > 0:
                assert meas["synthetic_max_ratio"] == pytest.approx(smax / codes[:, k].max(), rel=1e-3)
            # strongest first, by the score read back from each saved file
            maxes = [_png_score(net, images, path / f, entry["layer"], basis, k, config) for f in u["synthetic_max"]]
            assert maxes == sorted(maxes, reverse=True)
        n = len(entry["units"])
        assert above >= share * n, (entry["basis"], above, n)
        assert below >= share * n, (entry["basis"], below, n)


@pytest.fixture(scope="module")
def demo_fv(tmp_path_factory, stimuli_cache):
    config = StimulusConfig.of(bases=BASES, n_units=4, n_references=2, n_queries=4, completeness=False,
                            sae={"epochs": 20}, feature_vis=FV)
    calls = []
    path = run(config, tmp_path_factory.mktemp("fv") / "demo", progress=lambda s, f: calls.append((s, f)))
    return config, path, calls


def test_demo_synthetic_references_beat_the_natural_extremes(demo_fv, demo, digits):
    config, path, _ = demo_fv
    _check_against_natural(path, config, demo, digits, share=0.9)


def test_manifest_records_feature_vis(demo_fv):
    config, path, calls = demo_fv
    m = read_manifest(path)
    assert m["parameters"]["feature_vis"] == {**FV, "image_size": None}
    assert m["feature_vis"]["image_size"] == 96
    fv_calls = [f for s, f in calls if s == "featurevis"]
    assert fv_calls[0] == 0.0 and fv_calls[-1] == 1.0 and fv_calls == sorted(fv_calls) and len(fv_calls) > 2
    natural = set()
    for entry in m["layers"]:
        for u in entry["units"]:
            natural |= set(u["references_max"]) | set(u["references_min"]) | set(u["queries_max"])
            for f in u["synthetic_max"] + u["synthetic_min"]:
                # content-addressed like every image: nothing in the name says synthetic, max or min
                assert f.startswith("images/") and len(Path(f).stem) == 20 and (path / f).is_file()
    synthetic = {f for e in m["layers"] for u in e["units"] for f in u["synthetic_max"] + u["synthetic_min"]}
    assert not synthetic & natural


def test_feature_vis_off_by_default(tmp_path):
    assert not StimulusConfig().feature_vis.enabled
    assert StimulusConfig().to_dict()["feature_vis"] is False
    for bad in ({"method": "deepdream"}, {"steps": 0}, {"lr": -1}, {"image_size": 7}, {"colour": 1}, "yes"):
        with pytest.raises(ValueError, match="feature_vis"):
            StimulusConfig.of(feature_vis=bad)


def test_same_seed_same_png_bytes(demo, digits):
    from stimuli.bases import make_basis

    for p in demo.model.parameters():
        p.requires_grad_(True)
    from stimuli.featurevis import visualize_units

    basis = make_basis("neuron").fit(np.zeros((2, 32)))
    fv = {"method": "fourier", "steps": 8, "lr": 0.1, "seed": 3}
    a = visualize_units(demo, digits, "conv2", basis, [1, 2], 2, fv, None, 32, "conv2:neuron")
    b = visualize_units(demo, digits, "conv2", basis, [1, 2], 2, fv, None, 32, "conv2:neuron")
    c = visualize_units(demo, digits, "conv2", basis, [1, 2], 2, {**fv, "seed": 4}, None, 32, "conv2:neuron")
    assert a == b
    assert a != c
    # the weights' gradient flags are the caller's again
    assert all(p.requires_grad for p in demo.model.parameters())


def test_resnet18_one_unit_per_basis(tmp_path, stimuli_cache):
    from stimuli.datasets import load_dataset
    from stimuli.networks import load_network

    torch.manual_seed(0)
    config = StimulusConfig.of(network="resnet18", weights=None, allow_download=False, layers=["layer2"],
                            bases=["neuron", "pca", "nmf"], n_components={"pca": 16, "nmf": 16}, n_units=1,
                            n_references=1, n_queries=2,
                            max_images=64, strip_length=2, n_strips=1, completeness=False,
                            feature_vis={"method": "fourier", "steps": 48, "lr": 1.0, "image_size": 64})
    path = run(config, tmp_path / "resnet")
    # random weights are drawn from torch's global generator: the refit needs the job's own network
    m = read_manifest(path)
    assert m["network"]["name"] == "resnet18"
    torch.manual_seed(0)
    net = load_network("resnet18", weights=None, allow_download=False)
    images = load_dataset("digits", max_images=64, seed=0)
    _check_against_natural(path, config, net, images, share=1.0)


SANDBOX = r"""
import builtins, json, os, socket, sys
def refuse(*a, **k):
    raise RuntimeError("network access during generation")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from stimuli.pipeline import run
cfg = json.loads(sys.argv[2])
run(cfg, sys.argv[1])
print("done")
"""


def test_generation_offline_in_a_read_only_directory(tmp_path, stimuli_cache):
    from stimuli.networks import load_demo

    load_demo()  # the cache is filled before the sandbox starts
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out = tmp_path / "out" / "artifact"
    before = {p for p in tmp_path.rglob("*")}
    cache_before = {p for p in Path(stimuli_cache).rglob("*") if "matplotlib" not in p.parts}
    cwd.chmod(0o555)
    try:
        cfg = {"bases": ["neuron"], "n_units": 1, "n_references": 1, "n_queries": 2, "completeness": False,
               "feature_vis": {"method": "maco", "steps": 4}}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path / "home"),
               "TORCH_HOME": str(tmp_path / "torch"), "STIMULI_CACHE_DIR": str(stimuli_cache)}
        res = subprocess.run([sys.executable, "-c", SANDBOX, str(out), json.dumps(cfg)], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=600)
    finally:
        cwd.chmod(0o755)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list(cwd.iterdir()) == []
    new = {p for p in tmp_path.rglob("*")} - before
    assert all(p == out.parent or out in p.parents or p == out for p in new), sorted(map(str, new))
    m = read_manifest(out)
    spectrum = np.load(out / m["feature_vis"]["magnitude_template"], allow_pickle=False)
    assert spectrum.shape == (3, 96, 49) and np.isfinite(spectrum).all() and spectrum.max() > 0
    # only matplotlib's font cache (horama imports matplotlib) may be added to the cache directory
    assert {p for p in Path(stimuli_cache).rglob("*") if "matplotlib" not in p.parts} == cache_before
