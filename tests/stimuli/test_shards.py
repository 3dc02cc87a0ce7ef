"""The activation pass in shards: ranges on batch boundaries, idempotent shard files written whole, and a
run from the merged shards whose activations and manifest are those of the unsharded run."""

import numpy as np
import pytest
from PIL import Image

from stimuli import shards
from stimuli.activations import Activations, NoImageRead, extract
from stimuli.artifact import read_manifest
from stimuli.config import StimulusConfig
from stimuli.pipeline import load_inputs, run
from stimuli.shards import extract_shard, merge_shards, shard_count, shard_name, shard_ranges

# Fields that differ between two runs of one configuration whatever computed them.
RUN_STAMPS = ("created", "versions")


def comparable(manifest):
    return {k: v for k, v in manifest.items() if k not in RUN_STAMPS}


@pytest.mark.parametrize("n_images, n_shards, batch_size", [
    (1797, 3, 256), (1797, 1, 256), (10, 4, 3), (1000, 7, 100), (5, 3, 2), (4, 6, 1), (64, 2, 64),
])
def test_shards_cover_the_images_in_whole_batches(n_images, n_shards, batch_size):
    ranges = shard_ranges(n_images, n_shards, batch_size)
    assert len(ranges) == n_shards
    assert [i for r in ranges for i in r] == list(range(n_images))
    for r in ranges:
        assert r.start % batch_size == 0
        assert r.stop == n_images or r.stop % batch_size == 0
    batches = [len(range(r.start, r.stop, batch_size)) for r in ranges]
    assert max(batches) - min(batches) <= 1


def test_more_shards_than_batches_leaves_the_extra_ones_empty_and_the_count_is_capped():
    assert [len(r) for r in shard_ranges(5, 4, 2)] == [0, 2, 2, 1]
    assert shard_count(5, 2, 4) == 3 and shard_count(1797, 256, 3) == 3 and shard_count(10, 256, 0) == 1
    with pytest.raises(ValueError):
        shard_ranges(10, 0, 2)


def _sharded(config, folder, n_shards):
    for i in range(n_shards):
        extract_shard(config, i, n_shards, folder)
    return merge_shards(folder, n_shards, config)


def _unsharded(config):
    inputs = load_inputs(config, lambda s, f: None)
    return extract(inputs.net.model, inputs.images, inputs.net.preprocess, config.layers, batch_size=config.batch_size,
                   num_workers=config.num_workers, pooling=config.pooling, activation=config.activation)


def assert_same_activations(a: Activations, b: Activations):
    assert sorted(a.values) == sorted(b.values)
    assert np.array_equal(a.indices, b.indices) and a.indices.dtype == b.indices.dtype
    assert a.n_failed == b.n_failed and a.shapes == b.shapes
    for layer in a.values:
        assert a.values[layer].dtype == b.values[layer].dtype == np.float32
        assert np.array_equal(a.values[layer], b.values[layer])


def test_a_sharded_digits_run_gives_the_unsharded_activations_and_manifest(tmp_path, stimuli_cache):
    config = StimulusConfig(layers=["conv1", "fc1"], bases=["neuron", "pca"], n_units=2, batch_size=256,
                            completeness_k=[1, 4])
    folder = tmp_path / "shards"
    merged = _sharded(config, folder, 3)
    assert sorted(p.name for p in folder.iterdir()) == [shard_name(i, 3) for i in range(3)]  # no temporary left
    assert_same_activations(merged, _unsharded(config))

    whole = read_manifest(run(config, tmp_path / "whole"))
    parts = read_manifest(run(config, tmp_path / "parts", activations=merged))
    assert comparable(parts) == comparable(whole)
    assert whole["dataset"]["n_images"] == 1797


def _cut(path):
    """Cut a JPEG's data short, leaving its header whole: the folder's scan takes it, decoding fails."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 3 // 4])


def _jpeg_folder(root, n=46, broken=13):
    """Small natural-ish JPEGs in two classes (smooth gradients with noise, as decoding real photographs
    needs more than flat colour), a file that is no image (skipped by the scan), and one JPEG cut short
    (``broken``, in file order) that fails at decoding, inside a shard's batch."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:36, 0:44]
    for i in range(n):
        d = root / f"class{i % 2}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.stack([(x * (i + 3) + y * 2) % 256, (y * (i + 5)) % 256, (x + y * i) % 256], -1)
        noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(d / f"{i:03d}.jpg", quality=85)
    (root / "class0" / "notes.jpg").write_text("not an image")
    if broken is not None:
        _cut(sorted(root.rglob("*[0-9].jpg"))[broken])
    return root


def test_a_sharded_folder_run_with_an_unreadable_jpeg_gives_the_unsharded_result(tmp_path, stimuli_cache):
    config = StimulusConfig(dataset=str(_jpeg_folder(tmp_path / "imgs")), layers=["conv2"],
                            bases=["neuron", "pca"], n_units=2, n_references=3, n_queries=2, query_percentile=25.0,
                            render_size=32, completeness_k=[1, 8], strip_length=5, batch_size=4, num_workers=0)
    merged = _sharded(config, tmp_path / "shards", 3)
    alone = _unsharded(config)
    assert alone.n_failed == 1 and len(alone.indices) == 45
    assert_same_activations(merged, alone)

    whole = read_manifest(run(config, tmp_path / "whole"))
    parts = read_manifest(run(config, tmp_path / "parts", activations=merged))
    assert comparable(parts) == comparable(whole)
    assert whole["dataset"]["n_images"] == 45 and whole["dataset"]["n_skipped"] == 2


def test_a_shard_already_written_is_not_computed_again(tmp_path, stimuli_cache, monkeypatch):
    config = StimulusConfig(layers=["conv1"], bases=["pca"], batch_size=512)
    path = extract_shard(config, 1, 2, tmp_path)
    written = path.stat().st_mtime_ns
    stages = []
    monkeypatch.setattr(shards, "_write_atomically", lambda *a: pytest.fail("the shard was written again"))
    assert extract_shard(config, 1, 2, tmp_path, progress=lambda s, f: stages.append(s)) == path
    assert stages == [] and path.stat().st_mtime_ns == written


def test_a_damaged_shard_file_or_one_for_another_configuration_is_computed_again(tmp_path, stimuli_cache):
    config = StimulusConfig(layers=["conv1"], bases=["pca"], batch_size=512)
    path = extract_shard(config, 0, 2, tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    extract_shard(config, 0, 2, tmp_path)
    assert list(np.load(path)["indices"]) == list(range(1024))  # two of the four batches

    other = config.replace(layers=["conv2"])
    extract_shard(other, 0, 2, tmp_path)
    extract_shard(other, 1, 2, tmp_path)
    with pytest.raises(ValueError, match="another configuration"):
        merge_shards(tmp_path, 2, config)
    assert list(merge_shards(tmp_path, 2, other).values) == ["conv2"]


def test_a_shard_whose_images_all_fail_counts_them_and_the_others_still_merge(tmp_path, stimuli_cache):
    root = _jpeg_folder(tmp_path / "imgs", n=12, broken=None)
    config = StimulusConfig(dataset=str(root), layers=["conv1"], bases=["pca"], batch_size=4, num_workers=0)
    order = load_inputs(config, lambda s, f: None).images.files
    for f in order[4:8]:  # the second shard's batch, whole
        _cut(f)
    merged = _sharded(config, tmp_path / "shards", 3)
    assert merged.n_failed == 4 and list(merged.indices) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert_same_activations(merged, _unsharded(config))


def test_no_readable_image_in_any_shard_is_refused_as_the_unsharded_pass_refuses_it(tmp_path, stimuli_cache):
    root = _jpeg_folder(tmp_path / "imgs", n=6, broken=None)
    for f in root.rglob("*[0-9].jpg"):
        _cut(f)
    config = StimulusConfig(dataset=str(root), layers=["conv1"], bases=["pca"], batch_size=2, num_workers=0)
    with pytest.raises(NoImageRead):
        _sharded(config, tmp_path / "shards", 2)


def test_activations_that_do_not_fit_the_job_are_refused(tmp_path, stimuli_cache):
    config = StimulusConfig(layers=["conv1"], bases=["pca"], n_units=1, batch_size=512)
    acts = _sharded(config, tmp_path / "shards", 2)
    with pytest.raises(ValueError, match="not those of this job"):
        run(config.replace(layers=["conv2"]), tmp_path / "a", activations=acts)
    too_many = Activations(values=acts.values, indices=acts.indices + 5, n_failed=0, shapes=acts.shapes)
    with pytest.raises(ValueError, match="not those of this job"):
        run(config, tmp_path / "b", activations=too_many)
