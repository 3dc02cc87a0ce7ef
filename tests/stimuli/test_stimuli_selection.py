"""Unit selection by a per-unit score (select_by_score) against planted scores, and the pipeline's
mis_top / mis_bottom / mis_spread selection on the demo network against its own recorded candidates."""
import numpy as np
import pytest

from stimuli.artifact import read_manifest
from stimuli.config import StimulusConfig
from stimuli.pipeline import STAGES, run
from stimuli.selection import select_by_score, select_units

UNIT_KEYS = ("references_max", "references_min", "queries_max", "queries_min", "strips")


def test_top_and_bottom_are_the_highest_and_lowest_ranked():
    scores = np.array([0.61, 0.93, 0.50, 0.77, 0.55, 0.88, 0.70])
    assert select_by_score(scores, 3, "top").tolist() == [1, 5, 3]
    assert select_by_score(scores, 3, "bottom").tolist() == [2, 4, 0]
    assert select_by_score(scores, 1, "top").dtype == np.int64


def test_spread_takes_evenly_spaced_scores_from_the_highest_to_the_lowest():
    # eleven scores 0.0, 0.1, …, 1.0 in a planted order: six evenly spaced targets hit 1.0, 0.8, …, 0.0
    values = np.round(np.linspace(0, 1, 11), 2)
    order = np.random.default_rng(0).permutation(11)
    scores = values[order]
    picked = select_by_score(scores, 6, "spread")
    assert scores[picked].tolist() == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0]
    # clustered scores: the middle target takes the score nearest the middle of the range, not a rank
    scores = np.array([0.90, 0.10, 0.52, 0.12, 0.14, 0.13, 0.89, 0.11])
    # (evenly spaced ranks would have taken 0.13 for the middle)
    assert select_by_score(scores, 3, "spread").tolist() == [0, 2, 1]
    # one unit: the one nearest the middle of the range
    assert select_by_score(scores, 1, "spread").tolist() == [2]


@pytest.mark.parametrize("seed", range(5))
def test_spread_is_distinct_ranked_and_spans_the_range(seed):
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 5, size=40)
    picked = select_by_score(scores, 7, "spread")
    assert len(set(picked.tolist())) == 7
    assert np.all(np.diff(scores[picked]) <= 0)
    assert picked[0] == np.argmax(scores) and picked[-1] == np.argmin(scores)
    assert select_by_score(scores, 40, "spread").tolist() == np.argsort(-scores).tolist()


def test_ties_go_by_position():
    scores = [0.5, 0.7, 0.7, 0.5, 0.6]
    assert select_by_score(scores, 1, "top").tolist() == [1]
    assert select_by_score(scores, 2, "top").tolist() == [1, 2]
    assert select_by_score(scores, 2, "bottom").tolist() == [0, 3]
    # spread over [0.7, 0.5]: the first of the equal maxima and minima, then the middle
    assert select_by_score(scores, 3, "spread").tolist() == [1, 4, 0]
    assert select_by_score([0.5] * 4, 2, "spread").tolist() == [0, 1]


@pytest.mark.parametrize("how, expected", [("top", [3, 0, 4, 1]), ("bottom", [1, 4, 0, 3]),
                                           ("spread", [3, 0, 4, 1])])
def test_more_than_the_scored_returns_all_scored_and_never_a_nan(how, expected):
    scores = [0.6, 0.2, float("nan"), 0.9, 0.4]
    assert select_by_score(scores, 10, how).tolist() == expected
    assert select_by_score(scores, 4, how).tolist() == expected
    assert 2 not in select_by_score(scores, 3, how).tolist()
    assert select_by_score([float("nan")] * 3, 2, how).tolist() == []


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown score order 'middle'"):
        select_by_score([0.5], 1, "middle")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        select_by_score([0.5], 0, "top")
    with pytest.raises(ValueError, match="needs the candidates' scores"):
        select_units([0.5, 0.5], 1, "mis_top")


@pytest.mark.parametrize("data, words", [
    ({"unit_selection": "mis_top"}, "unit_selection 'mis_top' needs mis_layer"),
    ({"unit_selection": "mis_spread", "mis_layer": "relu3", "n_queries": 0}, "needs n_queries >= 1"),
    ({"mis_candidates": 0}, "mis_candidates must be a positive integer"),
    ({"mis_candidates": 2.5}, "mis_candidates must be a positive integer"),
    ({"unit_selection": "mis_bottom", "mis_layer": "relu3", "n_units": {"neuron": 2, "pca": 5, "nmf": 1},
      "mis_candidates": 4}, r"mis_candidates \(4\) must be at least n_units \(5\)"),
])
def test_config_validation(data, words):
    with pytest.raises(ValueError, match=words):
        StimulusConfig.from_dict(data)


def test_config_defaults_and_round_trip():
    assert StimulusConfig().mis.candidates == 64
    c = StimulusConfig.of(unit_selection="mis_spread", mis_layer="relu3", mis_candidates=8)
    assert StimulusConfig.from_dict(c.to_dict()) == c
    # mis_candidates below n_units only matters to a mis_* selection
    assert StimulusConfig.of(n_units=6, mis_candidates=2).mis.candidates == 2


@pytest.fixture(scope="module")
def selection_runs(tmp_path_factory, stimuli_cache):
    """conv1 (16 channels) of the demo network: the machine-score selections, and the non-selecting path
    giving the top 8 units by variance their exemplars and scores, to compare against."""
    base = StimulusConfig.of(layers=["conv1"], bases=["neuron", "pca"], n_units=3, completeness=False,
                          mis_layer="relu3", mis_candidates=8)
    out = tmp_path_factory.mktemp("selection")
    runs = {}
    for how in ("mis_top", "mis_bottom", "mis_spread"):
        calls = []
        path = run(base.replace(unit_selection=how), out / how, progress=lambda s, f, calls=calls: calls.append((s, f)))
        runs[how] = (read_manifest(path), calls)
    plain = run(base.replace(unit_selection="top_variance", n_units=8), out / "plain")
    runs["plain"] = (read_manifest(plain), None)
    return runs


@pytest.mark.parametrize("how", ["mis_top", "mis_bottom", "mis_spread"])
def test_pipeline_chooses_by_the_recorded_candidate_scores(selection_runs, how):
    manifest, calls = selection_runs[how]
    plain = {e["basis"]: e for e in selection_runs["plain"][0]["layers"]}
    assert manifest["parameters"]["unit_selection"] == how and manifest["parameters"]["mis_candidates"] == 8
    for entry in manifest["layers"]:
        sel = entry["selection"]
        assert set(sel) == {"by", "candidates", "scores"} and sel["by"] == how
        # the candidates are the 8 units of highest explained variance, in that order
        reference = plain[entry["basis"]]["units"]
        assert sel["candidates"] == [u["index"] for u in reference]
        # and each one's score is the MIS the non-selecting path gives the same unit
        assert sel["scores"] == [u["measures"]["mis"] for u in reference]
        scores = np.array(sel["scores"])
        chosen = [u["measures"]["mis"] for u in entry["units"]]
        assert len(chosen) == 3
        if how == "mis_top":
            assert chosen == sorted(scores, reverse=True)[:3]
        elif how == "mis_bottom":
            assert chosen == sorted(scores)[:3]
        else:
            assert chosen[0] == scores.max() and chosen[-1] == scores.min() and chosen == sorted(chosen, reverse=True)
            middle = (scores.max() + scores.min()) / 2
            others = np.delete(scores, [scores.argmax(), scores.argmin()])
            assert abs(chosen[1] - middle) == pytest.approx(np.abs(others - middle).min())
        # a chosen unit is a candidate with its own score, exemplars and measures as if chosen any other way
        by_index = {u["index"]: u for u in reference}
        for u in entry["units"]:
            assert u["measures"]["mis"] == sel["scores"][sel["candidates"].index(u["index"])]
            same = by_index[u["index"]]
            assert u["measures"] == same["measures"]
            assert all(u[k] == same[k] for k in UNIT_KEYS)
    stages = [s for s, _ in calls]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == list(STAGES)
    exemplar_progress = [f for s, f in calls if s == "exemplars"]
    assert exemplar_progress == sorted(exemplar_progress) and len(exemplar_progress) > 2 * 8


def test_the_other_selections_record_no_selection(selection_runs):
    assert all("selection" not in e for e in selection_runs["plain"][0]["layers"])


def test_a_basis_with_fewer_components_than_candidates_scores_them_all(tmp_path, stimuli_cache):
    config = StimulusConfig.of(layers=["conv1"], bases=["pca"], n_components=5, n_units=2, completeness=False,
                            mis_layer="relu3", unit_selection="mis_bottom", max_images=400)
    entry = read_manifest(run(config, tmp_path / "a"))["layers"][0]
    assert entry["n_components"] == 5 and entry["selection"]["candidates"] == [0, 1, 2, 3, 4]
    assert [u["measures"]["mis"] for u in entry["units"]] == sorted(entry["selection"]["scores"])[:2]
