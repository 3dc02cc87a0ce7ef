import hashlib
import re

import numpy as np
import pytest

from stimuli.artifact import read_manifest
from stimuli.config import StimulusConfig
from stimuli.pipeline import STAGES, run

NAME = re.compile(r"^images/[0-9a-f]{20}\.png$")


def test_manifest_follows_the_contract(demo_run):
    config, path, _ = demo_run
    m = read_manifest(path)
    assert m["schema_version"] == 1
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", m["created"])
    assert m["network"]["name"] == "demo" and m["network"]["source"] == "builtin" and m["network"]["weights"] is None
    assert m["dataset"] == {"name": "digits", "source": "builtin", "n_images": 1797, "n_skipped": 0}
    assert m["seed"] == 0
    for key in ("pooling", "activation", "n_units", "n_references", "query_percentile", "n_queries",
                "unit_selection"):
        assert key in m["parameters"]
    assert set(m["versions"]) >= {"stimuli", "torch", "torchvision", "scikit-learn", "numpy"}
    assert [(e["layer"], e["basis"]) for e in m["layers"]] == [("conv2", "neuron"), ("conv2", "pca"),
                                                              ("conv2", "nmf")]
    for entry in m["layers"]:
        k = entry["n_components"]
        assert k == 32
        assert len(entry["explained_variance_ratio"]) == k
        assert len(entry["cumulative_explained_variance"]) == k
        c = entry["completeness"]
        assert set(c) >= {"k", "accuracy", "kl", "baseline_accuracy"}
        assert len(c["k"]) == len(c["accuracy"]) == len(c["kl"]) == len(c["accuracy_reverse"])
        assert c["baseline_accuracy"] > 0.95 and c["reference"] == "labels"
        assert len(entry["units"]) == 3
        for u in entry["units"]:
            assert isinstance(u["index"], int) and 0 <= u["index"] < k
            assert "explained_variance_ratio" in u["measures"]
            assert len(u["references_max"]) == 9 and len(u["references_min"]) == 9
            ex = config.exemplars
            assert len(u["queries_max"]) == len(u["queries_min"]) == ex.n_queries
            # the one band of query_percentile 10: (90, 100] above, [0, 10) below
            assert all(90 < p <= 100 for p in u["queries_max_percentile"])
            assert all(0 <= p < 10 for p in u["queries_min_percentile"])
            assert len(u["queries_max_percentile"]) == len(u["queries_min_percentile"]) == ex.n_queries
            assert len(u["strip"]) == ex.strip_length
            assert len(u["strips"]) == ex.n_strips == 4 and u["strips"][0] == u["strip"]
            assert all(len(s) == ex.strip_length for s in u["strips"])
            assert len({f for s in u["strips"] for f in s}) == ex.n_strips * ex.strip_length
            refs = set(u["references_max"]) | set(u["references_min"])
            assert not refs & (set(u["queries_max"]) | set(u["queries_min"]))
            for f in (u["references_max"] + u["references_min"] + u["queries_max"] + u["queries_min"]
                      + [f for s in u["strips"] for f in s]):
                assert NAME.match(f)
                data = (path / f).read_bytes()
                assert hashlib.sha256(data).hexdigest()[:20] == f[7:27]


def test_top_pcs_explain_more_than_top_neurons(demo_run):
    m = read_manifest(demo_run[1])
    by = {e["basis"]: e for e in m["layers"]}
    for k in (1, 2, 4):
        assert by["pca"]["cumulative_explained_variance"][k - 1] > by["neuron"]["cumulative_explained_variance"][k - 1]
    # projection on all units keeps the network's accuracy
    assert by["pca"]["completeness"]["accuracy"][-1] == pytest.approx(by["pca"]["completeness"]["baseline_accuracy"])
    acc = by["pca"]["completeness"]["accuracy"]
    assert acc[-1] > acc[0] and by["pca"]["completeness"]["kl"][0] > by["pca"]["completeness"]["kl"][-1]


def test_progress_stages(demo_run):
    calls = demo_run[2]
    stages = [s for s, _ in calls]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == list(STAGES)
    assert all(0.0 <= f <= 1.0 for _, f in calls)
    assert calls[-1] == ("write", 1.0)


def test_exemplars_are_the_extreme_images(demo_run, demo_activations):
    m = read_manifest(demo_run[1])
    neuron = next(e for e in m["layers"] if e["basis"] == "neuron")
    unit = neuron["units"][0]
    r = demo_activations.values["conv2"][:, unit["index"]]
    assert unit["measures"]["response_max"] == pytest.approx(float(r.max()), rel=1e-5)
    assert unit["measures"]["response_min"] == pytest.approx(float(r.min()), rel=1e-5, abs=1e-6)


def test_same_seed_same_units(demo_run, tmp_path):
    config, path, _ = demo_run
    again = run(config.replace(bases=["neuron", "pca"], completeness=False), tmp_path / "again")
    first = {e["basis"]: e["units"] for e in read_manifest(path)["layers"]}
    second = {e["basis"]: e["units"] for e in read_manifest(again)["layers"]}
    assert second["neuron"] == first["neuron"] and second["pca"] == first["pca"]


def test_crash_leaves_no_artifact(tmp_path):
    out = tmp_path / "crash"

    def progress(stage, fraction):
        if stage == "measures":
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        run(StimulusConfig.of(bases=["pca"], n_units=1), out, progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_existing_out_dir_refused(tmp_path):
    with pytest.raises(FileExistsError):
        run(StimulusConfig(), tmp_path)


def test_folder_dataset_with_unreadable_files(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "cats" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "imgs" / "dogs" / "notes.txt").write_text("ignored")
    config = StimulusConfig.of(dataset=str(tmp_path / "imgs"), bases=["neuron", "pca"], n_units=2,
                            n_references=3, n_queries=2, query_percentile=25.0, render_size=32,
                            completeness_k=[1, 32], strip_length=6)
    # 30 images hold 4 disjoint strips of 6 but not of 9 (42 images needed)
    with pytest.raises(ValueError, match="30 images are too few for 4 disjoint strips of 9 .* at least 42"):
        run(config.replace(strip_length=9), tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    m = read_manifest(run(config, tmp_path / "out"))
    assert m["dataset"]["source"] == "folder" and m["dataset"]["n_images"] == 30
    assert m["dataset"]["n_skipped"] == 1
    assert m["layers"][0]["completeness"]["reference"] == "predictions"
    assert len(m["layers"][1]["units"][0]["references_max"]) == 3
    assert [len(s) for s in m["layers"][1]["units"][0]["strips"]] == [6] * 4
    assert "sobol" not in m


def test_region_sobol_indices_in_the_manifest(tmp_path, demo, digits):
    import torch

    from stimuli.measures.sobol import region_sobol

    config = StimulusConfig.of(bases=["pca"], n_units=1, completeness=False, sobol_images=12, sobol_grid=2,
                            sobol_n_samples=16, seed=3)
    calls = []
    path = run(config, tmp_path / "a", progress=lambda s, f: calls.append((s, f)))
    m = read_manifest(path)
    so = m["sobol"]
    assert so["grid"] == [2, 2] and so["n_samples"] == 16 and so["n_base"] == 16
    assert so["n_forwards_per_image"] == 16 * (4 + 2) and so["perturbation"] == "inpaint-blur"
    images = so["images"]
    assert len(images) == 12 and len({im["index"] for im in images}) == 12
    # spread over the classes: each of the ten digits before any comes twice
    assert sorted(im["label"] for im in images[:10]) == list(range(10))
    for im in images:
        assert len(im["S1"]) == len(im["ST"]) == 4 and NAME.match(im["image"]) and (path / im["image"]).is_file()
        assert im["interaction_share"] == pytest.approx(1 - sum(im["S1"]), abs=1e-5)
        assert im["image_id"] == digits.image_id(im["index"]) and im["label"] == int(digits.labels[im["index"]])
    shares = [im["interaction_share"] for im in images]
    assert so["interaction_share"]["mean"] == pytest.approx(np.mean(shares), abs=1e-5)
    assert so["interaction_share"]["sd"] == pytest.approx(np.std(shares, ddof=1), abs=1e-5)
    assert so["interaction_share"]["n_images"] == 12
    # the indices are region_sobol's for that image and the network's prediction
    first = images[0]
    x = demo.preprocess(digits.load(first["index"]))
    with torch.no_grad():
        assert first["target_class"] == int(demo.model(x[None]).argmax(1))
    res = region_sobol(demo.model, x, None, grid=2, n_samples=16, second_order=False, seed=3)
    np.testing.assert_allclose(first["S1"], res.S1, atol=2e-6)
    np.testing.assert_allclose(first["ST"], res.ST, atol=2e-6)
    assert ("sobol", 0.0) in calls and ("sobol", 1.0) in calls
    assert [f for s, f in calls if s == "sobol"] == sorted(f for s, f in calls if s == "sobol")
    # the same seed chooses the same images
    again = read_manifest(run(config.replace(sobol_images=3), tmp_path / "b"))["sobol"]["images"]
    assert [im["index"] for im in again] == [im["index"] for im in images[:3]]


def test_stage_timings_in_the_manifest(demo_run):
    from stimuli.artifact import stage_timings

    _, path, _ = demo_run
    timings = stage_timings(read_manifest(path))
    stages = dict(timings.stages)
    # every stage before the manifest is written, in the pipeline's order, even one with nothing to do
    assert list(stages) == [s for s in STAGES if s != "write"]
    assert all(v >= 0 for v in stages.values()) and stages["activations"] > 0 and stages["measures"] > 0
    measures = dict(timings.measures)
    # the demo job computes completeness and the decision measures, both parts of the measures stage
    assert set(measures) >= {"completeness", "decisions"}
    assert sum(measures.values()) <= stages["measures"] + 0.002
    assert timings.total >= sum(stages.values()) - 0.01
