"""The rendered report in Debian's Chromium at 1,366 px wide (a common laptop screen): no horizontal
scrolling and no text that overflows its box or overlaps another, with long condition and unit names
that a real study has. A screenshot goes to $SCREENSHOT_DIR (or the test's temporary folder)."""

import os
from pathlib import Path

import pytest

from analysis.report import run_report
from analysis.simulate import simulate_machine_responses

pytestmark = [pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WIDTH = 1366

# Elements whose text must stay inside their own box, and pairs that must not cover each other.
CHECK = """() => {
  const text = 'p, td, th, figcaption, dt, dd, li, h1, h2, h3, h4, summary';
  const overflowing = [...document.querySelectorAll(text)]
    .filter(el => el.offsetParent !== null && el.scrollWidth > el.clientWidth + 1)
    .map(el => el.tagName + ': ' + el.textContent.slice(0, 60));
  // a table wraps its cells to fit the page's column instead of scrolling inside a box of its own
  const column = document.body.getBoundingClientRect();
  const scrolling = [...document.querySelectorAll('table')]
    .filter(el => el.offsetParent !== null && el.getBoundingClientRect().width > column.width + 1)
    .map(el => el.textContent.slice(0, 60));
  const boxes = [...document.querySelectorAll('main > *, figure')]
    .filter(el => el.offsetParent !== null)
    .map(el => [el, el.getBoundingClientRect()]);
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, ra] = boxes[i], [b, rb] = boxes[j];
    if (a.contains(b) || b.contains(a)) continue;
    const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
    const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
    if (w > 1 && h > 1) overlaps.push(a.tagName + ' / ' + b.tagName);
  }
  return {scrollWidth: document.documentElement.scrollWidth, overflowing, scrolling, overlaps};
}"""


def long_named_export():
    df = simulate_machine_responses(n_participants=10, n_units=8, seed=6)
    long = {"neuron": "layer4.2.conv3_neurons_with_natural_references_nine_per_side",
            "pca": "layer4.2.conv3_principal_components_with_feature_visualizations"}
    df["condition"] = df["condition"].map(long).fillna(df["condition"])
    df["unit"] = "resnet50/" + df["unit"].astype(str) + "/a_rather_long_unit_identifier"
    return df


def test_report_fits_a_1366_px_screen(tmp_path):
    from playwright.sync_api import sync_playwright

    out = tmp_path / "report"
    run_report(long_named_export(), out, n_boot=50)
    shots = Path(os.environ.get("SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.goto((out / "report.html").as_uri())
            page.wait_for_load_state("load")
            # open the collapsed per-unit tables too: they must fit as well
            page.evaluate("() => document.querySelectorAll('details').forEach(d => d.open = true)")
            found = page.evaluate(CHECK)
            page.screenshot(path=str(shots / "report-1366.png"), full_page=True)
        finally:
            browser.close()
    assert found["scrollWidth"] <= WIDTH
    assert found["overflowing"] == []
    assert found["scrolling"] == []
    assert found["overlaps"] == []
