import json
from pathlib import Path

import pytest

from stimuli.artifact import (
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    ArtifactWriter,
    ManifestError,
    build_manifest,
    read_manifest,
    validate_manifest,
)
from stimuli.render import content_name, png_bytes


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_exception_mid_write_leaves_nothing(tmp_path):
    out = tmp_path / "art"
    from PIL import Image

    with pytest.raises(RuntimeError), ArtifactWriter(out) as w:
        w.add_image(png_bytes(Image.new("L", (4, 4), 3)))
        raise RuntimeError("crash while rendering")
    assert not out.exists()
    assert _siblings(out) == []


def test_commit_and_read(tmp_path):
    from PIL import Image

    out = tmp_path / "art"
    with ArtifactWriter(out) as w:
        data = png_bytes(Image.new("RGB", (5, 5), (1, 2, 3)))
        name = w.add_image(data)
        assert w.add_image(data) == name and w.n_images == 1
        w.commit({"schema_version": 1, "layers": []})
    assert (out / name).read_bytes() == data
    assert name == content_name(data) and len(name) == len("images/") + 20 + len(".png")
    assert read_manifest(out)["schema_version"] == 1
    assert _siblings(out) == ["art"]


def test_existing_folder_refused_unless_overwrite(tmp_path):
    out = tmp_path / "art"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), ArtifactWriter(out):
        pass
    with ArtifactWriter(out, overwrite=True) as w:
        w.commit({"schema_version": 1})
    assert not (out / "old.txt").exists() and (out / "manifest.json").exists()
    assert _siblings(out) == ["art"]


def test_unknown_schema_version_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ValueError, match="schema_version"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="no stimulus manifest"):
        read_manifest(tmp_path / "missing")


def test_png_bytes_are_stable():
    from PIL import Image

    a = png_bytes(Image.new("L", (8, 8), 100))
    b = png_bytes(Image.new("L", (8, 8), 100))
    assert a == b and a[:8] == b"\x89PNG\r\n\x1a\n"


def _layer(**changes):
    return {"layer": "layer3.1.add", "basis": "pca", "units": [{"index": 2, "measures": {}}], **changes}


def test_the_manifest_is_built_and_validated_in_one_place(tmp_path):
    import datetime as dt

    created = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    m = build_manifest(network={"name": "demo"}, dataset={"name": "digits"}, seed=3, parameters={"n_units": 1},
                       layers=[_layer()], n_images_rendered=0, device="cpu", created=created)
    assert list(m) == ["schema_version", "created", "network", "dataset", "seed", "parameters", "versions",
                       "device", "n_images_rendered", "layers"]
    assert m["schema_version"] == SCHEMA_VERSION == SCHEMA_VERSIONS[-1] and m["created"] == "2026-11-23T09:00:00Z"
    assert {"stimuli", "torch", "torchvision", "scikit-learn", "numpy", "pillow"} <= set(m["versions"])
    with_sobol = build_manifest(network={}, dataset={}, seed=0, parameters={}, layers=[], n_images_rendered=0,
                                device="cuda:0", device_name="H200", sobol={"images": []})
    assert list(with_sobol)[-2:] == ["sobol", "device_name"]
    for broken in ({"schema_version": 1}, {"schema_version": 1, "layers": [_layer(units=None)]},
                   {"schema_version": 1, "layers": [_layer(basis=None)]},
                   {"schema_version": 1, "layers": [_layer(units=[{"measures": {}}])]}, [1]):
        with pytest.raises(ManifestError):
            validate_manifest(broken)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(tmp_path / "manifest.json")


DEMO_SUMMARY = Path(__file__).resolve().parent.parent / "data" / "stimuli" / "demo_manifest_without_units.json"


def test_typed_reads_of_a_stored_demo_manifest():
    from stimuli.artifact import figure_files, layer_summaries

    manifest = json.loads(DEMO_SUMMARY.read_text())
    summaries = layer_summaries(manifest)
    assert [(s.layer, s.basis) for s in summaries] == [("conv2", "neuron"), ("conv2", "pca"), ("conv2", "nmf")]
    pca = summaries[1]
    entry = manifest["layers"][1]
    assert pca.n_components == entry["n_components"] == 32
    assert pca.cumulative_explained_variance == tuple(entry["cumulative_explained_variance"])
    assert pca.influence_concentration == tuple(entry["influence_concentration"])
    assert pca.completeness.k == tuple(entry["completeness"]["k"]) and pca.completeness_error is None
    assert pca.decisions_error is None
    figures = figure_files(manifest)
    assert figures and all(f.file.startswith("figures/") and f.file.endswith(".svg") for f in figures)


@pytest.mark.parametrize("drop, words", [
    (("layers", 0, "cumulative_explained_variance"), "has no 'cumulative_explained_variance'"),
    (("layers", 2, "n_components"), r"layer entry 2 \(conv2/nmf\) has no 'n_components'"),
    (("layers", 1, "completeness", "accuracy"), "completeness has no 'accuracy'"),
    (("figures", 0, "file"), "figure 0 has no 'file'"),
])
def test_a_missing_key_fails_loudly(drop, words):
    from stimuli.artifact import figure_files, layer_summaries

    manifest = json.loads(DEMO_SUMMARY.read_text())
    *path, key = drop
    node = manifest
    for step in path:
        node = node[step]
    del node[key]
    with pytest.raises(ManifestError, match=words):
        layer_summaries(manifest)
        figure_files(manifest)


def test_measures_not_asked_for_read_as_none():
    from stimuli.artifact import layer_summaries

    manifest = json.loads(DEMO_SUMMARY.read_text())
    for key in ("influence_concentration", "completeness"):
        del manifest["layers"][0][key]
    manifest["layers"][0]["completeness_error"] = "completeness needs hooks"
    first = layer_summaries(manifest)[0]
    assert first.influence_concentration is None and first.completeness is None
    assert first.completeness_error == "completeness needs hooks"


SOBOL = {"grid": [2, 2], "regions": "grid", "n_samples": 16,
         "interaction_share": {"mean": 0.1, "median": 0.1, "sd": 0.3, "n_images": 2},
         "images": [{"image": "images/a.png", "target_class": 0, "interaction_share": -0.1, "ST": [0.1, 0.0, 0.2, 0.3]},
                    {"image": "images/b.png", "target_class": 7, "interaction_share": 0.3, "ST": [0.5, 0.1, 0.0, 0.2]}]}


def test_typed_reads_of_the_region_sobol_entry():
    from stimuli.artifact import sobol_summary

    manifest = {**json.loads(DEMO_SUMMARY.read_text()), "sobol": SOBOL}
    sobol = sobol_summary(manifest)
    assert sobol.grid == (2, 2) and sobol.n_samples == 16 and sobol.n_images == 2
    assert (sobol.share_mean, sobol.share_median, sobol.share_sd) == (0.1, 0.1, 0.3)
    assert [(i.image, i.target_class, i.interaction_share) for i in sobol.images] == \
        [("images/a.png", 0, -0.1), ("images/b.png", 7, 0.3)]
    assert sobol.images[1].ST == (0.5, 0.1, 0.0, 0.2)
    assert sobol_summary({**manifest, "sobol": {**SOBOL, "grid": None}}).grid is None
    # a job that asked for no region indices has no entry
    assert sobol_summary(json.loads(DEMO_SUMMARY.read_text())) is None


@pytest.mark.parametrize("drop, words", [
    (("grid",), "has no 'grid'"),
    (("n_samples",), "has no 'n_samples'"),
    (("interaction_share", "sd"), "interaction_share has no 'sd'"),
    (("images", 1, "ST"), "image 1 has no 'ST'"),
    (("images", 0, "target_class"), "image 0 has no 'target_class'"),
])
def test_a_missing_sobol_key_fails_loudly(drop, words):
    import copy

    from stimuli.artifact import sobol_summary

    sobol = copy.deepcopy(SOBOL)
    *path, key = drop
    node = sobol
    for step in path:
        node = node[step]
    del node[key]
    with pytest.raises(ManifestError, match=words):
        sobol_summary({"sobol": sobol})


def test_the_parameters_read_back_as_the_configuration():
    from stimuli.artifact import job_parameters
    from stimuli.config import StimulusConfig

    manifest = json.loads(DEMO_SUMMARY.read_text())
    parameters = job_parameters(manifest)
    config = StimulusConfig.from_dict({**parameters, "seed": manifest["seed"]})
    assert config.mis.layer == "relu3" and config.selection.units_for("pca") == 6
    with pytest.raises(ManifestError, match="has no 'parameters'"):
        job_parameters({k: v for k, v in manifest.items() if k != "parameters"})


def test_query_bands_of_a_stored_demo_manifest_and_of_one_with_bands():
    from stimuli.artifact import query_bands

    manifest = json.loads(DEMO_SUMMARY.read_text())
    # saved before jobs rendered several bands: its one band is its query_percentile's
    assert "query_bands" not in manifest["parameters"]
    assert query_bands(manifest) == [(100.0 - manifest["parameters"]["query_percentile"], 100.0)]
    manifest["parameters"]["query_bands"] = [[90, 100], [85, 95]]
    assert query_bands(manifest) == [(90.0, 100.0), (85.0, 95.0)]
    manifest["parameters"]["query_bands"] = [[30, 40]]
    with pytest.raises(ManifestError, match=r"query band \[30, 40\] must have 50 <= low"):
        query_bands(manifest)
    del manifest["parameters"]["query_bands"], manifest["parameters"]["query_percentile"]
    with pytest.raises(ManifestError, match="has no 'query_percentile'"):
        query_bands(manifest)


def test_query_candidates_with_and_without_percentiles():
    from stimuli.artifact import query_candidates

    unit = {"index": 0, "queries_max": ["a.png", "b.png"], "queries_min": ["c.png", "d.png"]}
    old = query_candidates(unit)
    assert old.queries_max == ("a.png", "b.png") and old.max_percentiles is None and old.min_percentiles is None
    unit.update(queries_max_percentile=[99.5, 91.0], queries_min_percentile=[0.5, 9.0])
    new = query_candidates(unit)
    assert new.max_percentiles == (99.5, 91.0) and new.min_percentiles == (0.5, 9.0)
    unit["queries_min_percentile"] = [0.5]
    with pytest.raises(ManifestError, match="'queries_min_percentile' has 1 values for 2 queries_min"):
        query_candidates(unit, "unit conv2:pca:0")
    del unit["queries_min_percentile"]
    with pytest.raises(ManifestError, match="one side only"):
        query_candidates(unit)


TIMINGS = {"stages": {"network": 0.5, "activations": 2.0, "measures": 3.25}, "measures": {"decisions": 1.0},
           "total": 6.0}


def test_typed_reads_of_the_stage_timings():
    from stimuli.artifact import stage_timings

    manifest = json.loads(DEMO_SUMMARY.read_text())
    assert stage_timings({k: v for k, v in manifest.items() if k != "timings"}) is None
    timings = stage_timings({**manifest, "timings": TIMINGS})
    assert timings.stages == (("network", 0.5), ("activations", 2.0), ("measures", 3.25))
    assert timings.measures == (("decisions", 1.0),) and timings.total == 6.0


@pytest.mark.parametrize("change, words", [
    (lambda t: t.pop("stages"), "timings has no 'stages'"),
    (lambda t: t.pop("total"), "timings has no 'total'"),
    (lambda t: t["stages"].update(render="2 s"), "'stages' must be a list of numbers"),
])
def test_malformed_stage_timings_fail_loudly(change, words):
    import copy

    from stimuli.artifact import stage_timings

    timings = copy.deepcopy(TIMINGS)
    change(timings)
    with pytest.raises(ManifestError, match=words):
        stage_timings({"timings": timings})
