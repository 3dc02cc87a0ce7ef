"""The activation pass in shards: ranges on batch boundaries, idempotent shard files written whole, a
folder's images listed once for every shard, and a run from the merged shards whose activations and
manifest are those of the unsharded run."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from stimuli import shards
from stimuli.activations import Activations, NoImageRead, extract
from stimuli.artifact import read_manifest
from stimuli.config import StimulusConfig
from stimuli.datasets import FolderImageSet
from stimuli.pipeline import load_inputs, run
from stimuli.shards import (
    LISTING,
    ListingError,
    extract_shard,
    listed_images,
    merge_shards,
    read_listing,
    shard_count,
    shard_name,
    shard_ranges,
    write_listing,
)

# Fields that differ between two runs of one configuration whatever computed them.
RUN_STAMPS = ("created", "versions", "timings")


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
    write_listing(config, folder)
    for i in range(n_shards):
        extract_shard(config, i, n_shards, folder)
    return merge_shards(folder, n_shards, config)


def _unsharded(config):
    inputs = load_inputs(config, lambda s, f: None)
    act = config.activations
    return extract(inputs.net.model, inputs.images, inputs.net.preprocess, act.layers, batch_size=act.batch_size,
                   num_workers=act.num_workers, pooling=act.pooling, activation=act.activation)


def assert_same_activations(a: Activations, b: Activations):
    assert sorted(a.values) == sorted(b.values)
    assert np.array_equal(a.indices, b.indices) and a.indices.dtype == b.indices.dtype
    assert a.n_failed == b.n_failed and a.shapes == b.shapes
    for layer in a.values:
        assert a.values[layer].dtype == b.values[layer].dtype == np.float32
        assert np.array_equal(a.values[layer], b.values[layer])


def test_a_sharded_digits_run_gives_the_unsharded_activations_and_manifest(tmp_path, stimuli_cache):
    config = StimulusConfig.of(layers=["conv1", "fc1"], bases=["neuron", "pca"], n_units=2, batch_size=256,
                            completeness_k=[1, 4])
    folder = tmp_path / "shards"
    merged = _sharded(config, folder, 3)
    # no temporary left, and no listing: the digits are the same in every process
    assert sorted(p.name for p in folder.iterdir()) == [shard_name(i, 3) for i in range(3)]
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
    config = StimulusConfig.of(dataset=str(_jpeg_folder(tmp_path / "imgs")), layers=["conv2"],
                            bases=["neuron", "pca"], n_units=2, n_references=3, n_queries=2, query_percentile=25.0,
                            render_size=32, completeness_k=[1, 8], strip_length=5, batch_size=4, num_workers=0)
    merged = _sharded(config, tmp_path / "shards", 3)
    alone = _unsharded(config)
    assert alone.n_failed == 1 and len(alone.indices) == 45
    assert_same_activations(merged, alone)

    whole = read_manifest(run(config, tmp_path / "whole"))
    parts = read_manifest(run(config, tmp_path / "parts", activations=merged,
                              images=listed_images(config, tmp_path / "shards")))
    assert comparable(parts) == comparable(whole)
    assert whole["dataset"]["n_images"] == 45 and whole["dataset"]["n_skipped"] == 2


def test_a_shard_already_written_is_not_computed_again(tmp_path, stimuli_cache, monkeypatch):
    config = StimulusConfig.of(layers=["conv1"], bases=["pca"], batch_size=512)
    path = extract_shard(config, 1, 2, tmp_path)
    written = path.stat().st_mtime_ns
    stages = []
    monkeypatch.setattr(shards, "_write_atomically", lambda *a: pytest.fail("the shard was written again"))
    assert extract_shard(config, 1, 2, tmp_path, progress=lambda s, f: stages.append(s)) == path
    assert stages == [] and path.stat().st_mtime_ns == written


def test_a_damaged_shard_file_or_one_for_another_configuration_is_computed_again(tmp_path, stimuli_cache):
    config = StimulusConfig.of(layers=["conv1"], bases=["pca"], batch_size=512)
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
    config = StimulusConfig.of(dataset=str(root), layers=["conv1"], bases=["pca"], batch_size=4, num_workers=0)
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
    config = StimulusConfig.of(dataset=str(root), layers=["conv1"], bases=["pca"], batch_size=2, num_workers=0)
    with pytest.raises(NoImageRead):
        _sharded(config, tmp_path / "shards", 2)


def test_activations_that_do_not_fit_the_job_are_refused(tmp_path, stimuli_cache):
    config = StimulusConfig.of(layers=["conv1"], bases=["pca"], n_units=1, batch_size=512)
    acts = _sharded(config, tmp_path / "shards", 2)
    with pytest.raises(ValueError, match="not those of this job"):
        run(config.replace(layers=["conv2"]), tmp_path / "a", activations=acts)
    too_many = Activations(values=acts.values, indices=acts.indices + 5, n_failed=0, shapes=acts.shapes)
    with pytest.raises(ValueError, match="not those of this job"):
        run(config, tmp_path / "b", activations=too_many)


def _folder_config(root, **changes):
    return StimulusConfig.of(dataset=str(root), layers=["conv2"], bases=["neuron", "pca"], n_units=2, n_references=3,
                          n_queries=2, query_percentile=25.0, render_size=32, completeness_k=[1, 8], strip_length=5,
                          batch_size=4, num_workers=0).replace(**changes)


def _described(images):
    return ([images.image_id(i) for i in range(len(images))],
            None if images.labels is None else images.labels.tolist(), images.class_names, images.n_skipped,
            images.describe())


def test_a_listing_round_trips_the_scanned_image_set_without_looking_at_the_folder_again(tmp_path, monkeypatch):
    root = _jpeg_folder(tmp_path / "imgs", n=10, broken=None)
    Image.new("RGB", (8, 8)).save(root / "loose.png")  # directly in the root: no label, so no labels at all
    for config in (_folder_config(root), _folder_config(root, max_images=6, seed=3)):
        folder = tmp_path / f"shards-{config.dataset.max_images}"
        path = write_listing(config, folder)
        assert path == folder / LISTING and sorted(p.name for p in folder.iterdir()) == [LISTING]
        data = json.loads(path.read_text())
        assert data["format"] == 1 and data["root"] == str(root) and data["n_skipped"] == 1  # notes.jpg
        assert data["files"][:2] == ["loose.png", "class0/000.jpg"] and data["labels"][:2] == [-1, 0]
        assert data["class_names"] == ["class0", "class1"] and len(data["files"]) == 11
        scanned = load_inputs(config, lambda s, f: None).images
        assert len(scanned) == (11 if config.dataset.max_images is None else 6)

        # once listed, the folder is neither scanned nor opened: gone, it still gives the same image set
        moved = tmp_path / "moved"
        root.rename(moved)
        monkeypatch.setattr("stimuli.datasets._readable", lambda p: pytest.fail("a file's header was read"))
        assert _described(listed_images(config, folder)) == _described(scanned)
        monkeypatch.undo()
        moved.rename(root)

    labelled = _jpeg_folder(tmp_path / "labelled", n=6, broken=None)
    images = FolderImageSet(labelled)
    again = FolderImageSet.from_listing(json.loads(json.dumps(images.listing())))
    assert _described(again) == _described(images) and again.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert [again.files[i] == images.files[i] for i in range(6)] == [True] * 6
    for bad in ({"files": ["../outside.jpg"] * 6}, {"files": ["/etc/x.jpg"] * 6}, {"labels": [0, 1, 2, 0, 1, 0]},
                {"labels": [0]}, {"format": 99}):
        with pytest.raises(ValueError):
            FolderImageSet.from_listing({**images.listing(), **bad})


def test_a_listing_already_there_for_the_configuration_is_kept_and_another_ones_replaced(tmp_path, monkeypatch):
    root = _jpeg_folder(tmp_path / "imgs", n=6, broken=None)
    config, folder = _folder_config(root), tmp_path / "shards"
    path = write_listing(config, folder)
    written = path.read_bytes()
    (root / "class0" / "00.jpg").write_bytes((root / "class0" / "000.jpg").read_bytes())
    monkeypatch.setattr("stimuli.datasets._readable", lambda p: pytest.fail("the folder was scanned again"))
    assert write_listing(config, folder) == path and path.read_bytes() == written
    monkeypatch.undo()
    other = config.replace(n_units=3)
    write_listing(other, folder)
    assert json.loads(path.read_text())["files"][0] == "class0/00.jpg"
    with pytest.raises(ListingError, match="another configuration"):
        read_listing(config, folder)
    assert write_listing(StimulusConfig(), folder / "digits") is None and not (folder / "digits").exists()


def test_images_added_while_the_shards_run_change_nothing_in_the_result(tmp_path, stimuli_cache):
    root = _jpeg_folder(tmp_path / "imgs")
    config, folder = _folder_config(root), tmp_path / "shards"
    write_listing(config, folder)  # the coordinator, before the shards are sent
    alone = _unsharded(config)
    whole = read_manifest(run(config, tmp_path / "whole"))

    extract_shard(config, 0, 3, folder)
    # Between two shards: an image that sorts first in its class (a scan would shift every later number by
    # one) and a class that sorts first (a scan would shift every label).
    first = sorted(root.rglob("*[0-9].jpg"))[-1]
    shutil.copy(first, root / "class0" / "00.jpg")
    (root / "aaa").mkdir()
    shutil.copy(first, root / "aaa" / "x.jpg")
    rescanned, listed = FolderImageSet(root), listed_images(config, folder)
    assert len(rescanned) == len(listed) + 2 and rescanned.image_id(0) == "aaa/x.jpg"
    assert rescanned.class_names == ["aaa", "class0", "class1"] != listed.class_names

    extract_shard(config, 1, 3, folder)
    extract_shard(config, 2, 3, folder)
    merged = merge_shards(folder, 3, config)
    assert_same_activations(merged, alone)
    parts = read_manifest(run(config, tmp_path / "parts", activations=merged, images=listed_images(config, folder)))
    assert comparable(parts) == comparable(whole)
    assert parts["dataset"]["n_images"] == 45


def test_a_shard_or_merge_without_the_listing_of_its_configuration_refuses(tmp_path, stimuli_cache, monkeypatch):
    root = _jpeg_folder(tmp_path / "imgs", n=8, broken=None)
    config, folder = _folder_config(root, layers=["conv1"]), tmp_path / "shards"
    monkeypatch.setattr("stimuli.datasets._readable", lambda p: pytest.fail("a shard scanned the folder"))
    with pytest.raises(ListingError, match="no image listing at .*the job's coordinator writes it"):
        extract_shard(config, 0, 2, folder)
    with pytest.raises(ListingError, match="no image listing"):
        listed_images(config, folder)
    monkeypatch.undo()

    write_listing(config, folder)
    extract_shard(config, 0, 2, folder)
    extract_shard(config, 1, 2, folder)
    listing = folder / LISTING
    data = json.loads(listing.read_text())
    listing.write_text(json.dumps({**data, "root": str(tmp_path / "elsewhere")}))
    with pytest.raises(ListingError, match="not of the job's folder"):
        extract_shard(config, 0, 2, folder)
    listing.write_text(json.dumps(data))
    with pytest.raises(ListingError, match="written for another configuration"):
        extract_shard(config.replace(batch_size=2), 0, 2, folder)
    listing.write_text("{")
    with pytest.raises(ListingError, match="cannot be read"):
        merge_shards(folder, 2, config)
    listing.unlink()
    with pytest.raises(ListingError, match="no image listing"):
        merge_shards(folder, 2, config)

    # a listing written again (the folder has changed): the shards of the old one are computed again,
    # and a merge refuses a mixture
    shutil.copy(root / "class0" / "000.jpg", root / "class0" / "00.jpg")
    write_listing(config, folder)
    with pytest.raises(ValueError, match="another image listing"):
        merge_shards(folder, 2, config)
    extract_shard(config, 0, 2, folder)
    with pytest.raises(ValueError, match="another image listing"):
        merge_shards(folder, 2, config)
    extract_shard(config, 1, 2, folder)
    assert list(merge_shards(folder, 2, config).indices) == list(range(9))
