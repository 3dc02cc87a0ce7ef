"""The activation pass's loader: worker processes change nothing in the result, unreadable files are
still dropped and counted with workers, and the automatic worker count stays out of daemonic processes
and in-memory sets."""

import multiprocessing as mp

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli import activations
from stimuli.activations import auto_num_workers, extract, pool
from stimuli.config import StimulusConfig
from stimuli.datasets import FolderImageSet, load_dataset


def _folder(root, n=14, broken=()):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(d / f"{i:03d}.jpg", quality=90)
    return root


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


def _preprocess(image):
    return torch.from_numpy(np.asarray(image.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0).permute(2, 0, 1)


def test_workers_give_bit_identical_activations(tmp_path):
    images = FolderImageSet(_folder(tmp_path / "set"))
    # a file that passes the header scan and breaks at decoding: the loader must drop and count it
    victim = images.files[5]
    victim.write_bytes(victim.read_bytes()[:200])
    serial = extract(_model(), images, _preprocess, ["0", "2"], batch_size=4, num_workers=0)
    parallel = extract(_model(), images, _preprocess, ["0", "2"], batch_size=4, num_workers=2)
    assert serial.n_failed == parallel.n_failed == 1
    np.testing.assert_array_equal(serial.indices, parallel.indices)
    assert 5 not in serial.indices and len(serial.indices) == len(images) - 1
    for layer in ("0", "2"):
        assert parallel.values[layer].dtype == np.float32
        np.testing.assert_array_equal(serial.values[layer], parallel.values[layer])


def test_auto_workers_follow_the_usable_cores_for_a_folder(tmp_path, monkeypatch):
    images = FolderImageSet(_folder(tmp_path / "set", n=4))
    monkeypatch.setattr(activations, "usable_cores", lambda: 3)
    assert auto_num_workers(images) == 3
    assert auto_num_workers(images.subset([0, 1])) == 3
    monkeypatch.setattr(activations, "usable_cores", lambda: 64)
    assert auto_num_workers(images) == activations.MAX_AUTO_WORKERS
    assert auto_num_workers(load_dataset("digits")) == 0


def _auto_in_daemon(root, queue):
    queue.put(auto_num_workers(FolderImageSet(root)))


def test_no_workers_from_a_daemonic_process(tmp_path):
    root = _folder(tmp_path / "set", n=4)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_auto_in_daemon, args=(root, queue), daemon=True)
    child.start()
    child.join(60)
    assert queue.get(timeout=5) == 0


def test_config_leaves_the_worker_count_open_by_default():
    assert StimulusConfig().activations.num_workers is None
    StimulusConfig.of(num_workers=3).validate()
    with pytest.raises(ValueError, match="num_workers"):
        StimulusConfig.of(num_workers=-1).validate()
    assert StimulusConfig().activations.decode == "auto"
    with pytest.raises(ValueError, match="decode"):
        StimulusConfig.of(decode="nvjpeg").validate()


def test_mean_pooling_of_bfloat16_maps_accumulates_in_float32():
    # 4096 values of 1 + 2**-7: bfloat16 holds each exactly, but a bfloat16 running sum would round
    t = torch.full((1, 1, 64, 64), 1 + 2 ** -7, dtype=torch.bfloat16)
    out = pool(t, "mean")
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(1 + 2 ** -7, abs=1e-7)
    assert pool(t, "max").dtype == torch.float32


def test_dropping_rows_moves_them_up_in_place():
    values = np.arange(40, dtype=np.float32).reshape(10, 4)
    rows = np.array([0, 2, 3, 7, 8])
    expected = values[rows].copy()
    kept = activations._keep_rows(values, rows, chunk=2)
    np.testing.assert_array_equal(kept, expected)
    assert np.shares_memory(kept, values)


def test_torchvision_decoding_drops_the_same_files_and_matches_pil(tmp_path):
    from stimuli.networks import imagenet_preprocess

    images = FolderImageSet(_folder(tmp_path / "set"))
    victim = images.files[3]
    victim.write_bytes(victim.read_bytes()[:200])
    preprocess = imagenet_preprocess(resize=36, crop=32)
    pil = extract(_model(), images, preprocess, ["2"], batch_size=4, decode="pil")
    tv = extract(_model(), images, preprocess, ["2"], batch_size=4, num_workers=2, decode="torchvision")
    assert pil.n_failed == tv.n_failed == 1
    np.testing.assert_array_equal(pil.indices, tv.indices)
    # PIL and tensor resizing round differently; the activations agree to that rounding
    np.testing.assert_allclose(pil.values["2"], tv.values["2"], atol=0.05)
    sub = images.subset([0, 1, 2, 4, 5, 6])
    np.testing.assert_array_equal(extract(_model(), sub, preprocess, ["2"], batch_size=4, decode="torchvision").values["2"],
                                  tv.values["2"][:6])
    with pytest.raises(ValueError, match="decode"):
        extract(_model(), load_dataset("digits").subset(range(8)), preprocess, ["2"], decode="torchvision")
