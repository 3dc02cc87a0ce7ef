"""The shipped example docs/examples/borowski2021-exp2.json (Borowski et al. 2021, Experiment II, scaled
to a demo job): it is what `borowski_study` exports, it imports bound to a job with feature
visualizations, and 16 simulated participants through the live server give an export with the design's
properties that the mixed model fits (issue 27, "Done when")."""
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest
from django.core.management import call_command

from studyapp import golive
from studyapp.export import write_export
from studyapp.models import Condition, Exemplar, ImageSet, Network, Participant, StimulusJob, Study
from studyapp.simulation import AnswerOracle, Behaviour, simulate
from studyapp.simulation.oracle import OracleCondition, OracleUnit
from studyapp.studyfile import dumps, export_study
from tests.studyapp.helpers import add_synthetic, make_job, no_rate_limits

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "borowski2021-exp2.json"

#: Borowski et al.: 20 units, 20 trials per condition in 2 blocks of 10. A demo job has 6 units per
#: basis, so each condition shows each of the 6 units once, in 2 blocks of 3.
N_UNITS, TRIALS_PER_BLOCK, BLOCKS_PER_CONDITION = 6, 3, 2
REFERENCE_SETS = (("max-1", 1, False), ("max-9", 9, False), ("min-max-1", 1, True), ("min-max-9", 9, True))
REFERENCE_TYPES = ("natural", "synthetic")

SCALED = (f"Scaled to a demo job: Borowski et al. (2021) showed 20 units, 20 trials per condition in blocks "
          f"of 10; here {N_UNITS} units, {TRIALS_PER_BLOCK * BLOCKS_PER_CONDITION} trials per condition in "
          f"{BLOCKS_PER_CONDITION} blocks of {TRIALS_PER_BLOCK}.")


def demo_feature_vis_job():
    """A job shaped as the demo network's with feature visualizations (`launch_stimuli --network demo
    --layer conv2 --bases neuron --units 6` with feature_vis): made from the factories, as the stimulus
    pipeline has tests of its own."""
    job = add_synthetic(make_job(bases=("neuron",), n_units=N_UNITS, n_queries=6, overlays=False), n=9)
    network, _ = Network.objects.get_or_create(name="demo", defaults={"source": Network.Source.BUILTIN})
    image_set, _ = ImageSet.objects.get_or_create(name="digits", defaults={"source": ImageSet.Source.BUILTIN})
    StimulusJob.objects.filter(pk=job.pk).update(
        network=network, image_set=image_set, n_units=N_UNITS, seed=0,
        parameters={"n_references": 9, "n_queries": 6, "completeness": False, "feature_vis": {"steps": 32}})
    job.refresh_from_db()
    return job


def borowski_study(job, slug="borowski2021-exp2"):
    """Experiment II as a within-participant study over `job`: 2 reference types × 4 reference sets, the
    sets counterbalanced (Williams) and the types alternating inside each set."""
    study = Study.objects.create(
        slug=slug, title="Borowski et al. (2021), Experiment II: natural vs synthetic references",
        instructions_text=("Each trial shows example images that strongly (and in some blocks weakly) "
                           "activate one unit of a network, and two query images. Pick the query that "
                           "activates the unit more strongly. The examples are photos in some blocks and "
                           "synthetic images in others; each block says which.\n\n" + SCALED),
        design=Study.Design.WITHIN, block_group_by=["n_references", "min_references"],
        block_alternate="reference_type", counterbalancing="williams", unit_allocation="all",
        trials_per_block=TRIALS_PER_BLOCK, blocks_per_condition=BLOCKS_PER_CONDITION,
        n_main=TRIALS_PER_BLOCK * BLOCKS_PER_CONDITION, n_practice=2, catch_ratio=0,
        participants_per_condition=16, seed=2021, recruitment=Study.Recruitment.PROLIFIC,
        completion_url="https://app.prolific.com/submissions/complete?cc={code}")
    words = {"natural": "natural images (photos from the data set)",
             "synthetic": "synthetic images (feature visualizations)"}
    for name, n, with_min in REFERENCE_SETS:
        shown = (f"{n} strongly and {n} weakly activating example" if with_min
                 else f"{n} strongly activating example") + ("s" if n > 1 else "")
        for ref in REFERENCE_TYPES:
            condition = Condition(
                study=study, name=f"{ref}-{name}", job=job, layer=job.layer, basis="neuron", reference_type=ref,
                n_references=n, min_references=with_min,
                block_instructions=f"In this block the examples are {words[ref]}: {shown} per trial.")
            condition.full_clean()
            condition.save()
    return study


#: what `python manage.py launch_stimuli --layer conv2 --bases neuron --units 6 --parameters PARAMETERS` ran
#: to on the demo network (30 s on a CPU) gave as its content hash; the file names that job, while the
#: tests bind the file to a factory job of the same network and layer with `--job`
DEMO_CONTENT_HASH = "sha256:1d3d0163eb11fd80015510b580e004ff2b201c478fab5fa81f0e3d65ed562d7a"


@pytest.mark.django_db
def test_the_shipped_file_is_what_the_builder_exports():
    """The committed file is regenerated by this builder (so the two cannot drift apart): with
    REGENERATE_EXAMPLES=1 this test writes it, otherwise it compares byte for byte."""
    data = export_study(borowski_study(demo_feature_vis_job()))
    data["jobs"]["job-1"]["content_hash"] = DEMO_CONTENT_HASH
    text = dumps(data)
    if os.environ.get("REGENERATE_EXAMPLES") == "1":
        EXAMPLE.parent.mkdir(parents=True, exist_ok=True)
        EXAMPLE.write_text(text, encoding="utf-8")
    assert EXAMPLE.read_text(encoding="utf-8") == text
    data = json.loads(text)
    assert len(data["conditions"]) == 8 and SCALED in data["study"]["instructions_text"]
    assert {(c["reference_type"], c["n_references"], c["min_references"]) for c in data["conditions"]} == {
        (ref, n, with_min) for ref in REFERENCE_TYPES for _, n, with_min in REFERENCE_SETS}
    assert data["jobs"]["job-1"]["network"]["name"] == "demo" and "feature_vis" in data["jobs"]["job-1"]["parameters"]


@pytest.mark.django_db(transaction=True)
def test_the_example_imported_and_played_by_16_participants_gives_the_design_and_fits(live_server, settings,
                                                                                      tmp_path):
    no_rate_limits(settings)
    job = demo_feature_vis_job()
    call_command("import_study", str(EXAMPLE), "--job", str(job.pk))
    study = Study.objects.get(slug="borowski2021-exp2")
    assert {c.job_id for c in study.conditions.all()} == {job.pk}
    # the file carries no completion code (a secret): the researcher sets it after the import
    study.completion_code = "EXP2-DONE"
    study.save(update_fields=["completion_code"])
    golive.set_live(study)

    behaviour = Behaviour(accuracy={"*": 0.8}, catch_accuracy=1.0, practice_accuracy=1.0, reload_rate=0.0,
                          double_submit_rate=0.0, return_rate=0.0)
    result = simulate(live_server.url, study.slug, 16, behaviour=behaviour, oracle=AnswerOracle.from_study(study),
                      concurrency=4, seed=7, max_seconds=300)
    summary = result.summary()
    assert summary["participants"]["completed"] == 16 and summary["errors"] == 0, result.format_summary()
    # the simulated participants knew the answer of every trial, synthetic references included
    assert summary["oracle_misses"] == 0, result.format_summary()

    path = tmp_path / "borowski.csv"
    write_export(study, path, "csv")
    frame = pd.read_csv(path)
    main = frame[frame["trial_kind"] == "main"]
    admitted = set(Participant.objects.filter(study=study).values_list("token", flat=True))
    assert len(admitted) == 16

    # every admitted participant answered every condition, each main trial of it
    names = {c.name for c in study.conditions.all()}
    per_participant = main.groupby("participant")["condition"].agg(Counter)
    assert len(per_participant) == 16
    for counts in per_participant:
        assert counts == {name: study.n_main for name in names}

    # the orders are spread exactly: 8 orders (4 set orders × which type opens), 2 participants each
    orders = main.groupby("participant")["order"].agg(set)
    assert all(len(o) == 1 for o in orders)
    assert Counter(next(iter(o)) for o in orders) == {order: 2 for order in range(8)}

    for _, trials in main.groupby("participant"):
        blocks = defaultdict(set)
        for row in trials.itertuples():
            blocks[row.block_index].add((row.condition, row.reference_type, row.n_references, row.min_references))
        assert sorted(blocks) == list(range(8 * study.blocks_per_condition))
        assert all(len(b) == 1 for b in blocks.values()), "each block holds one condition"
        sequence = [next(iter(blocks[b])) for b in sorted(blocks)]
        # a reference set's blocks stay together, and inside it consecutive blocks alternate the type
        sets = [(n, m) for _, _, n, m in sequence]
        runs = [sets[i:i + 4] for i in range(0, len(sets), 4)]
        assert all(len(set(run)) == 1 for run in runs) and len({run[0] for run in runs}) == 4
        for i in range(1, len(sequence)):
            if sets[i] == sets[i - 1]:
                assert sequence[i][1] != sequence[i - 1][1], sequence

    fit = subprocess.run(
        [sys.executable, "-m", "analysis", "glmm", str(path), "--json", "--formula",
         "correct ~ reference_type * n_references + (1|participant) + (1|unit)"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert fit.returncode == 0, fit.stderr
    model = json.loads(fit.stdout)
    assert model["command"] == "glmm" and model["converged"] and model["nobs"] == 16 * 8 * study.n_main
    assert [f["term"] for f in model["fixed"]] == ["(Intercept)", "reference_typesynthetic", "n_references",
                                                  "reference_typesynthetic:n_references"]
    assert {g["group"]: g["levels"] for g in model["groups"]} == {"participant": 16, "unit": N_UNITS}


def test_the_oracle_answers_a_trial_with_synthetic_references():
    """Feature visualizations stand in for the maximal references (one or all of them); the natural
    queries still tell the answer, and the trial is matched to the synthetic condition."""
    def unit(i):
        nine = {role: [f"{role}{i}{k}.png" for k in range(9)] for role in ("r", "n", "s")}
        return OracleUnit.from_lists(f"conv2:neuron:{i}", "neuron", "conv2", {
            "references_max": nine["r"], "references_min": nine["n"], "synthetic_max": nine["s"],
            "queries_max": [f"q{i}.png"], "queries_min": [f"m{i}.png"]})

    units = [unit(0), unit(1)]
    conditions = [OracleCondition(f"{ref}-1", "neuron", ref, frozenset(u.key for u in units), n_references=1)
                  for ref in ("max_only", "synthetic")]
    oracle = AnswerOracle(units, conditions)
    for refs, name in ((["/media/s10.png"], "synthetic-1"), (["/media/r10.png"], "max_only-1")):
        judgement = oracle.judge({"query_a": "/media/m1.png", "query_b": "/media/q1.png", "references_max": refs})
        assert (judgement.correct, judgement.unit, judgement.kind, judgement.conditions) == (
            "b", "conv2:neuron:1", "main", (name,))
    all_nine = oracle.judge({"query_a": "q0.png", "query_b": "m0.png",
                             "references_max": [f"s0{k}.png" for k in range(9)],
                             "references_min": [f"n0{k}.png" for k in range(9)]})
    assert all_nine.correct == "a" and all_nine.unit == "conv2:neuron:0"


@pytest.mark.slow
@pytest.mark.django_db
def test_the_files_job_run_on_the_demo_network_matches_it_by_content(settings, tmp_path):
    """The job the file names, run for real (the demo network, feature visualizations included), is found
    by its content hash: the file then imports without `--job`, goes live, and each condition shows its
    references as the design says.

    The hash is the one this machine's run gives: a job's images are float computations (the demo's
    training, the optimised feature visualizations), and CPUs of another kind round them differently,
    so the committed file's hash is reproduced only on the kind of CPU that wrote it (measured: equal on
    the machine that made the file, different on an AMD EPYC). Elsewhere `--job` binds the file."""
    from studyapp import jobs, participation
    from studyapp.models import Trial
    from studyapp.recruitment import Arrival
    from studyapp.studyfile import content_hash

    settings.MEDIA_ROOT, settings.ARTIFACT_ROOT = tmp_path / "media", tmp_path / "artifacts"
    spec = json.loads(EXAMPLE.read_text(encoding="utf-8"))["jobs"]["job-1"]
    assert spec["content_hash"] == DEMO_CONTENT_HASH
    network, _ = Network.objects.get_or_create(name=spec["network"]["name"],
                                               defaults={"source": spec["network"]["source"]})
    image_set, _ = ImageSet.objects.get_or_create(name=spec["image_set"]["name"],
                                                  defaults={"source": spec["image_set"]["source"]})
    job = StimulusJob.objects.create(network=network, image_set=image_set, layer=spec["layer"], bases=spec["bases"],
                                     n_units=spec["n_units"], seed=spec["seed"], parameters=spec["parameters"])
    jobs.run_job(job.pk)
    job.refresh_from_db()
    here = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    here["jobs"]["job-1"]["content_hash"] = content_hash(job)
    file = tmp_path / "borowski2021-exp2.json"
    file.write_text(dumps(here), encoding="utf-8")
    call_command("import_study", str(file))
    study = Study.objects.get(slug="borowski2021-exp2")
    assert {c.job_id for c in study.conditions.all()} == {job.pk}
    study.completion_code = "EXP2-DONE"
    study.save(update_fields=["completion_code"])
    golive.set_live(study)
    participant = participation.start(study, Arrival("prolific", "p1", {"STUDY_ID": "s", "SESSION_ID": "t"}))
    synthetic = set(Exemplar.objects.filter(unit__job=job, role__in=["synthetic_max", "synthetic_min"])
                    .values_list("image", flat=True))
    shown = defaultdict(set)
    for trial in Trial.objects.filter(participant=participant, block=Trial.Block.MAIN).select_related("condition"):
        refs = [image.rsplit("/", 1)[-1] for image in trial.references_max + trial.references_min]
        shown[trial.condition.name].add((len(trial.references_max), len(trial.references_min),
                                         bool(refs) and set(refs) <= synthetic))
    assert shown == {f"{ref}-{name}": {(n, n if with_min else 0, ref == "synthetic")}
                     for ref in REFERENCE_TYPES for name, n, with_min in REFERENCE_SETS}
