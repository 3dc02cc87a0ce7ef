import json

import pytest

from stimuli.__main__ import main
from stimuli.artifact import read_manifest


def test_generate_with_flags(tmp_path, capsys):
    out = tmp_path / "a"
    rc = main(["generate", "--network", "demo", "--layer", "conv2", "--bases", "neuron,pca", "--units", "2",
               "--no-completeness", "--quiet", "--out", str(out)])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    m = read_manifest(out)
    assert [e["basis"] for e in m["layers"]] == ["neuron", "pca"]
    assert all(len(e["units"]) == 2 and e["completeness"] is None for e in m["layers"])


def test_flags_override_config_file(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"bases": ["pca"], "n_units": 4, "seed": 3, "completeness": False}))
    out = tmp_path / "b"
    assert main(["generate", str(cfg), "--units", "1", "--quiet", "--out", str(out)]) == 0
    m = read_manifest(out)
    assert m["seed"] == 3 and len(m["layers"][0]["units"]) == 1


def test_friendly_errors(tmp_path, capsys):
    assert main(["generate", "--bases", "ica", "--quiet", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown basis") and "\n" not in err
    assert main(["generate", str(tmp_path / "missing.json"), "--out", str(tmp_path / "y")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["generate", "--layer", "nope", "--quiet", "--out", str(tmp_path / "z")]) == 2
    assert "unknown layer" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_layers(capsys):
    assert main(["layers", "--network", "demo"]) == 0
    assert "conv2" in capsys.readouterr().out.split()


def test_generate_with_strips_lrp_overlays_and_sobol(tmp_path):
    out = tmp_path / "c"
    assert main(["generate", "--bases", "pca", "--units", "1", "--no-completeness", "--strips", "2",
                 "--attribution", "lrp", "--sobol-images", "2", "--sobol-grid", "2", "--sobol-samples", "8",
                 "--quiet", "--out", str(out)]) == 0
    m = read_manifest(out)
    entry = m["layers"][0]
    unit = entry["units"][0]
    assert entry["attribution_method"] == "lrp" and len(unit["attribution_overlays_max"]) == 9
    assert all((out / f).is_file() for f in unit["attribution_overlays_max"])
    assert len(unit["strips"]) == 2 and m["parameters"]["n_strips"] == 2
    assert m["sobol"]["grid"] == [2, 2] and len(m["sobol"]["images"]) == 2 and m["sobol"]["n_base"] == 8


def test_generate_with_machine_score_selection(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["generate", "--layer", "conv1", "--bases", "pca", "--units", "2", "--no-completeness",
                 "--unit-selection", "mis_spread", "--mis-layer", "relu3", "--mis-candidates", "6",
                 "--quiet", "--out", str(out)]) == 0
    entry = read_manifest(out)["layers"][0]
    assert entry["selection"]["by"] == "mis_spread" and entry["selection"]["candidates"] == [0, 1, 2, 3, 4, 5]
    scores = entry["selection"]["scores"]
    assert [u["measures"]["mis"] for u in entry["units"]] == [max(scores), min(scores)]
    assert main(["generate", "--unit-selection", "mis_top", "--quiet", "--out", str(tmp_path / "e")]) == 2
    assert "needs mis_layer" in capsys.readouterr().err


def test_feature_vis_flags(tmp_path):
    from stimuli.__main__ import _config, _parser

    cfg = tmp_path / "fv.json"
    cfg.write_text(json.dumps({"feature_vis": {"lr": 0.2, "seed": 5}}))
    config = _config(_parser().parse_args(["generate", str(cfg), "--feature-vis", "maco", "--feature-vis-steps", "16",
                                           "--out", str(tmp_path / "o")]))
    assert config.feature_vis.enabled
    assert config.feature_vis.params() == {"method": "maco", "steps": 16, "lr": 0.2, "image_size": None, "seed": 5}
    assert not _config(_parser().parse_args(["generate", "--out", str(tmp_path / "p")])).feature_vis.enabled


def test_the_generate_help_names_every_basis_and_option(capsys):
    """The help is made from the modules that own the choices, so it cannot drift from them (it once
    left out `sae`)."""
    from stimuli.activations import ACTIVATIONS, POOLINGS
    from stimuli.bases import basis_names
    from stimuli.measures.attribution import METHODS
    from stimuli.measures.sobol import PERTURBATIONS, REGIONS
    from stimuli.selection import UNIT_SELECTIONS

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"comma separated, among: {', '.join(basis_names())}" in text and "sae" in basis_names()
    for options in (ACTIVATIONS, POOLINGS, METHODS, PERTURBATIONS, REGIONS, UNIT_SELECTIONS):
        assert "{" + ",".join(options) + "}" in text, options
    # the configuration sections' flags are made from their fields
    from stimuli.config import SECTIONS
    from stimuli.sections import flag_fields

    for section in SECTIONS.values():
        for name, spec in flag_fields(section).items():
            for flag in spec["flags"] or ("--" + section.key(name).replace("_", "-"),):
                assert flag in text, (section.__name__, name)


def test_every_generate_flag_sets_its_flat_key(tmp_path):
    """The flags the README shows, read through the sections: each lands on the flat key it always set,
    over the configuration file's value."""
    from stimuli.__main__ import _config, _parser

    cfg = tmp_path / "job.json"
    cfg.write_text(json.dumps({"n_queries": 3, "sobol_grid": 3, "mis_layer": "fc1", "seed": 4}))
    args = ["generate", str(cfg), "--out", str(tmp_path / "o"), "--network", "demo", "--layer", "conv1,conv2",
            "--bases", "neuron,pca", "--units", "2", "--components", "5", "--max-images", "100", "--seed", "3",
            "--pooling", "max", "--selection", "random", "--queries", "4", "--percentile", "20", "--strips", "2",
            "--query-bands", "90-100,80-90",
            "--attribution", "lrp", "--sobol-images", "2", "--sobol-samples", "32", "--sobol-second-order",
            "--no-completeness", "--offline", "--batch-size", "64", "--device", "cpu"]
    flat = _config(_parser().parse_args(args)).to_dict()
    expected = {"network": "demo", "layers": ["conv1", "conv2"], "bases": ["neuron", "pca"], "n_units": 2,
                "n_components": 5, "max_images": 100, "seed": 3, "pooling": "max", "unit_selection": "random",
                "n_queries": 4, "query_percentile": 20.0, "query_bands": [[90.0, 100.0], [80.0, 90.0]],
                "n_strips": 2, "attribution_method": "lrp",
                "attribution_overlays": True, "sobol_images": 2, "sobol_n_samples": 32, "sobol_second_order": True,
                "completeness": False, "allow_download": False, "batch_size": 64, "device": "cpu",
                # from the file, no flag given
                "sobol_grid": 3, "mis_layer": "fc1"}
    assert {k: flat[k] for k in expected} == expected


def test_generate_with_query_bands(tmp_path, capsys):
    from stimuli.artifact import query_bands, query_candidates

    out = tmp_path / "bands"
    assert main(["generate", "--bases", "neuron", "--units", "2", "--queries", "5", "--query-bands",
                 "90-100,80-90", "--no-completeness", "--quiet", "--out", str(out)]) == 0
    m = read_manifest(out)
    assert m["parameters"]["query_bands"] == [[90.0, 100.0], [80.0, 90.0]]
    assert query_bands(m) == [(90.0, 100.0), (80.0, 90.0)]
    for unit in m["layers"][0]["units"]:
        candidates = query_candidates(unit)
        assert len(candidates.queries_max) == len(candidates.queries_min) == 10
        for b, (low, high) in enumerate(query_bands(m)):
            assert all(low < p <= high for p in candidates.max_percentiles[5 * b:5 * b + 5])
            assert all(100 - high <= p < 100 - low for p in candidates.min_percentiles[5 * b:5 * b + 5])
    with pytest.raises(SystemExit) as exited:
        main(["generate", "--query-bands", "90-100,85", "--quiet", "--out", str(tmp_path / "x")])
    assert exited.value.code == 2 and "'85' is not a band LOW-HIGH" in capsys.readouterr().err
