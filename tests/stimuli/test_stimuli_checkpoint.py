"""Checkpoints end to end: a torchvision architecture saved with random weights, an ImageFolder of
generated images with unreadable files, `python -m stimuli generate`, and the artifact it writes."""

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stimuli.activations import extract, layer_extractor
from stimuli.artifact import read_manifest
from stimuli.datasets import load_dataset
from stimuli.networks import NetworkLoadError, checkpoint_preprocess, load_checkpoint, load_network

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["blobs", "checks", "rings", "stripes"]
SMALL = {"resize": 64, "crop": 56}  # keeps a resnet18 forward pass cheap on a CPU


def _image(kind: str, seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / 8.0
    phase = rng.uniform(0, 6.3)
    pattern = {"blobs": np.sin(x + phase) * np.cos(y - phase), "checks": np.sign(np.sin(x * 2) * np.sin(y * 2 + phase)),
               "rings": np.sin(np.hypot(x - w / 16, y - h / 16) * 2 + phase), "stripes": np.sin(x * 3 + phase)}[kind]
    rgb = np.stack([pattern * c for c in rng.uniform(0.3, 1.0, size=3)], axis=-1)
    rgb = rgb + 0.1 * rng.normal(size=rgb.shape)
    return Image.fromarray(np.clip((rgb + 1) * 127.5, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """4 classes x 6 images (jpg and png), a file that is not an image and a truncated jpg."""
    root = tmp_path_factory.mktemp("imagefolder") / "shapes"
    for ci, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for j in range(6):
            ext = "png" if j % 2 else "jpg"
            _image(c, 100 * ci + j).save(root / c / f"{c}_{j}.{ext}")
    (root / "rings" / "notes.jpg").write_bytes(b"this is not an image")
    buf = io.BytesIO()
    _image("blobs", 999, size=(160, 120)).save(buf, "JPEG")  # its header survives the cut: fails at decode
    (root / "blobs" / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return root


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    from torchvision import models

    torch.manual_seed(0)
    model = models.resnet18(num_classes=len(CLASSES)).eval()
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_shapes.pth"
    torch.save({"state_dict": model.state_dict(), "class_names": CLASSES, "preprocess": SMALL}, path)
    return model, path


def test_generate_from_a_state_dict_checkpoint(folder, resnet, tmp_path, stimuli_cache):
    model, ckpt = resnet
    config = {"network": str(ckpt), "architecture": "resnet18", "num_classes": len(CLASSES),
              "dataset": str(folder), "layers": ["layer3", "layer4.1"], "bases": ["neuron", "pca", "sae"],
              "n_units": 2, "n_components": {"pca": 8, "sae": 16}, "sae": {"k": 2, "epochs": 5},
              "n_references": 3, "n_queries": 2, "query_percentile": 30, "strip_length": 4, "batch_size": 8,
              "completeness_k": [1, 4], "render_size": 32, "seed": 5}
    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps(config))
    out = tmp_path / "artifact"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STIMULI_CACHE_DIR": str(stimuli_cache)}
    proc = subprocess.run([sys.executable, "-m", "stimuli", "generate", str(cfg), "--out", str(out), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)

    m = read_manifest(out)
    assert m["schema_version"] == 1 and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["created"])
    net = m["network"]
    assert net["name"] == ckpt.name and net["source"] == "checkpoint" and net["weights"] is None
    assert net["architecture"] == "resnet18" and net["format"] == "state_dict"
    assert net["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert net["preprocess"]["crop"] == 56 and net["preprocess"]["resize"] == 64
    ds = m["dataset"]
    assert ds == {**ds, "name": "shapes", "source": "folder", "n_images": 24, "n_skipped": 2}
    assert m["seed"] == 5
    params = m["parameters"]
    for key in ("pooling", "activation", "n_units", "n_references", "query_percentile", "n_queries",
                "unit_selection"):
        assert key in params
    assert "network" not in params and "dataset" not in params
    assert {"stimuli", "torch", "torchvision", "scikit-learn", "numpy"} <= set(m["versions"])

    assert [(e["layer"], e["basis"]) for e in m["layers"]] == [
        (l, b) for l in ("layer3", "layer4.1") for b in ("neuron", "pca", "sae")]
    files = set()
    for e in m["layers"]:
        K = {"neuron": 256 if e["layer"] == "layer3" else 512, "pca": 8, "sae": 16}[e["basis"]]
        assert e["n_components"] == K == len(e["explained_variance_ratio"]) == len(e["cumulative_explained_variance"])
        comp = e["completeness"]
        # the checkpoint names its classes as the folder does, so accuracy is scored against labels
        assert comp["k"] == [1, 4] and comp["reference"] == "labels" and comp["n_images"] == 24
        assert len(e["units"]) == 2
        for u in e["units"]:
            assert len(u["references_max"]) == len(u["references_min"]) == 3
            assert len(u["queries_max"]) == len(u["queries_min"]) == 2 and len(u["strip"]) == 4
            assert not set(u["queries_max"] + u["queries_min"]) & set(u["references_max"] + u["references_min"])
            files.update(u["references_max"] + u["references_min"] + u["queries_max"] + u["queries_min"] + u["strip"])
    for f in files:
        data = (out / f).read_bytes()
        assert f == f"images/{hashlib.sha256(data).hexdigest()[:20]}.png"
        assert Image.open(io.BytesIO(data)).size == (32, 32)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(Path(f).name for f in files)


def test_checkpoint_activations_match_the_model(folder, resnet):
    model, ckpt = resnet
    net = load_network(str(ckpt), architecture="resnet18", num_classes=len(CLASSES))
    assert net.class_names == CLASSES and net.n_classes == 4
    images = load_dataset(str(folder))
    acts = extract(net.model, images, net.preprocess, ["layer3"], batch_size=5)
    assert acts.n_failed == 1 and len(acts.indices) == 24 and images.n_skipped == 1
    x = torch.stack([net.preprocess(images.load(int(i))) for i in acts.indices[:3]])
    assert x.shape == (3, 3, 56, 56)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        ref = torch.relu(model.layer3(model.layer2(model.layer1(h)))).mean((2, 3))
    np.testing.assert_allclose(acts.values["layer3"][:3], ref.numpy(), rtol=1e-4, atol=1e-5)


def test_preprocessing_defaults_and_weights_transforms():
    _, settings = checkpoint_preprocess()
    assert settings == {"resize": 256, "crop": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    with pytest.raises(NetworkLoadError, match="preprocess"):
        checkpoint_preprocess({"crop": 300})
    with pytest.raises(NetworkLoadError, match="preprocess"):
        checkpoint_preprocess({"size": 3})
    # named weights use the weights' own transform (no download needed to build it)
    from torchvision.models import get_model_weights

    from stimuli.networks import weights_preprocess

    w = get_model_weights("vit_b_16").IMAGENET1K_SWAG_E2E_V1
    info = weights_preprocess(w)
    assert info["crop"] == [384] and info["resize"] == [384]


def test_torchscript_checkpoint_extracts_nested_layers(folder, resnet, tmp_path):
    model, _ = resnet
    path = tmp_path / "resnet18.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(path))
        net = load_checkpoint(path)
    assert net.info["format"] == "torchscript" and net.info["preprocess"]["crop"] == 224
    layers = ["layer3", "layer3.1", "layer3.1.conv2", "avgpool", "fc"]
    x = torch.randn(2, 3, 40, 40)
    from torchvision.models.feature_extraction import create_feature_extractor

    with torch.no_grad():
        got = layer_extractor(net.model, layers)(x)
        ref = create_feature_extractor(model, {l: l for l in layers})(x)
    for l in layers:
        torch.testing.assert_close(got[l], ref[l], rtol=1e-4, atol=1e-5)
    # a module called twice (torchvision's BasicBlock reuses its ReLU) has no single output
    with pytest.raises(ValueError, match="calls it 2 times"):
        layer_extractor(net.model, ["layer1.0.relu"])
    with pytest.raises(ValueError, match="unknown layer"):
        layer_extractor(net.model, ["layer9"])
    images = load_dataset(str(folder)).subset(range(6))
    preprocess, _ = checkpoint_preprocess(SMALL)
    acts = extract(net.model, images, preprocess, ["layer3.1", "fc"], batch_size=4)
    assert acts.values["layer3.1"].shape == (6, 256) and acts.values["fc"].shape == (6, 4)


def test_class_count_is_read_from_the_checkpoint_and_a_mismatch_names_both_shapes(folder, tmp_path, capsys):
    from torchvision import models

    from stimuli.__main__ import main

    torch.manual_seed(1)
    path = tmp_path / "resnet18_10.pth"
    torch.save({"state_dict": models.resnet18(num_classes=10).state_dict(), "preprocess": SMALL}, path)
    net = load_checkpoint(path, architecture="resnet18")
    assert net.n_classes == 10 and net.model.fc.out_features == 10
    assert load_checkpoint(path, architecture="resnet18", num_classes=10).n_classes == 10
    with pytest.raises(NetworkLoadError) as info:
        load_checkpoint(path, architecture="resnet18", num_classes=5)
    message = str(info.value)
    assert "fc.weight: checkpoint (10, 512) vs model (5, 512)" in message
    assert "fc.bias: checkpoint (10,) vs model (5,)" in message and "--num-classes 10" in message

    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"layers": ["layer1"], "bases": ["neuron"], "n_units": 1, "n_references": 3,
                               "n_queries": 2, "query_percentile": 30, "strip_length": 4, "n_strips": 1,
                               "completeness": False, "render_size": 32}))
    out = tmp_path / "artifact"
    args = ["generate", str(cfg), "--network", str(path), "--architecture", "resnet18", "--dataset", str(folder),
            "--quiet", "--out", str(out)]
    assert main(args + ["--num-classes", "5"]) == 2
    err = capsys.readouterr().err
    assert "(10, 512)" in err and "(5, 512)" in err and not out.exists()
    assert main(args) == 0, capsys.readouterr().err
    assert read_manifest(out)["network"]["name"] == path.name
