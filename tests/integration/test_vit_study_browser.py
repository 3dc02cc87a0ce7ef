"""A demo-sized study on a vision transformer's job plays to the end in headless Chromium: ViT-B/32 from a
random-init checkpoint file (registered as a checkpoint network, as a researcher registers any state
dict), units over the 768 channels of an encoder block, one condition, two practice and six main trials."""

import csv

import pytest

from .participant import play_trials

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

# the checkpoint is written and the job run in the shell's process, then a study over it goes live
CREATE_STUDY = """
import json, sys, tempfile
import torch, torchvision
from studyapp import jobs
from studyapp.models import Condition, Network, StimulusJob, Study
torch.manual_seed(0)
path = tempfile.mkdtemp() + "/vit_b_32.pt"
torch.save(torchvision.models.vit_b_32().state_dict(), path)
network = Network.objects.create(name="vit_b_32", source=Network.Source.CHECKPOINT, checkpoint=path)
digits = Study.objects.get(slug="demo").conditions.first().job.image_set
job = StimulusJob.objects.create(
    network=network, image_set=digits, layer="encoder.layers.encoder_layer_6", bases="neuron,pca", n_units=2,
    seed=0, parameters={"max_images": 60, "n_references": 3, "n_queries": 6, "completeness": False,
                        "essence": False, "ablation": False, "surrogate": False, "label_entropy_top_n": 0,
                        "figures": False, "batch_size": 20})
jobs.run_job(job.pk)
study = Study.objects.create(slug="vit-study", title="A transformer's units", n_practice=2, n_main=6,
                             catch_ratio=0, status=Study.Status.LIVE)
condition = Condition(study=study, name="vit-neuron", job=job, layer=job.layer, basis="neuron")
condition.full_clean()
condition.save()
manifest = json.loads((jobs.artifact_dir(job) / "manifest.json").read_text())
print(json.dumps({e["basis"]: [e["layout"], e["n_channels"]] for e in manifest["layers"]}))
"""


def test_a_participant_plays_a_vit_study_to_the_end(stack, browser, shots, tmp_path):
    import json

    layouts = json.loads(stack.manage("shell", "-c", CREATE_STUDY, timeout=900).stdout.splitlines()[-1])
    assert layouts == {"neuron": ["BTC", 768], "pca": ["BTC", 768]}

    page = browser.new_page(viewport={"width": 1280, "height": 860})
    page.goto(f"{stack.base_url}/s/vit-study/?PROLIFIC_PID=it-vit-1&STUDY_ID=s&SESSION_ID=t")
    page.click("#start")
    page.click("#consent-agree")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    page.locator("#r2afc[data-state='ready']").wait_for(timeout=20_000)
    page.screenshot(path=shots / "vit-trial.png")
    answered = play_trials(page, stack)
    assert len(answered) == 8
    page.fill("#q-strategy", "colour blobs")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()

    export = tmp_path / "vit.csv"
    stack.manage("export_responses", "vit-study", "--format", "csv", "--out", str(export))
    rows = list(csv.DictReader(export.open()))
    assert len(rows) == 8 and {r["layer"] for r in rows} == {"encoder.layers.encoder_layer_6"}
