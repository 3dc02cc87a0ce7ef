"""The report as one self-contained HTML page (figures embedded as base64 PNG, no script, no external
resource): rendering only. :mod:`analysis.report` computes everything shown here and hands it over as
plain values; nothing here fits or reads an export.

The page is laid out for a 1,366-pixel screen and for print: a column of at most 78 em, tables
that wrap their cells rather than run off the page, figures that shrink to the column.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

__all__ = ["emmeans_html", "figure_html", "header_html", "lrt_table_html", "render_report", "table_html"]

esc = html.escape

CSS = """
body{font-family:system-ui,sans-serif;max-width:78em;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}
p,li,figcaption{max-width:62em}
table{border-collapse:collapse;margin:.6em 0;max-width:100%;table-layout:auto}
td,th{border:1px solid #ccc;padding:2px 5px;text-align:right;font-size:.85em;vertical-align:top;
      overflow-wrap:break-word}
th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.8em;max-width:100%;box-sizing:border-box}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;max-height:380px}
figcaption{font-size:.85em;color:#555;max-width:40em}
.note{color:#7a4a00}
.wrap{max-width:100%;overflow-x:auto}
dl.header{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;margin:.5em 0 1.5em}
dl.header dt{font-weight:600}dl.header dd{margin:0;overflow-wrap:anywhere}
"""


# Where a long name may wrap: after _ / : and a dot before a letter (layer4.2.conv3), never inside a
# number, so that a narrow column breaks "participant_mean" and keeps "0.7333" whole.
_BREAK = re.compile(r"([_/:]|\.(?=[A-Za-z]))")
_TEXT = re.compile(r">([^<]+)<")


def _breakable(markup: str) -> str:
    return _TEXT.sub(lambda m: ">" + _BREAK.sub(r"\1<wbr>", m.group(1)) + "<", markup)


def table_html(df: pd.DataFrame | None, cols=None) -> str:
    if df is None or df.empty:
        return "<p>None.</p>"
    d = df[[c for c in cols if c in df.columns]] if cols else df
    markup = d.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")
    return '<div class="wrap">' + _breakable(markup) + "</div>"


def figure_html(caption: str, paths) -> str:
    png = next(p for p in map(Path, paths) if p.suffix == ".png")
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{esc(caption)} (files: {esc(png.name)}, {esc(png.stem)}.svg)</figcaption></figure>")


def lrt_table_html(rows: list[dict]) -> str:
    """The anova-style table of the likelihood-ratio tests: term, χ², df, p."""
    if not rows:
        return "<p>No term tested.</p>"
    body = []
    for r in rows:
        if r.get("chisq") is None:
            body.append(f"<tr><td>{esc(r['term'])}</td><td colspan=3 class=note>{esc(r.get('note') or '')}</td></tr>")
            continue
        body.append(f"<tr><td>{esc(r['term'])}</td><td>{r['chisq']:.3f}</td><td>{r['df']}</td>"
                    f"<td>{r['p']:.3g}</td></tr>")
    return ('<div class="wrap"><table><thead><tr><th>term</th><th>χ²</th><th>df</th><th>p</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def header_html(header: dict) -> str:
    rows = [("Study", header.get("study")), ("Version", header.get("version")),
            ("Participants", header.get("participants_line")), ("Dates", header.get("dates")),
            ("Exclusion rules", header.get("rules"))]
    return ('<dl class="header">' + "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in rows if v not in (None, "")) + "</dl>")


def machine_html(machine, machine_note, figure: str) -> str:
    if machine is None:
        return f"<p class=note>{esc(machine_note or 'skipped')}</p>"
    pct = f"{100 * machine.level:g} %"
    cond_cols = ["condition", "basis", "layer", "units", "trials", "human_accuracy", "human_ci_low",
                 "human_ci_high", "machine_accuracy", "stored_mis", "mean_delta"]
    unit_cols = ["unit", "basis", "layer", "condition", "trials", "human_accuracy", "human_ci_low",
                 "human_ci_high", "machine_accuracy", "stored_mis", "mean_delta"]
    return (
        "<p>The machine observer of the Machine Interpretability Score (Zimmermann, Klindt &amp; Brendel "
        "2024) predicts a correct answer with probability σ(α·Δ), Δ being the machine's evidence for the "
        "query pair a trial showed. α is fitted to people's answers on main trials by maximum likelihood: "
        f"<strong>{esc(machine.alpha_line())}</strong>. Machine accuracy is the mean of σ(α·Δ) over the "
        f"trials people answered; the stored MIS is the unit's score at α = {machine.default_alpha:g}. "
        f"People's intervals are {pct} Wilson score intervals.</p>"
        + (f"<p>The slope {esc(machine.alpha_glmm_line())}: a typical participant's slope on a typical "
           "unit, with its standard error accounting for answers that share a participant or a unit; the "
           "predictions use the population-averaged α above.</p>" if machine.alpha_glmm else "")
        + "<h3>Per condition</h3>" + table_html(machine.conditions, cond_cols)
        + f"<h3>Correlation of people's and the machine's accuracy across units ({pct} CI: Fisher z; "
          "Spearman with Bonett &amp; Wright's standard error)</h3>"
        + table_html(machine.correlation_table()) + figure
        + f"<details><summary>Every unit ({len(machine.units)} rows)</summary>"
        + table_html(machine.units, unit_cols) + "</details>"
        + "".join(f"<p class=note>{esc(n)}</p>" for n in machine.notes)
    )


def _model_html(title: str, text: str, rows: list[dict] | None, missing: str) -> str:
    if not text:
        return f"<p class=note>{esc(missing)}</p>"
    out = f"<pre>{esc(text)}</pre>"
    if rows is not None:
        out += f"<h4>Likelihood-ratio tests ({esc(title)})</h4>" + lrt_table_html(rows)
    return out


def emmeans_html(em: dict | None, figure: str) -> str:
    """The main model's estimated marginal means and their contrasts (``emmeans`` of results.json's
    model) with the contrasts' forest plot."""
    if not em:
        return ""
    keys = list(em["specs"]) + list(em["by"])
    means = pd.DataFrame(em["emmeans"])
    cols = keys + [c for c in ("estimate", "std_error", "ci_low", "ci_high") if c in means.columns]
    scale = "probability correct" if em["scale"] == "response" else "link scale"
    out = (f"<h4>Estimated marginal means ({esc(scale)}; emmeans' reference grid"
           + (f", averaged over {esc(', '.join(em['averaged_over']))}" if em["averaged_over"] else "")
           + ")</h4>" + table_html(means, cols))
    if em.get("contrasts"):
        c = pd.DataFrame(em["contrasts"])
        ccols = [*em["by"], "contrast", "estimate", "std_error", "statistic", "p"]
        ccols += [k for k in ("odds_ratio", "odds_ratio_ci_low", "odds_ratio_ci_high") if k in c.columns]
        out += (f"<h4>Pairwise contrasts (log odds ratio; p {esc(em['adjust'])}-adjusted within each "
                "group)</h4>" + table_html(c, ccols) + figure)
    return out


def render_report(*, header: dict, results: dict, table, rtc, rtc_cols, units, test, excl,
                  exclusion_source: str, model_text: str, lmm_texts: dict, figures, machine=None,
                  machine_note=None, curves_section: str = "", blocked: str | None = None) -> str:
    """The page. ``blocked``: the one true reason the data sections are empty (everybody excluded),
    shown in place of each section's own fallback."""
    figs = {caption.split(" (")[0]: figure_html(caption, paths) for caption, paths in figures}
    notes = "".join(f"<li>{esc(n)}</li>" for n in excl.notes + results["notes"])

    def fallback(own: str) -> str:
        # the full reason, with its way out, heads the page; each section points to it
        short = f"Not computed: {blocked.split(':')[0]} (see above)." if blocked else own
        return f"<p class=note>{esc(short)}</p>"

    if test is not None:
        test_html = (f"<p>{esc(test.headline())}</p>" + table_html(test.groups) + table_html(test.pairs)
                     + "".join(f"<p class=note>{esc(n)}</p>" for n in test.notes))
    else:
        test_html = fallback("Fewer than two conditions: no comparison.")
    model = results.get("model") or {}
    lmm_html = "".join(
        f"<h3>{esc(r)}</h3>" + _model_html(r, tx, (results["lmm"].get(r) or {}).get("lrt"), "")
        for r, tx in lmm_texts.items())
    ex = results["exclusions"]
    title = "Analysis report" + (f": {header['study']}" if header.get("study") else "")
    glmm_missing = ((f"Not computed: {blocked.split(':')[0]} (see above)." if blocked else None)
                    or next((n for n in results["notes"] if "GLMM" in n or "model" in n), "not fitted"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
</head><body><main>
<h1>Analysis report</h1>
{header_html(header)}
{f'<p class=note><strong>{esc(blocked)}</strong></p>' if blocked else ''}
<h2>Accuracy per condition</h2>
<p>Main trials, catch trials excluded; 95 % bootstrap CIs over participants (ci_*) and units (unit_ci_*).</p>
{table_html(table) if len(table) else fallback("No main trials.")}
{figs.get("Accuracy per condition", "")}
<h2>Per-unit accuracy</h2>
{test_html}
{figs.get("Per-unit accuracy per condition", "")}
<details><summary>Accuracy of every unit ({len(units)} rows)</summary>{table_html(units)}</details>
<h2>Machine observer vs people</h2>
{fallback("") if blocked else machine_html(machine, machine_note, figs.get("Machine observer vs people per unit", ""))}
<h2>The network's curves</h2>
{curves_section}
<h2>Response time and confidence</h2>
<p>Median and quartiles per condition (RT in seconds).</p>
{table_html(rtc, rtc_cols) if len(rtc_cols) > 1 else fallback("No RT or confidence columns.")}
{figs.get("Response time per condition", "")}{figs.get("Confidence ratings per condition", "")}
<h2>Exclusions</h2>
<p>Rules: {esc(exclusion_source)}.
{ex["participants_kept"]} of {ex["participants_total"]} participants kept.</p>
{table_html(excl.excluded) if len(excl.excluded) else "<p>None excluded.</p>"}
<ul>{notes}</ul>
<h2>Mixed-effects model of accuracy (binomial GLMM)</h2>
{_model_html("GLMM", model_text, model.get("lrt"), glmm_missing)}
{emmeans_html(model.get("emmeans"), figs.get("Contrasts of the estimated marginal means", ""))}
<h2>Mixed models of RT and confidence</h2>
<p>log RT (natural log of rt_ms) by a REML linear mixed model on the same terms as the GLMM (its
likelihood-ratio tests refit it by ML); confidence, an ordered rating, by a cumulative-logit mixed
model (as R's ordinal::clmm; Wald z tests), or by a REML LMM where that fails (the notes say so).</p>
{lmm_html or fallback("not fitted (no RT or confidence columns)")}
</main></body></html>
"""
