"""Every paradigm × reference type the platform offers, played in headless Chromium to the completion code
of a live study of its own, and the researcher's preview offering (and starting) every one of them.

One demo job serves every case (the session's stack made it); the synthetic and mixed reference types
need feature visualizations and the occlusion 2AFC occlusion pairs, so the module runs one small job with
both, once. A new paradigm or
reference type joins by a case in CASES (test_the_cases_cover_what_the_platform_offers fails until it
does); a paradigm's expectations on its first trial screen live in SCREEN_CHECKS."""
import json
import re
from collections import Counter

import pytest

from studyapp.trials import PARADIGMS, REFERENCE_TYPES

from .participant import READY_TRIAL, admin_password, answer_key, axe_violations, play_trials

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

# (paradigm, reference type): the reference 2AFC with each reference type; paradigms that show no
# references (the ordered strip) once, with the default reference type, which they ignore.
CASES = [("reference_2afc", reference_type) for reference_type in REFERENCE_TYPES] + [
    ("ordered_strip", "natural"),
] + [("occlusion_2afc", reference_type) for reference_type in ("natural", "synthetic", "none")]
STRIPLESS_REFERENCES = {"ordered_strip"}
N_PRACTICE, N_MAIN = 2, 4
VIEWPORT = {"width": 1366, "height": 768}

# Which exemplar roles a 2AFC trial's reference grids show, per reference type (studyapp.trials).
REFERENCE_ROLES = {
    "natural": ({"reference_max"}, {"reference_min"}),
    "max_only": ({"reference_max"}, set()),
    "none": (set(), set()),
    "overlay": ({"overlay_max"}, {"reference_min"}),
    "synthetic": ({"synthetic_max"}, {"synthetic_min"}),
    "mixed": ({"synthetic_max", "reference_max"}, {"synthetic_min", "reference_min"}),
}

SETUP = """
import json
from studyapp import jobs
from studyapp.models import Condition, StimulusJob, Study
demo = Study.objects.get(slug="demo").conditions.first().job
# feature visualizations for the synthetic and mixed references and occlusion pairs for the occlusion
# 2AFC: a small job, run in this process
synthetic = StimulusJob.objects.create(
    network=demo.network, image_set=demo.image_set, layer="conv2", bases="neuron", n_units=2, seed=0,
    parameters={"n_references": 3, "n_queries": 6, "completeness": False, "feature_vis": {"steps": 32},
                "occlusion": {"pairs_per_unit": 4}})
jobs.run_job(synthetic.pk)
preview = Study.objects.create(slug="every-condition", title="Every condition", n_practice=1, n_main=2,
                               catch_ratio=0)
out = {"preview": preview.pk, "conditions": {}, "jobs": {"demo": demo.pk, "synthetic": synthetic.pk}}
for paradigm, reference_type in json.loads('CASES'):
    job = synthetic if reference_type in ("synthetic", "mixed") or paradigm == "occlusion_2afc" else demo
    slug = "every-" + (paradigm + "-" + reference_type).replace("_", "-")
    # conditions first, then live: a study goes live with something to run
    study = Study.objects.create(
        slug=slug, title="Paradigm " + paradigm + ", " + reference_type, n_practice=N_PRACTICE, n_main=N_MAIN,
        catch_ratio=0.25, practice_max_attempts=1, min_instructions_seconds=0, response_lock_ms=300,
        completion_code="DONE-" + slug.upper(), participants_per_condition=5)
    for owner in (study, preview):
        condition = Condition(study=owner, name=paradigm + "-" + reference_type, job=job, layer="conv2",
                              basis="neuron", reference_type=reference_type, paradigm=paradigm)
        condition.full_clean()
        condition.save()
        out["conditions"][owner.slug + "/" + paradigm + "/" + reference_type] = condition.pk
    study.status = Study.Status.LIVE
    study.save()
print(json.dumps(out))
"""


def case_id(case):
    return f"{case[0]}-{case[1]}"


def slug_of(case):
    return "every-" + case_id(case).replace("_", "-")


@pytest.fixture(scope="module")
def setup(stack):
    script = (SETUP.replace("'CASES'", repr(json.dumps(CASES)))
              .replace("N_PRACTICE", str(N_PRACTICE)).replace("N_MAIN", str(N_MAIN)))
    return json.loads(stack.manage("shell", "-c", script, timeout=900).stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def roles(stack, setup):
    """Exemplar roles by image file name, over both jobs (a file can hold more than one role)."""
    found = {}
    for image, role in stack.sql(
            "SELECT e.image, e.role FROM studyapp_exemplar e JOIN studyapp_unit u ON e.unit_id = u.id "
            "WHERE u.job_id = ANY(%s)", (list(setup["jobs"].values()),)):
        found.setdefault(image.rsplit("/", 1)[-1], set()).add(role)
    return found


def names(page, selector):
    return [src.rsplit("/", 1)[-1] for src in
            page.locator(selector).evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")]


def stored_trial(stack, trial_id, *columns):
    row = stack.sql(f"SELECT {', '.join(columns)} FROM studyapp_trial WHERE id = %s", (trial_id,))[0]
    return [[p.rsplit("/", 1)[-1] for p in value] if isinstance(value, list) else value.rsplit("/", 1)[-1]
            for value in row]


def check_reference_2afc(page, stack, trial_id, reference_type, roles):
    """The 2AFC screen shows the stored trial, its grids hold the roles of its reference type."""
    refs_max, refs_min, query_a, query_b = stored_trial(stack, trial_id, "references_max", "references_min",
                                                        "query_a", "query_b")
    shown_max, shown_min = names(page, "#r2afc-refs-max img"), names(page, "#r2afc-refs-min img")
    assert (shown_max, shown_min) == (refs_max, refs_min)
    assert names(page, "#r2afc-query-a img") == [query_a] and names(page, "#r2afc-query-b img") == [query_b]
    for shown, expected in zip((shown_max, shown_min), REFERENCE_ROLES[reference_type]):
        assert all(roles.get(name, set()) & expected for name in shown), (reference_type, shown)
        assert all(any(role in roles.get(name, set()) for name in shown) for role in expected), reference_type
    assert page.locator("#r2afc-prompt").inner_text().startswith("Which")


def check_ordered_strip(page, stack, trial_id, reference_type, roles):
    """Two rows of the same images in the stored order, one of them the unit's ordered strip; the page
    carries nothing that tells which (no query or reference grid, no attribute naming a role)."""
    strip_a, strip_b = stored_trial(stack, trial_id, "strip_a", "strip_b")
    shown_a, shown_b = names(page, "#r2afc-strip-a img"), names(page, "#r2afc-strip-b img")
    assert (shown_a, shown_b) == (strip_a, strip_b)
    assert len(shown_a) >= 3 and Counter(shown_a) == Counter(shown_b) and shown_a != shown_b
    assert page.locator("#r2afc-refs-max, #r2afc-query-a").count() == 0
    html = page.locator("#ostrip").inner_html()
    assert not re.search(r"correct|ordered|shuffled|catch", html, re.IGNORECASE)
    assert "gradually and steadily" in page.locator("#r2afc-prompt").inner_text()


def check_occlusion_2afc(page, stack, trial_id, reference_type, roles):
    """The references of the reference type, and the stored pair of occluded copies in the centre: images
    no exemplar role holds (the stimulus job drew them), and nothing on the page that tells which
    occlusion changes the unit more."""
    refs_max, refs_min, query_a, query_b = stored_trial(stack, trial_id, "references_max", "references_min",
                                                        "query_a", "query_b")
    assert (names(page, "#r2afc-refs-max img"), names(page, "#r2afc-refs-min img")) == (refs_max, refs_min)
    for shown, expected in zip((refs_max, refs_min), REFERENCE_ROLES[reference_type]):
        assert all(roles.get(name, set()) & expected for name in shown), (reference_type, shown)
    assert names(page, "#r2afc-query-a img") == [query_a] and names(page, "#r2afc-query-b img") == [query_b]
    assert query_a != query_b and not roles.get(query_a) and not roles.get(query_b)
    html = page.locator("#occl").inner_html()
    assert not re.search(r"correct|delta|catch|larger|smaller", html, re.IGNORECASE)
    assert "Which occlusion changes" in page.locator("#r2afc-prompt").inner_text()


SCREEN_CHECKS = {"reference_2afc": check_reference_2afc, "ordered_strip": check_ordered_strip,
                 "occlusion_2afc": check_occlusion_2afc}
# what the instructions and the questionnaire say of each paradigm's task
TASK_WORDS = {"reference_2afc": ("centre", "two centre images"), "ordered_strip": ("row A", "two rows"),
              "occlusion_2afc": ("occlusion", "two occlusions")}


def test_the_cases_cover_what_the_platform_offers():
    assert {paradigm for paradigm, _ in CASES} == set(PARADIGMS)
    assert {rt for paradigm, rt in CASES if paradigm not in STRIPLESS_REFERENCES} == set(REFERENCE_TYPES)
    assert set(SCREEN_CHECKS) == set(PARADIGMS) == set(TASK_WORDS)
    assert set(REFERENCE_ROLES) == set(REFERENCE_TYPES)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_paradigm_and_reference_type_plays_to_the_completion_code(stack, browser, shots, setup, roles, case):
    paradigm, reference_type = case
    slug = slug_of(case)
    # bypass_csp lets axe-core in; the participant pages' own policy is checked in test_participant_session
    context = browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{stack.base_url}/s/{slug}/?PROLIFIC_PID=every-{slug}&STUDY_ID={slug}&SESSION_ID=s1")
    page.click("#start")
    page.click("#consent-agree")
    instructions_words, strategy_words = TASK_WORDS[paradigm]
    assert instructions_words in page.locator("#study-instructions").inner_text()
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")

    seen = []

    def on_trial(page, trial_id):
        trial = page.locator(READY_TRIAL)
        assert trial.get_attribute("data-paradigm") == paradigm
        SCREEN_CHECKS[paradigm](page, stack, trial_id, reference_type, roles)
        if not seen:
            page.screenshot(path=shots / f"paradigm-{case_id(case)}.png")
            assert axe_violations(page) == []
        seen.append(trial_id)

    answered = play_trials(page, stack, on_trial)
    assert len(answered) == len(set(answered)) == N_PRACTICE + N_MAIN == len(seen)
    assert strategy_words in page.locator("label[for='q-strategy']").inner_text()
    page.fill("#q-strategy", "compared the images")
    page.click("#jspsych-survey-html-form-next")
    page.locator("#study-done").wait_for()
    assert page.locator("#completion-code").inner_text().strip() == f"DONE-{slug.upper()}"
    assert errors == []
    context.close()

    status, stored, correct, kinds = stack.sql(
        "SELECT p.status, count(r.id), bool_and(r.correct), array_agg(DISTINCT t.kind ORDER BY t.kind) "
        "FROM studyapp_participant p JOIN studyapp_study s ON p.study_id = s.id "
        "JOIN studyapp_response r ON r.participant_id = p.id JOIN studyapp_trial t ON r.trial_id = t.id "
        "WHERE s.slug = %s GROUP BY p.id", (slug,))[0]
    # every trial kind was played and scored: the page showed each as the server built it
    assert (status, stored, correct, kinds) == ("completed", N_PRACTICE + N_MAIN, True, ["catch", "main", "practice"])


def test_the_preview_offers_and_starts_every_condition(stack, browser, setup):
    preview = setup["preview"]
    conditions = {key.split("/", 1)[1]: pk for key, pk in setup["conditions"].items()
                  if key.startswith("every-condition/")}
    assert len(conditions) == len(CASES)
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{stack.base_url}/admin/login/?next=/admin/studyapp/study/{preview}/preview/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(stack))
    page.click("input[type=submit]")
    page.locator("#preview-form").wait_for()
    offered = page.locator("#id_condition option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(map(int, offered)) == sorted(conditions.values())

    for key, condition in conditions.items():
        paradigm, reference_type = key.split("/")
        page.goto(f"{stack.base_url}/admin/studyapp/study/{preview}/preview/")
        page.select_option("#id_condition", str(condition))
        page.click("#preview-form input[type=submit]")
        page.click("#consent-agree")
        assert TASK_WORDS[paradigm][0] in page.locator("#study-instructions").inner_text()
        page.click("#instructions-continue")
        page.click("#jspsych-fullscreen-btn")
        trial = page.locator(READY_TRIAL)
        trial.wait_for(timeout=20_000)
        assert trial.get_attribute("data-paradigm") == paradigm
        trial_id = int(trial.get_attribute("data-trial-id"))
        # the trial shown belongs to a preview participant of this condition
        (is_preview, shown_condition), = stack.sql(
            "SELECT p.is_preview, p.condition_id FROM studyapp_trial t JOIN studyapp_participant p "
            "ON t.participant_id = p.id WHERE t.id = %s", (trial_id,))
        assert (is_preview, shown_condition) == (True, condition)
        assert answer_key(stack, trial_id) in ("a", "b")
    assert stack.sql("SELECT count(*) FROM studyapp_participant WHERE study_id = %s AND NOT is_preview",
                     (preview,))[0][0] == 0
    context.close()


def test_a_trial_of_a_paradigm_the_page_does_not_know_says_so_and_is_not_answered(stack, browser, setup):
    """A server newer than the page (a paradigm without a plugin here): a sentence, not a blank page."""
    slug = slug_of(CASES[0])
    page = browser.new_page(viewport=VIEWPORT)

    def newer_server(route):
        reply = route.fetch()
        body = reply.json()
        for trial in body["trials"]:
            trial["paradigm"] = "saliency_2afc"
        route.fulfill(response=reply, json=body)

    page.route("**/api/p/*/trials*", newer_server)
    page.goto(f"{stack.base_url}/s/{slug}/?PROLIFIC_PID=every-unknown&STUDY_ID={slug}&SESSION_ID=s1")
    page.click("#start")
    page.click("#consent-agree")
    page.click("#instructions-continue")
    page.click("#jspsych-fullscreen-btn")
    error = page.locator("#study-error-detail")
    error.wait_for(timeout=20_000)
    assert "saliency_2afc" in error.inner_text()
    assert page.locator(".study-trial").count() == 0
    assert stack.sql("SELECT count(*) FROM studyapp_response r JOIN studyapp_participant p ON r.participant_id = p.id "
                     "JOIN studyapp_study s ON p.study_id = s.id WHERE s.slug = %s AND p.status = 'started'",
                     (slug,))[0][0] == 0
    page.close()
