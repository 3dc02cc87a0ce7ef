"""The demo job's curves (the artifact's SVG figures) render on its admin page in Chromium."""
import pytest

from .participant import admin_password

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.browser, pytest.mark.slow]


def test_the_job_page_draws_the_curves(stack, browser, shots):
    job_id = stack.sql("SELECT id FROM studyapp_stimulusjob WHERE status = 'succeeded' ORDER BY id LIMIT 1")[0][0]
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(f"{stack.base_url}/admin/login/?next=/admin/studyapp/stimulusjob/{job_id}/change/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(stack))
    page.click("input[type=submit]")
    figures = page.locator("figure.job-curve img")
    figures.first.wait_for(timeout=20_000)
    page.wait_for_load_state("load")
    shown = figures.evaluate_all(
        "imgs => imgs.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, "
        "done: i.complete}))")
    kinds = {s["src"].rsplit("-", 1)[-1] for s in shown}
    # the demo job has a class of interest, so all four curves are drawn
    assert kinds == {"explained_variance.svg", "completeness.svg", "essence.svg", "surrogate.svg"}
    for s in shown:
        assert s["done"] and s["w"] > 200 and s["h"] > 100, s
    page.locator("figure.job-curve").first.screenshot(path=shots / "20-job-curves.png")
