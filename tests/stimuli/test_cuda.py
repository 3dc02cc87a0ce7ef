"""The GPU path: JPEG decoding on the device (nvJPEG), mean pooling of bfloat16 autocast maps accumulated
in float32, and feature visualization on CUDA. Each test is skipped, with its reason, where torch sees no
CUDA device; bench/gpu_check.sh runs them on a CUDA machine."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli.activations import extract, pool
from stimuli.datasets import FolderImageSet, load_dataset

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here: run bench/gpu_check.sh on a CUDA machine"
)

CUDA = torch.device("cuda")


def _photo_folder(root, n=12):
    """Smooth gradients with noise (natural-ish content: flat colour would hide decoder differences), in two
    classes, and one JPEG cut short that passes the folder's scan and fails at decoding."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:60, 0:80]
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.stack([(x * (i + 3) + y * 2) % 256, (y * (i + 5)) % 256, (x + y * i) % 256], -1)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(d / f"{i:03d}.jpg", quality=90)
    victim = sorted(root.rglob("*.jpg"))[4]
    victim.write_bytes(victim.read_bytes()[:300])
    return root


def _model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def test_jpeg_decoding_on_the_device_matches_the_cpu(tmp_path):
    from stimuli.decoding import decode, use_device_decoding
    from stimuli.networks import imagenet_preprocess

    images = FolderImageSet(_photo_folder(tmp_path / "set"))
    preprocess = imagenet_preprocess(resize=36, crop=32)
    # "auto" picks the device decoder on CUDA: the path a job takes there
    assert use_device_decoding(images, preprocess, CUDA, "auto")
    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in images.files]
    on_device, on_cpu = decode(datas, CUDA), decode(datas, torch.device("cpu"))
    assert [d is None for d in on_device] == [d is None for d in on_cpu]
    assert sum(d is None for d in on_device) == 1
    for gpu, cpu in zip(on_device, on_cpu):
        if gpu is None:
            continue
        assert gpu.device.type == "cuda" and gpu.dtype == torch.uint8 and gpu.shape == cpu.shape
        # nvJPEG's inverse DCT and chroma upsampling round differently from libjpeg-turbo's: a level or
        # two on average, never a different picture
        diff = (gpu.cpu().int() - cpu.int()).abs().float()
        assert diff.mean() < 2.0 and diff.max() <= 48
    pil = extract(_model(), images, preprocess, ["2"], batch_size=4, decode="pil")
    gpu = extract(_model(), images, preprocess, ["2"], batch_size=4, device=CUDA, decode="auto", mixed_precision=False)
    assert pil.n_failed == gpu.n_failed == 1
    np.testing.assert_array_equal(pil.indices, gpu.indices)
    # PIL's and the tensor resize round differently (as tests/stimuli/test_stimuli_loading.py states for the CPU)
    np.testing.assert_allclose(pil.values["2"], gpu.values["2"], atol=0.05)


def test_autocast_maps_are_pooled_in_float32_on_cuda(demo):
    from stimuli.activations import autocast

    # bfloat16 holds 1 + 2**-7 exactly, but a bfloat16 running sum of 4096 of them rounds
    t = torch.full((2, 3, 64, 64), 1 + 2**-7, dtype=torch.bfloat16, device=CUDA)
    out = pool(t, "mean")
    assert out.dtype == torch.float32 and torch.all(out == 1 + 2**-7)
    conv = nn.Conv2d(3, 16, 3, padding=1).to(CUDA).eval()
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(0)).to(CUDA)
    with torch.inference_mode(), autocast(CUDA):
        y = conv(x)
    assert y.dtype == torch.bfloat16, "autocast is on by default on CUDA"
    pooled = pool(y, "mean")
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, y.float().mean((2, 3)), rtol=1e-6, atol=1e-6)
    # and a whole pass on CUDA (autocast on by default): float32 rows within bfloat16's rounding of the
    # float32 pass on the CPU
    digits = load_dataset("digits", max_images=64, seed=0)
    cpu = extract(demo.model, digits, demo.preprocess, ["conv2"], batch_size=32)
    gpu = extract(demo.model, digits, demo.preprocess, ["conv2"], batch_size=32, device=CUDA)
    assert gpu.values["conv2"].dtype == np.float32
    np.testing.assert_allclose(gpu.values["conv2"], cpu.values["conv2"], rtol=2**-6, atol=2e-2)


def test_feature_visualization_on_cuda_beats_the_natural_extremes(tmp_path, stimuli_cache):
    from stimuli.artifact import read_manifest
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    config = StimulusConfig.of(
        bases=["neuron"],
        n_units=4,
        n_references=1,
        n_queries=4,
        completeness=False,
        essence=False,
        ablation=False,
        surrogate=False,
        device="cuda",
        feature_vis={"method": "fourier", "steps": 128, "lr": 0.1, "seed": 0},
    )
    m = read_manifest(run(config, tmp_path / "fv"))
    assert m["device"].startswith("cuda") and m["device_name"]
    units = m["layers"][0]["units"]
    above = sum(u["measures"]["synthetic_max_score"] > u["measures"]["natural_max_score"] for u in units)
    below = sum(u["measures"]["synthetic_min_score"] <= u["measures"]["natural_min_score"] + 1e-6 for u in units)
    # the share the CPU test of the demo asks for (tests/stimuli/test_featurevis.py)
    assert above >= 0.75 * len(units) and below >= 0.75 * len(units)
