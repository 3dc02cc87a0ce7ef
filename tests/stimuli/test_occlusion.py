"""The occlusion pairs (Zimmermann et al. 2021): selection rules, the occluder's drawing, and the demo job's
answer key recomputed from the PNGs on disk with the demo network."""

import json

import numpy as np
import pytest
from PIL import Image

from stimuli.artifact import ManifestError, occlusion_trials, read_manifest
from stimuli.config import StimulusConfig
from stimuli.measures.occlusion import (
    CONTENT_SHARE,
    Box,
    Candidates,
    OcclusionSettings,
    blank_pair,
    content,
    extreme_pair,
    grid,
    occlude,
)


def test_grid_covers_the_image_to_its_far_edge():
    boxes = grid(96, 0.25, 0.125)
    assert len(boxes) == 49 and boxes[0] == Box(0, 0, 24) and boxes[-1] == Box(72, 72, 24)
    # a stride that does not divide the free space still reaches the far edge
    assert grid(100, 0.25, 0.2)[-1] == Box(75, 75, 25)


def test_content_is_zero_over_a_blank_area_and_positive_over_an_edge():
    arr = np.full((96, 96), 255, dtype=np.uint8)
    arr[:, 48:] = 0
    image = Image.fromarray(arr, mode="L")
    shares = content(image, [Box(0, 0, 24), Box(36, 36, 24)])
    assert shares[0] == 0 and shares[1] >= CONTENT_SHARE


def test_an_occluder_whose_fill_does_not_show_gets_an_outline():
    white = Image.fromarray(np.full((96, 96), 255, dtype=np.uint8), mode="L")
    shown = np.asarray(occlude(white, Box(24, 24, 24), "blur"))
    # a blur of white on white: invisible but for the outline drawn on the patch's own border
    assert shown[24, 30] == 0 and shown[36, 36] == 255 and shown[10, 10] == 255 and shown[23, 30] == 255
    half = np.full((96, 96), 255, dtype=np.uint8)
    half[:, :40] = 0
    shown = np.asarray(occlude(Image.fromarray(half, mode="L"), Box(48, 48, 24), "mean"))
    # the mean grey on white shows by itself: no outline
    mean = int(np.rint(half.mean()))
    assert shown[48, 50] == mean and shown[60, 60] == mean and shown[47, 50] == 255


def _candidates(deltas, shares):
    boxes = [Box(0, 0, 10), Box(5, 0, 10), Box(20, 0, 10), Box(40, 0, 10)]
    return Candidates(b"", boxes, [b"%d" % i for i in range(4)], np.array(deltas, float), np.array(shares, float))


def test_the_pair_is_the_extremes_among_covering_positions_not_overlapping():
    # position 1 has the largest effect but covers nothing; 0 is strongest among covering ones; 1 overlaps it
    c = _candidates([0.9, 2.0, -0.5, 0.1], [1.0, 0.1, 1.0, 1.0])
    assert extreme_pair(c) == (0, 3)
    # the catch rule: strongest covering against the blankest position apart from it
    c = _candidates([0.9, 0.0, -0.5, 0.1], [1.0, 0.0, 1.0, 0.2])
    assert blank_pair(c) == (0, 3)


@pytest.mark.parametrize(
    "value, words",
    [
        ({"pairs_per_unit": -1}, "pairs_per_unit"),
        ({"patch": 0.8}, "occlusion.patch"),
        ({"patch": 0.2, "stride": 0.3}, "occlusion.stride"),
        ({"fill": "noise"}, "occlusion.fill"),
        ({"margin": 1.5}, "occlusion.margin"),
        ({"size": 3}, "unknown occlusion key"),
    ],
)
def test_bad_settings_are_refused_by_name(value, words):
    with pytest.raises(ValueError, match=words):
        StimulusConfig.of(occlusion=value)


def test_the_accessor_refuses_an_answer_key_that_contradicts_the_changes():
    entry = {
        "query": "images/q.png",
        "a": "images/a.png",
        "b": "images/b.png",
        "correct": "a",
        "delta_a": -0.1,
        "delta_b": 0.5,
    }
    with pytest.raises(ManifestError, match="larger absolute change"):
        occlusion_trials({"index": 0, "occlusion_trials": [entry]})
    with pytest.raises(ManifestError, match="'delta_b'"):
        occlusion_trials({"index": 0, "occlusion_trials": [{**entry, "correct": "b", "delta_b": None}]})
    assert occlusion_trials({"index": 0}) == []


@pytest.fixture(scope="module")
def occlusion_job(tmp_path_factory, stimuli_cache):
    """The demo job with --occlusion-pairs, through the command line."""
    from stimuli.__main__ import main

    out = tmp_path_factory.mktemp("occlusion") / "demo"
    assert (
        main(
            [
                "generate",
                "--network",
                "demo",
                "--layer",
                "conv2",
                "--bases",
                "neuron,pca,nmf",
                "--units",
                "3",
                "--no-completeness",
                "--occlusion-pairs",
                "3",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_demo_job_answer_key_is_what_the_pngs_on_disk_do_to_the_unit(occlusion_job):
    """Done-when check: the demo network loaded afresh, the bases fitted as the job fits them, and every
    pair's change recomputed from the PNG files: the stored `correct` side has the larger |change|."""
    from stimuli.activations import layer_extractor
    from stimuli.featurevis import DisplayToInput, score_png
    from stimuli.pipeline import fit_bases, load_inputs, read_activations

    manifest = read_manifest(occlusion_job)
    config = StimulusConfig.from_dict(
        {
            **{k: v for k, v in manifest["parameters"].items()},
            "network": "demo",
            "dataset": "digits",
            "seed": manifest["seed"],
        }
    )
    assert config.occlusion.pairs_per_unit == 3
    quiet = lambda *_: None  # noqa: E731
    inputs = load_inputs(config, quiet)
    acts, inputs = read_activations(config, inputs, quiet)
    fitted = fit_bases(config, acts, quiet)
    checked = 0
    for entry in manifest["layers"]:
        layer, basis = entry["layer"], fitted[(entry["layer"], entry["basis"])].basis
        to_input, extractor = DisplayToInput(inputs.net, inputs.images), layer_extractor(inputs.net.model, [layer])
        for unit in entry["units"]:
            pairs = occlusion_trials(unit)
            assert unit["measures"]["occlusion_pairs"] == len(pairs)
            for key in ("occlusion_trials", "occlusion_catch_trials"):
                for pair in occlusion_trials(unit, key):
                    s_query, s_a, s_b = (
                        score_png(
                            inputs.net.model,
                            layer,
                            basis,
                            unit["index"],
                            (occlusion_job / getattr(pair, k)).read_bytes(),
                            to_input,
                            extractor=extractor,
                        )
                        for k in ("query", "a", "b")
                    )
                    delta_a, delta_b = s_a - s_query, s_b - s_query
                    assert delta_a == pytest.approx(pair.delta_a, abs=1e-5)
                    assert delta_b == pytest.approx(pair.delta_b, abs=1e-5)
                    larger = "a" if abs(delta_a) > abs(delta_b) else "b"
                    assert larger == pair.correct, (entry["basis"], unit["index"], pair)
                    checked += 1
    # every basis yields pairs on the demo (not a check that passes by having nothing to check)
    assert checked >= 9
    assert all(any(u["occlusion_trials"] for u in e["units"]) for e in manifest["layers"])


def test_pairs_are_kept_only_past_the_margin_and_files_say_nothing_of_the_role(occlusion_job):
    manifest = read_manifest(occlusion_job)
    margin = manifest["parameters"]["occlusion"]["margin"]
    sides = set()
    for entry in manifest["layers"]:
        for unit in entry["units"]:
            span = unit["measures"]["occlusion_score_range"]
            for pair in occlusion_trials(unit):
                assert pair.margin >= margin * span
                assert pair.a != pair.b and pair.query not in (pair.a, pair.b)
                for name in (pair.a, pair.b, pair.query):
                    assert name.startswith("images/") and len(name) == len("images/") + 20 + len(".png")
                sides.add(pair.correct)
    # sides are drawn: both occur
    assert sides == {"a", "b"}
    assert json.dumps(manifest["parameters"]["occlusion"]) == json.dumps(OcclusionSettings(pairs_per_unit=3).to_dict())
