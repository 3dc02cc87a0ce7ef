import numpy as np
import pytest
import torch

from stimuli.activations import extract, pool
from stimuli.layers import list_layers
from stimuli.networks import DEMO_LAYER, NetworkLoadError, demo_cache_path, load_checkpoint, load_network, train_demo


def test_demo_is_accurate_cached_and_deterministic(demo):
    assert demo.info["test_accuracy"] > 0.95
    assert demo_cache_path().exists()
    fresh = train_demo()
    cached = torch.load(demo_cache_path(), weights_only=True)
    for key, value in cached["state_dict"].items():
        assert torch.equal(value, fresh["state_dict"][key]), key


def test_demo_layers(demo):
    layers = list_layers(demo.model)
    assert DEMO_LAYER in layers and {"conv1", "relu1", "relu2", "pool", "fc1", "fc2"} <= set(layers)


def test_activations_are_pooled(demo, digits, demo_activations):
    a = demo_activations.values["conv2"]
    assert a.shape == (1797, 32) and a.dtype == np.float32 and (a >= 0).all()
    assert demo_activations.shapes["conv2"] == (32, 8, 8)
    assert demo_activations.values["fc1"].shape == (1797, 64)
    x = torch.stack([demo.preprocess(digits.load(i)) for i in range(5)])
    with torch.no_grad():
        ref = torch.relu(demo.model.conv2(demo.model.relu1(demo.model.conv1(x)))).mean((2, 3))
    np.testing.assert_allclose(a[:5], ref.numpy(), rtol=1e-5, atol=1e-6)
    sub = digits.subset(range(10))
    mx = extract(demo.model, sub, demo.preprocess, ["conv2"], pooling="max", activation="pre_relu")
    assert mx.values["conv2"].shape == (10, 32)
    assert pool(torch.ones(2, 3, 4, 4), "max").shape == (2, 3)


def test_offline_weights_error_names_the_cache_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(NetworkLoadError, match=r"resnet18-[0-9a-f]+\.pth"):
        load_network("resnet18", weights="DEFAULT", allow_download=False)


def test_unknown_networks_and_weights():
    with pytest.raises(NetworkLoadError, match="unknown network"):
        load_network("no_such_net")
    with pytest.raises(NetworkLoadError, match="unknown weights"):
        load_network("resnet18", weights="NOPE", allow_download=False)
    with pytest.raises(NetworkLoadError, match="not found"):
        load_network("missing/model.pt")


def test_torchvision_without_weights_lists_layers():
    net = load_network("resnet18")
    assert net.source == "torchvision" and net.weights is None
    layers = list_layers(net.model)
    assert "layer3" in layers and "layer3.1.relu_1" in layers


def test_state_dict_and_torchscript_checkpoints(demo, digits, tmp_path):
    sd = tmp_path / "demo_state.pt"
    torch.save({"state_dict": demo.model.state_dict(), "mean": demo.preprocess.mean, "std": demo.preprocess.std}, sd)
    net = load_checkpoint(sd, architecture="demo")
    assert net.source == "checkpoint" and len(net.info["sha256"]) == 64
    x = demo.preprocess(digits.load(0)).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(net.model(x), demo.model(x))
    with pytest.raises(NetworkLoadError, match="does not fit"):
        load_checkpoint(sd, architecture="resnet18")
    ts = tmp_path / "demo.ts"
    torch.jit.script(demo.model).save(str(ts))
    scripted = load_network(str(ts))
    assert "conv2" in list_layers(scripted.model)
    try:
        acts = extract(scripted.model, digits.subset(range(30)), demo.preprocess, ["conv2"], activation="pre_relu")
    except ValueError as exc:  # TorchScript hooks are version dependent; the failure must be explained
        assert "TorchScript" in str(exc)
    else:
        assert acts.values["conv2"].shape == (30, 32)
    with pytest.raises(NetworkLoadError, match="TorchScript"):
        load_checkpoint(sd)
