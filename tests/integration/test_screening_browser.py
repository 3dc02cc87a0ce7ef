"""Eligibility and the participant's screen in headless Chromium against gunicorn on PostgreSQL: the
virtual chinrest (jsPsych's plugin: a card's width, then the blind spot) before the trials, with query
images scaled to the study's visual angle; and screen-out redirects with Prolific's code, for a window that
stays too small, a phone in a desktop-only study, a browser the study does not support and a viewing
distance out of range."""

import math

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]

CREATE_STUDY = """
from studyapp.models import Condition, Study
demo = Study.objects.get(slug="demo")
study, _ = Study.objects.update_or_create(slug="{slug}", defaults=dict(
    title="Screening", status="live", recruitment="prolific", n_practice=2, n_main=5, catch_ratio=0.2,
    practice_max_attempts=1, participants_per_condition=10, completion_code="DONE", min_instructions_seconds=0,
    screen_out_code="SCREEN-OUT-1", screen_out_url="{base}/admin/login/?cc={{code}}", {fields}))
for c in demo.conditions.all()[:1]:
    Condition.objects.get_or_create(study=study, name=c.name, defaults=dict(
        job=c.job, layer=c.layer, basis=c.basis, reference_type=c.reference_type, paradigm=c.paradigm))
print(study.pk)
"""
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
# The plugin's card starts 250 px wide; a credit card is 85.6 mm (ISO/IEC 7810 ID-1): px2mm = 2.92.
CARD_PX_PER_CM = round(250 / 85.6, 2) * 10


def create_study(stack, slug, **fields):
    shown = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    stack.manage("shell", "-c", CREATE_STUDY.format(slug=slug, base=stack.base_url, fields=shown))


def participant(stack, pid):
    return stack.sql(
        "SELECT status, screen_out_reason, px_per_cm, viewing_distance_cm, image_px "
        "FROM studyapp_participant WHERE recruitment_info->>'SESSION_ID' = %s",
        (f"s-{pid}",),
    )[0]


def open_study(browser, stack, slug, pid, **context):
    page = browser.new_context(viewport={"width": 1280, "height": 860}, **context).new_page()
    page.goto(f"{stack.base_url}/s/{slug}/?PROLIFIC_PID={pid}&STUDY_ID={slug}&SESSION_ID=s-{pid}")
    page.click("#start")
    page.click("#consent-agree")
    page.locator("#study-instructions").wait_for()
    page.click("#instructions-continue")
    return page


def run_chinrest(page):
    page.click("#jspsych-fullscreen-btn")
    page.locator("#study-chinrest-card").wait_for(timeout=20_000)
    page.click("#end_resize_phase")
    for _ in range(3):
        page.locator("#virtual-chinrest-circle").wait_for()
        start = page.eval_on_selector("#virtual-chinrest-circle", "b => b.style.left")
        page.keyboard.press("Space")
        # the dot is moving: the next press records where it is
        page.wait_for_function(
            "left => document.querySelector('#virtual-chinrest-circle').style.left !== left", arg=start, timeout=10_000
        )
        page.keyboard.press("Space")
    page.locator("#distance-report #proceed").click()


def test_the_virtual_chinrest_measures_the_screen_and_scales_the_query_images(stack, browser):
    create_study(stack, "chinrest", virtual_chinrest=True, image_visual_angle_deg=4.0)
    page = open_study(browser, stack, "chinrest", "cr-1")
    run_chinrest(page)
    trial = page.locator("#r2afc[data-state='ready']")
    trial.wait_for(timeout=30_000)
    status, reason, px_per_cm, distance, image_px = participant(stack, "cr-1")
    assert status == "started" and not reason
    assert px_per_cm == pytest.approx(CARD_PX_PER_CM)
    assert 5 <= distance <= 500
    wanted = 2 * distance * math.tan(math.radians(2.0)) * px_per_cm
    assert image_px == pytest.approx(wanted, rel=1e-6)
    # the image fills the frame inside its border
    shown = page.eval_on_selector(".r2afc-query-img", "img => img.getBoundingClientRect().width")
    assert shown == pytest.approx(wanted, abs=1.0)


def test_a_viewing_distance_out_of_range_is_screened_out_and_redirected(stack, browser):
    # Any blind-spot measurement on a 900 px wide task is farther than 6 cm.
    create_study(stack, "chinrest-near", virtual_chinrest=True, max_viewing_distance_cm=6.0)
    page = open_study(browser, stack, "chinrest-near", "cr-2")
    run_chinrest(page)
    page.wait_for_url("**/admin/login/?cc=SCREEN-OUT-1", timeout=30_000)
    assert participant(stack, "cr-2")[:2] == ("screened_out", "chinrest_failed")


def test_a_window_that_stays_too_small_is_screened_out_and_redirected(stack, browser):
    create_study(stack, "small-window", min_width=1600)
    page = open_study(browser, stack, "small-window", "sw-1")
    page.locator("#study-resize").wait_for(timeout=20_000)
    page.click("#browser-check-max-size-btn")
    page.locator("#study-screened-out").wait_for()
    page.wait_for_url("**/admin/login/?cc=SCREEN-OUT-1", timeout=30_000)
    assert participant(stack, "sw-1")[:2] == ("screened_out", "window_too_small")


def test_a_phone_in_a_desktop_only_study_is_screened_out_and_redirected(stack, browser):
    create_study(stack, "desktop-only", desktop_only=True)
    page = open_study(browser, stack, "desktop-only", "ph-1", user_agent=IPHONE)
    page.wait_for_url("**/admin/login/?cc=SCREEN-OUT-1", timeout=30_000)
    assert participant(stack, "ph-1")[:2] == ("screened_out", "mobile_device")


def test_a_browser_the_study_does_not_support_is_screened_out_and_redirected(stack, browser):
    create_study(stack, "firefox-only", supported_browsers="firefox")
    page = open_study(browser, stack, "firefox-only", "ch-1")
    page.wait_for_url("**/admin/login/?cc=SCREEN-OUT-1", timeout=30_000)
    assert participant(stack, "ch-1")[:2] == ("screened_out", "unsupported_browser")
