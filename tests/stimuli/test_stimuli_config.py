import json
from pathlib import Path

import pytest

from stimuli.config import StimulusConfig


def test_defaults_run_the_demo():
    c = StimulusConfig()
    assert c.network == "demo" and c.layers == ["conv2"] and c.bases == ["neuron", "pca", "nmf"]
    assert c.n_references == 9 and c.activation == "post_relu"


def test_round_trip_through_json():
    c = StimulusConfig(n_units={"neuron": 2, "pca": 3, "nmf": 4}, seed=7, nmf={"max_iter": 50})
    back = StimulusConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert back.units_for("pca") == 3 and back.nmf_params()["max_iter"] == 50


def test_comma_separated_strings_accepted():
    c = StimulusConfig.from_dict({"layers": "conv1, conv2", "bases": "pca"})
    assert c.layers == ["conv1", "conv2"] and c.bases == ["pca"]


@pytest.mark.parametrize("data, words", [
    ({"bases": ["pca", "ica"]}, "unknown basis 'ica'"),
    ({"bogus": 1}, "unknown configuration key"),
    ({"query_percentile": 80}, "query_percentile"),
    ({"query_bands": [[85, 95], [40, 60]]}, r"query band \[40, 60\] must have 50 <= low < high <= 100"),
    ({"query_bands": [[90, 100], [90, 100]]}, "listed twice"),
    ({"query_bands": [90, 100]}, "a query band is a pair"),
    ({"query_bands": []}, "query_bands must be a non-empty list"),
    ({"n_units": 0}, "n_units"),
    ({"pooling": "median"}, "pooling"),
    ({"activation": "pre_relu"}, "nmf basis needs non-negative"),
    ({"n_units": {"pca": 2}}, "no value for basis"),
    ({"nmf": {"beta": 2}}, "unknown nmf parameter"),
    ({"bases": ["sae"], "sae": {"k": 0}}, "sae.k must be a positive integer"),
    ({"sae": {"topk": 3}}, "unknown sae parameter"),
    ({"sae": {"lr": -1.0}}, "sae.lr must be a positive number"),
    ({"device": "tpu"}, "device"),
    ({"seed": -1}, "seed"),
    ({"n_strips": 0}, "n_strips must be a positive integer"),
    ({"n_strips": 2.5}, "n_strips must be a positive integer"),
    ({"attribution_method": "deeplift"}, "attribution_method must be one of gradcam, saliency, occlusion, lrp"),
    ({"sobol_images": -1}, "sobol_images must be a non-negative integer"),
    ({"sobol_grid": 0}, "sobol_grid must be an integer in"),
    ({"sobol_n_samples": 1}, "sobol_n_samples must be an integer >= 2"),
    ({"sobol_perturbation": "noise"}, "sobol_perturbation must be one of"),
])
def test_validation_messages(data, words):
    with pytest.raises(ValueError, match=words):
        StimulusConfig.from_dict(data)


def test_pre_relu_allowed_without_nmf():
    assert StimulusConfig(activation="pre_relu", bases=["neuron", "pca"]).activation == "pre_relu"


def test_new_options_default_and_round_trip():
    c = StimulusConfig()
    assert c.n_strips == 4 and c.sobol_images == 0 and c.attribution_method == "gradcam"
    c = StimulusConfig(n_strips=2, attribution_method="lrp", sobol_images=5, sobol_grid=3, sobol_n_samples=32,
                       sobol_perturbation="mean")
    assert StimulusConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c



DATA = Path(__file__).resolve().parent.parent / "data" / "stimuli"


def test_stored_demo_job_parameters_still_read():
    """The demo job's stored values and its manifest's parameters (tests/data/stimuli, saved before the
    configuration was split into sections) read back to the same configuration, flat keys and all."""
    values = json.loads((DATA / "demo_job_values.json").read_text())
    stored = json.loads((DATA / "demo_manifest_parameters.json").read_text())
    config = StimulusConfig.from_dict(values)
    from_manifest = StimulusConfig.from_dict({**stored, "network": "demo", "dataset": "digits", "seed": 0})
    assert from_manifest == config
    # keys added since the data was saved write their defaults (a section that is off)
    added = {"query_bands": None, "occlusion": {}}
    assert config.to_dict() == {**stored, **added, "network": "demo", "dataset": "digits", "seed": 0}
    assert config.mis_layer == "relu3" and config.influence_class == 3 and config.attribution_overlays


def test_sections_read_and_write_the_flat_keys():
    from stimuli.config import SECTIONS
    from stimuli.measures.influence import InfluenceSettings
    from stimuli.measures.sobol import SobolSettings

    c = StimulusConfig(influence_class=3, influence_versus=5, sobol_images=2, sobol_grid=3, mis_layer="relu3")
    assert c.influence == InfluenceSettings(class_index=3, versus=5)
    assert c.sobol.grid == 3 and c.sobol.images == 2 and c.mis.layer == "relu3"
    flat = c.to_dict()
    for section in SECTIONS:
        # every field of a section is a flat key of the stored configuration, with the same default
        values = c.section(section).flat()
        assert values == {k: flat[k] for k in values}, section.__name__
        default = section().flat()
        assert default == {k: getattr(StimulusConfig(), k) for k in default}, section.__name__
    assert SobolSettings.from_flat({"sobol_grid": 2}) == SobolSettings(grid=2)


@pytest.mark.parametrize("section, values, words", [
    ("stimuli.measures.sobol.SobolSettings", {"grid": 0}, "sobol_grid must be an integer in"),
    ("stimuli.measures.influence.InfluenceSettings", {"versus": 2}, "influence_versus needs influence_class"),
    ("stimuli.measures.mis.MISSettings", {"alpha": 0}, "mis_alpha must be a positive number"),
    ("stimuli.measures.decisions.DecisionMeasuresSettings", {"surrogate_depth": []}, "surrogate_depth must be"),
])
def test_each_section_validates_itself(section, values, words):
    import importlib

    module, name = section.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    cls().validate()
    with pytest.raises(ValueError, match=words):
        cls(**values).validate()
