import json
from pathlib import Path

import pytest

from stimuli.config import StimulusConfig


def test_defaults_run_the_demo():
    c = StimulusConfig()
    assert c.network.name == "demo" and c.activations.layers == ["conv2"] and c.bases.names == ["neuron", "pca", "nmf"]
    assert c.exemplars.n_references == 9 and c.activations.activation == "post_relu"


def test_round_trip_through_json():
    c = StimulusConfig.of(n_units={"neuron": 2, "pca": 3, "nmf": 4}, seed=7, nmf={"max_iter": 50})
    back = StimulusConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert back == c
    assert back.selection.units_for("pca") == 3 and back.bases.params["nmf"]["max_iter"] == 50


def test_comma_separated_strings_accepted():
    c = StimulusConfig.from_dict({"layers": "conv1, conv2", "bases": "pca"})
    assert c.activations.layers == ["conv1", "conv2"] and c.bases.names == ["pca"]


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
    assert StimulusConfig.of(activation="pre_relu", bases=["neuron", "pca"]).activations.activation == "pre_relu"


def test_new_options_default_and_round_trip():
    c = StimulusConfig()
    assert c.exemplars.n_strips == 4 and c.sobol.images == 0 and c.attribution.method == "gradcam"
    c = StimulusConfig.of(n_strips=2, attribution_method="lrp", sobol_images=5, sobol_grid=3, sobol_n_samples=32,
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
    added = {"query_bands": None, "occlusion": {}, "checkpoint": None, "batchtopk": {}, "jumprelu": {},
             "archetypal": {}}
    assert config.to_dict() == {**stored, **added, "network": "demo", "dataset": "digits", "seed": 0}
    assert config.mis.layer == "relu3" and config.influence.class_index == 3 and config.attribution.overlays


def test_sections_read_and_write_the_flat_keys():
    from stimuli.config import SECTIONS
    from stimuli.measures.influence import InfluenceSettings
    from stimuli.measures.sobol import SobolSettings

    c = StimulusConfig.of(influence_class=3, influence_versus=5, sobol_images=2, sobol_grid=3, mis_layer="relu3")
    assert c.influence == InfluenceSettings(class_index=3, versus=5)
    assert c.sobol.grid == 3 and c.sobol.images == 2 and c.mis.layer == "relu3"
    flat = c.to_dict()
    default_flat = StimulusConfig().to_dict()
    seen: list[str] = []
    for name, section in SECTIONS.items():
        # every field of a section is a flat key of the stored configuration, with the same default
        values = getattr(c, name).flat()
        assert values == {k: flat[k] for k in values}, name
        assert section().flat() == {k: default_flat[k] for k in values}, name
        seen += values
    # the sections' keys are disjoint and, with the seed, make up the whole flat form
    assert sorted(seen + ["seed"]) == sorted(flat) and len(seen) == len(set(seen))
    assert SobolSettings.from_flat({"sobol_grid": 2}) == SobolSettings(grid=2)


def test_every_flat_key_of_the_sections_takes_a_value_and_gives_it_back():
    """The one conversion, field by field: a non-default value under each flat key lands in its section's
    field and comes back under the same key."""
    changed = {"network": "resnet18", "weights": "DEFAULT", "dataset": "/data/imgs", "max_images": 50,
               "layers": ["layer1.0.add"], "pooling": "max", "bases": ["neuron", "pca"], "n_components": 8,
               "unit_selection": "random", "n_units": 3, "n_queries": 5, "render_size": 64, "figures": False,
               "completeness": False, "completeness_k": [1, 2], "influence_class": 1, "influence_distribution": "all",
               "mis_layer": "avgpool", "attribution_method": "lrp", "sobol_regions": "superpixels",
               "essence_k": [1, 3], "surrogate_depth": [2], "feature_vis": {"method": "maco", "steps": 3}}
    c = StimulusConfig.from_dict(changed)
    assert (c.network.name, c.network.weights, c.dataset.name, c.dataset.max_images) == \
        ("resnet18", "DEFAULT", "/data/imgs", 50)
    assert (c.activations.layers, c.activations.pooling, c.bases.names, c.bases.components_for("pca")) == \
        (["layer1.0.add"], "max", ["neuron", "pca"], 8)
    assert (c.selection.method, c.selection.units_for("pca"), c.exemplars.n_queries, c.render.size) == \
        ("random", 3, 5, 64)
    assert not c.render.figures and not c.completeness.enabled and c.completeness.k == [1, 2]
    assert (c.influence.class_index, c.influence.distribution, c.mis.layer, c.attribution.method) == \
        (1, "all", "avgpool", "lrp")
    assert c.sobol.regions == "superpixels" and c.decisions.essence_k == [1, 3] and c.decisions.surrogate_depth == [2]
    assert c.feature_vis.enabled and (c.feature_vis.method, c.feature_vis.steps) == ("maco", 3)
    back = c.to_dict()
    assert {k: back[k] for k in changed if k != "feature_vis"} == \
        {k: v for k, v in changed.items() if k != "feature_vis"}
    # feature_vis comes back as the full mapping, its defaults filled in (as the manifest has always stored it)
    assert back["feature_vis"] == {"method": "maco", "steps": 3, "lr": 0.1, "image_size": None, "seed": 0}
    assert StimulusConfig.from_dict(back) == c
    assert c.replace(n_queries=7).exemplars.n_queries == 7


def test_library_functions_take_their_section():
    """A section is built and validated on its own, with plain parameters, without a whole configuration."""
    from stimuli.measures.decisions import DecisionMeasuresSettings, wanted
    from stimuli.settings.bases import BasisSettings

    assert not wanted(DecisionMeasuresSettings(essence=False, ablation=False, surrogate=False, label_entropy_top_n=0))
    assert BasisSettings(n_components={"pca": 4}).components_for("pca") == 4
    assert BasisSettings(n_components={"pca": 4}).components_for("nmf") is None


@pytest.mark.parametrize("section, values, words", [
    ("stimuli.measures.sobol.SobolSettings", {"grid": 0}, "sobol_grid must be an integer in"),
    ("stimuli.measures.influence.InfluenceSettings", {"versus": 2}, "influence_versus needs influence_class"),
    ("stimuli.measures.mis.MISSettings", {"alpha": 0}, "mis_alpha must be a positive number"),
    ("stimuli.measures.decisions.DecisionMeasuresSettings", {"surrogate_depth": []}, "surrogate_depth must be"),
    ("stimuli.settings.network.NetworkSettings", {"device": "tpu"}, "device must be"),
    ("stimuli.datasets.DatasetSettings", {"max_images": 0}, "max_images must be a positive integer"),
    ("stimuli.settings.activations.ActivationSettings", {"layers": []}, "layers must be a non-empty list"),
    ("stimuli.settings.bases.BasisSettings", {"names": ["pca", "pca"]}, "bases are repeated"),
    ("stimuli.selection.SelectionSettings", {"method": "best"}, "unit_selection must be one of"),
    ("stimuli.exemplars.ExemplarSettings", {"query_percentile": 60}, "query_percentile must be in"),
    ("stimuli.render.RenderSettings", {"size": 4}, "render_size must be null or an integer"),
    ("stimuli.settings.completeness.CompletenessSettings", {"k": [0]}, "completeness_k must be null"),
    ("stimuli.settings.attribution.AttributionSettings", {"method": "deeplift"}, "attribution_method must be one of"),
    ("stimuli.settings.featurevis.FeatureVisSettings", {"steps": 0}, "feature_vis.steps must be a positive"),
])
def test_each_section_validates_itself(section, values, words):
    import importlib

    module, name = section.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    cls().validate()
    with pytest.raises(ValueError, match=words):
        cls(**values).validate()


def test_importing_the_configuration_loads_no_heavy_library():
    """The web app's job form imports stimuli.config: the sections it gathers live in modules that load
    neither torch nor scikit-learn nor SciPy (stimuli/settings/ holds those of the algorithms that do)."""
    import subprocess
    import sys

    heavy = ("torch", "torchvision", "sklearn", "scipy")
    script = f"import sys, stimuli.config; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
