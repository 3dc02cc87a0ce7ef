"""The admin explains itself: layers and bases are choices of what exists, a job's progress says its
stage and the whole, units show what their measures mean, errors name units by their key, previews
stay out of the participant list, a study shows the link to paste into its platform, settings read at
a sensible precision, and a participant's page lists their answers."""
import html
import re

import pytest

from studyapp.models import Condition, ImageSet, Network, Participant, StimulusJob, Study, Unit
from studyapp.participation import start_preview
from tests.studyapp.helpers import answer, api, arrive, correct_choice, make_job, make_study, through_instructions

DEMO_LAYERS = ["conv1", "relu1", "conv2", "relu2", "pool", "flatten", "fc1", "relu3", "fc2"]


def job_form(network, image_set, **fields):
    return {"network": network.pk, "image_set": image_set.pk, "layer": "conv2", "bases": ["neuron", "pca"],
            "n_units": 4, "seed": 0, "parameters": "{}", **fields}


# --- layer and basis as choices ------------------------------------------------------------------

@pytest.mark.django_db
def test_the_job_form_offers_the_network_s_layers_and_the_bases_as_choices(admin_client):
    Network.objects.create(name="demo")
    page = admin_client.get("/admin/studyapp/stimulusjob/add/").content.decode()
    group = re.search(r'<optgroup label="demo">(.*?)</optgroup>', page, re.S)
    assert group, "the layer select has no group for the demo network"
    assert re.findall(r'<option value="([^"]+)"', group.group(1)) == DEMO_LAYERS
    assert 'name="layer"' in page and 'data-group-from="network"' in page
    for basis in ("neuron", "pca", "nmf", "dictionary", "sae"):
        assert f'type="checkbox" name="bases" value="{basis}"' in page
    assert "studyapp/admin-grouped-select.js" in page


@pytest.mark.django_db
def test_a_layer_the_network_lacks_is_refused_by_the_job_form_with_its_layers(admin_client, monkeypatch):
    from studyapp import tasks

    queued = []
    monkeypatch.setattr(tasks, "launch", queued.append)
    network, image_set = Network.objects.create(name="demo"), ImageSet.objects.create(name="digits")
    response = admin_client.post("/admin/studyapp/stimulusjob/add/", job_form(network, image_set, layer="conv9"))
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert f"demo has no layer 'conv9'; its layers are: {', '.join(DEMO_LAYERS)}." in page
    assert not StimulusJob.objects.exists() and not queued

    response = admin_client.post("/admin/studyapp/stimulusjob/add/", job_form(network, image_set, layer="fc1"))
    assert response.status_code == 302
    job = StimulusJob.objects.get()
    assert (job.layer, job.bases) == ("fc1", "neuron,pca") and queued == [job]


@pytest.mark.django_db
def test_the_condition_form_offers_the_layers_and_bases_of_each_job_s_units(admin_client):
    job = make_job(bases=("neuron", "nmf"), layer="conv2")
    other = make_job(bases=("pca",), layer="fc1")
    page = admin_client.get("/admin/studyapp/study/add/").content.decode()
    layer_select = re.search(r'<select name="conditions-0-layer"[^>]*>(.*?)</select>', page, re.S).group(1)
    basis_select = re.search(r'<select name="conditions-0-basis"[^>]*>(.*?)</select>', page, re.S).group(1)

    def group(select, job):
        found = re.search(rf'<optgroup label="{re.escape(html.escape(str(job)))}">(.*?)</optgroup>', select, re.S)
        return re.findall(r'<option value="([^"]+)"', found.group(1))

    assert group(layer_select, job) == ["conv2"] and group(layer_select, other) == ["fc1"]
    assert group(basis_select, job) == ["neuron", "nmf"] and group(basis_select, other) == ["pca"]


# --- job progress ----------------------------------------------------------------------------------

def test_the_job_stages_are_the_pipeline_s_between_the_listing_and_the_import():
    from stimuli.pipeline import STAGES
    from studyapp.jobs import JOB_STAGES

    assert ("listing", *STAGES, "import") == JOB_STAGES


def test_a_network_s_layers_are_listed_once_and_then_read_without_torch(tmp_path, monkeypatch):
    """The first listing traces the network; any later process reads the kept list and never imports
    torch, which takes a web worker seconds."""
    import os
    import subprocess
    import sys

    from studyapp import jobs

    monkeypatch.setenv("STIMULI_CACHE_DIR", str(tmp_path))
    jobs._layers_of.cache_clear()
    assert jobs.network_layers(Network(name="demo")) == DEMO_LAYERS
    assert len(list(tmp_path.glob("layers-*.json"))) == 1
    script = ("import sys, django; django.setup(); from studyapp.jobs import network_layers; "
              "from studyapp.models import Network; print(network_layers(Network(name='demo'))); "
              "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "STIMULI_CACHE_DIR": str(tmp_path),
                              "DJANGO_SETTINGS_MODULE": "studyapp.settings.test"}).stdout.splitlines()
    assert out == [repr(DEMO_LAYERS), "False"]
    jobs._layers_of.cache_clear()


@pytest.mark.django_db
def test_job_progress_is_served_as_json_with_the_overall_share_and_the_stage(admin_client, job):
    from stimuli.pipeline import STAGES

    stages = ["listing", *STAGES, "import"]
    StimulusJob.objects.filter(pk=job.pk).update(status="running", stage="bases", progress=50.0)
    body = admin_client.get(f"/admin/studyapp/stimulusjob/progress/?pk={job.pk}").json()
    state = body["jobs"][str(job.pk)]
    i = stages.index("bases")
    assert state["overall"] == pytest.approx(100 * (i + 0.5) / len(stages), abs=0.05)
    assert state["text"] == f"stage {i + 1} of {len(stages)}: bases 50 %"
    assert state["status"] == "running" and state["active"] is True

    StimulusJob.objects.filter(pk=job.pk).update(status="succeeded", stage="import", progress=100.0)
    state = admin_client.get(f"/admin/studyapp/stimulusjob/progress/?pk={job.pk}").json()["jobs"][str(job.pk)]
    assert (state["overall"], state["text"], state["active"]) == (100.0, "done", False)


@pytest.mark.django_db
def test_the_job_list_and_page_carry_the_refreshing_progress(admin_client, job):
    StimulusJob.objects.filter(pk=job.pk).update(status="running", stage="render", progress=20.0)
    for url in ("/admin/studyapp/stimulusjob/", f"/admin/studyapp/stimulusjob/{job.pk}/change/"):
        page = admin_client.get(url).content.decode()
        assert "studyapp/admin-job-progress.js" in page
        widget = re.search(r"<span class='job-progress' data-url='([^']+)' data-pk='(\d+)' data-active='1'>", page)
        assert widget and widget.groups() == ("/admin/studyapp/stimulusjob/progress/", str(job.pk)), url
        assert ": render 20 %" in page


@pytest.mark.django_db
def test_the_progress_endpoint_needs_a_researcher(client, job):
    response = client.get(f"/admin/studyapp/stimulusjob/progress/?pk={job.pk}")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- units -----------------------------------------------------------------------------------------

def measured_job():
    job = make_job(bases=("neuron", "pca"), n_units=2)
    for unit in Unit.objects.filter(job=job):
        unit.measures = {"explained_variance_ratio": 0.123456789, "variance_rank": unit.index + 1,
                         "influence": 0.5, "influence_direction": -0.25, "influence_rank": 2,
                         "mis_deltas": [0.5, 1.25]}
        unit.save()
    return job


@pytest.mark.django_db
def test_the_units_list_explains_its_measures_and_filters_by_job_layer_and_basis(admin_client):
    job = measured_job()
    other = make_job(bases=("nmf",), layer="fc1", n_units=1)
    page = admin_client.get("/admin/studyapp/unit/").content.decode()
    for header, words in (("explained variance", "reconstructs"), ("influence", "direction"),
                          ("machine score", "machine observer")):
        title = re.search(rf"<span class='measure-help' title='([^']*)'>{header}</span>", page)
        assert title and words in title.group(1), header
    assert "class=\"measure-legend\"" in page and "Machine Interpretability Score" in page
    assert "<div class='thumb-grid'>" in page
    assert "0.123" in page and "0.123456789" not in page

    def keys(query):
        page = admin_client.get(f"/admin/studyapp/unit/?{query}").content.decode()
        return re.findall(r'<th class="field-key"><a [^>]*>([^<]+)</a>', page)

    assert keys("layer=fc1") == ["fc1:nmf:0"]
    assert keys("basis=pca") == ["conv2:pca:0", "conv2:pca:1"]
    assert sorted(keys(f"job__id__exact={job.pk}")) == ["conv2:neuron:0", "conv2:neuron:1", "conv2:pca:0",
                                                         "conv2:pca:1"]
    assert keys(f"job__id__exact={other.pk}") == ["fc1:nmf:0"]


@pytest.mark.django_db
def test_a_unit_s_measures_are_a_table_and_its_missing_machine_score_says_why(admin_client):
    job = measured_job()
    unit = job.units.first()
    page = admin_client.get(f"/admin/studyapp/unit/{unit.pk}/change/").content.decode()
    table = re.search(r'<table class="measures">(.*?)</table>', page, re.S).group(1)
    rows = dict(re.findall(r"<tr><th>([^<]+)</th><td>(.*?)</td>", table))
    assert rows["explained variance"] == "0.1235"
    assert rows["influence (direction)"] == "-0.25"
    assert rows["MIS Δ per query pair"] == "0.5, 1.25"
    assert "the job ran without mis_layer" in rows["machine score (MIS)"]
    assert '{"explained_variance_ratio"' not in page and 'name="measures"' not in page  # no raw JSON blob
    assert list(rows)[:3] == ["explained variance", "variance rank", "influence"]

    StimulusJob.objects.filter(pk=job.pk).update(parameters={"mis_layer": "fc1"}, status="running")
    page = admin_client.get(f"/admin/studyapp/unit/{unit.pk}/change/").content.decode()
    assert "not computed yet: the job is running" in page
    Unit.objects.filter(pk=unit.pk).update(measures={**unit.measures, "mis": 0.8125})
    page = admin_client.get(f"/admin/studyapp/unit/{unit.pk}/change/").content.decode()
    assert "<tr><th>machine score (MIS)</th><td>0.8125</td>" in page and "not computed" not in page


# --- errors name units by key ----------------------------------------------------------------------

@pytest.mark.django_db
def test_a_condition_s_errors_name_the_unit_by_its_key(admin_client):
    from django.core.exceptions import ValidationError

    job = make_job(bases=("neuron",), overlays=False, n_strips=0)
    study = Study.objects.create(slug="keys", title="keys")
    for fields, words in (({"reference_type": "overlay"}, "has no attribution overlay"),
                          ({"paradigm": "ordered_strip"}, "has no ordered strip")):
        condition = Condition(study=study, name="c", job=job, layer="conv2", basis="neuron", **fields)
        with pytest.raises(ValidationError) as caught:
            condition.full_clean()
        message = " ".join(caught.value.messages)
        assert re.search(rf"unit conv2:neuron:[0-2] {words}", message), message
        assert not re.search(r"unit \d", message)


# --- participants ----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_previews_are_left_out_of_the_participant_list_unless_asked_for(admin_client, client, study):
    person = arrive(client, study, pid="someone")
    preview = start_preview(study, study.conditions.first())

    def listed(query=""):
        page = admin_client.get(f"/admin/studyapp/participant/{query}").content.decode()
        return set(re.findall(r">(P\d{5})</a>", page))

    assert listed() == {person.pseudonym}
    assert listed("?who=previews") == {preview.pseudonym}
    assert listed("?who=all") == {person.pseudonym, preview.pseudonym}
    assert "participants (previews hidden)" in admin_client.get("/admin/studyapp/participant/").content.decode()


@pytest.mark.django_db
def test_a_participant_s_page_lists_their_answers(admin_client, client, study):
    participant = arrive(client, study, pid="answers")
    through_instructions(client, participant)
    trials = api(client, participant, "trials?limit=3")[1]["trials"]
    right = correct_choice(trials[0]["id"])
    wrong = "b" if correct_choice(trials[1]["id"]) == "a" else "a"
    answer(client, participant, trials[0]["id"], right, confidence=3)
    answer(client, participant, trials[1]["id"], wrong, confidence=1)
    page = admin_client.get(f"/admin/studyapp/participant/{participant.pk}/change/").content.decode()
    assert "Trials and answers" in page
    rows = re.findall(r'<tr class="form-row[^"]*"[^>]*>(.*?)</tr>', page, re.S)
    shown = ["unit_key", "answer", "correct", "confidence", "rt"]
    cells = [dict(re.findall(r'<td class="field-(\w+)">\s*<p>([^<]*)</p>', row)) for row in rows]
    cells = [[row[name] for name in shown] for row in cells]
    unit = Participant.objects.get(pk=participant.pk).trials.get(position=0).unit
    assert len(cells) == participant.trial_count
    assert cells[0] == [unit.key, f"query {right.upper()}", "yes", "3", "0.81 s"]
    assert cells[1][1:] == [f"query {wrong.upper()}", "no", "1", "0.81 s"]
    assert cells[2][1:] == ["— (not answered)", "—", "—", "—"]
    assert 'name="trials-0-position"' not in page  # read only: nothing to submit


# --- the study's page ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_prolific_study_shows_its_study_url_ready_to_paste(admin_client, job):
    study = make_study(job, recruitment="prolific")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    url = re.search(r'<code id="recruitment-url-1">([^<]+)</code>', page).group(1)
    assert html.unescape(url) == (f"http://testserver/s/{study.slug}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}"
                                  "&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}")
    assert 'data-copy="recruitment-url-1"' in page and "studyapp/admin-copy.js" in page


@pytest.mark.django_db
def test_an_mturk_study_shows_its_external_question_url(admin_client, job, settings):
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "studies.example.org"]
    study = make_study(job, recruitment="mturk")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/", HTTP_HOST="studies.example.org")
    page = page.content.decode()
    url = re.search(r'<code id="recruitment-url-1">([^<]+)</code>', page).group(1)
    assert url == f"http://studies.example.org/s/{study.slug}/"
    assert "MTurk appends workerId, assignmentId, hitId, turkSubmitTo" in page


@pytest.mark.django_db
def test_the_catch_ratio_reads_as_a_fraction_and_round_trips_exactly(admin_client, job):
    study = make_study(job, catch_ratio=1 / 9, n_main=18)
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/change/").content.decode()
    assert "0.1111111111111111" not in page
    assert 'name="catch_ratio" value="1/9"' in page
    assert "18 main trials of which 2 catch trials (catch ratio 0.111 (1 in 9))" in page

    from django.forms.models import model_to_dict

    from studyapp.admin_forms import ShareField

    field = ShareField(min_value=0.0, max_value=0.5)
    assert field.clean("1 in 9") == 1 / 9 and field.clean("1/9") == 1 / 9 and field.clean("0.25") == 0.25
    assert field.prepare_value(0.25) == "0.25" and field.prepare_value(0.1) == "0.1"
    with pytest.raises(Exception, match="denominator"):
        field.clean("1/0")
    with pytest.raises(Exception, match="less than or equal to 0.5"):
        field.clean("2/3")
    assert model_to_dict(study)["catch_ratio"] == 1 / 9


@pytest.mark.django_db
def test_the_monitor_says_why_a_condition_has_no_machine_prediction(admin_client, job):
    study = make_study(job)
    study.conditions.filter(basis="pca").update(reference_type="none")
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    assert "— <small>(the stimulus job ran without mis_layer)</small>" in page  # neuron, natural
    assert "— <small>(the machine observer simulates natural references only)</small>" in page  # pca, none
    StimulusJob.objects.filter(pk=job.pk).update(parameters={"mis_layer": "fc1"})
    Unit.objects.filter(job=job, basis="neuron").update(measures={"mis": 0.75})
    page = admin_client.get(f"/admin/studyapp/study/{study.pk}/monitor/").content.decode()
    assert "<td>75 %</td>" in page and "without mis_layer" not in page
