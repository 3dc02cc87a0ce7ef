"""Terminal tables and a self-contained HTML report (plots embedded as base64)."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .descriptives import (
    accuracy_by_condition,
    describe,
    rt_confidence_by_condition,
    unit_accuracy,
    unit_accuracy_test,
)
from .exclusions import exclude
from .formula import parse_formula
from .glmm import BinomialGLMM
from .lmm import LinearMixedModel, lrt
from .load import main_trials
from .machine import MachineObserver, has_machine_deltas
from .plots import plot_accuracy, plot_confidence, plot_machine_vs_human, plot_rt, plot_unit_accuracy
from .tables import format_table

__all__ = ["DEFAULT_FORMULA", "adapt_formula", "drop_variables", "run_report", "with_response"]

DEFAULT_FORMULA = "correct ~ basis + (1 | participant) + (1 | unit)"
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def _constituents(text: str) -> list[str]:
    return [t for t in dict.fromkeys(_IDENT.findall(text)) if t not in ("C", "I", "np", "log", "exp")]


def drop_variables(formula: str, drop) -> str:
    """``formula`` with every fixed-effect term that involves a variable in ``drop`` removed; a
    ``a * b`` term keeps its other factors (``basis * layer`` without basis → ``layer``)."""
    parsed = parse_formula(formula)
    drop = set(drop)
    terms = []
    for term in (t.strip() for t in parsed.fixed.split("+")):
        names = set(_IDENT.findall(term))
        if not names & drop:
            terms.append(term)
        elif "*" in term and ":" not in term:
            keep = [f.strip() for f in term.split("*") if not set(_IDENT.findall(f)) & drop]
            if keep:
                terms.append(" * ".join(keep))
    fixed = " + ".join(terms) if terms else "1"
    rand = " + ".join(f"({r.expr} | {r.group})" for r in parsed.random)
    return f"{parsed.response} ~ {fixed}" + (f" + {rand}" if rand else "")


def with_response(formula: str, response: str) -> str:
    """The same right-hand side for another response (the LMMs reuse the GLMM's terms)."""
    return f"{response} ~ {formula.split('~', 1)[1].strip()}"


def adapt_formula(formula: str, data: pd.DataFrame) -> tuple[str, list[str]]:
    """Drop fixed-effect variables that are absent or constant in ``data`` (e.g. ``basis`` in a
    single-basis study); returns the formula to fit and what was changed."""
    parsed = parse_formula(formula)
    notes, drop = [], set()
    for tok in _constituents(parsed.fixed):
        if tok not in data.columns:
            drop.add(tok)
            notes.append(f"'{tok}' is not a column of the data: dropped from the fixed effects")
        elif data[tok].nunique(dropna=True) < 2:
            drop.add(tok)
            notes.append(f"the data has a single {tok} ({data[tok].dropna().iloc[0]!r}): "
                         f"'{tok}' dropped from the fixed effects")
    if not drop:
        return formula, notes
    return drop_variables(formula, drop), notes


def _fit_with_lrt(cls, formula: str, data: pd.DataFrame, effect: str, fit_kw: dict) -> dict:
    """Fit ``formula``; when it involves ``effect``, also the model without it and their
    likelihood-ratio test. Returns {formula, fit (MixedResult), lrt (dict or None)}."""
    fit = cls.from_formula(formula, data).fit(**fit_kw)
    out = {"formula": formula, "fit": fit, "lrt": None}
    if effect in _constituents(parse_formula(formula).fixed):
        small_formula = drop_variables(formula, {effect})
        small_kw = dict(fit_kw)
        # only its likelihood is needed
        if cls is BinomialGLMM:
            small_kw["se"] = "rx"
        else:
            small_kw["ddf"] = "normal"
        small = cls.from_formula(small_formula, data).fit(**small_kw)
        out["lrt"] = {"effect": effect, "formula_small": small_formula, "formula_big": formula,
                      **lrt(small, fit)}
    return out


def _lrt_line(t: dict | None) -> str:
    if not t:
        return ""
    by = " (both refitted by ML)" if t.get("refitted_ml") else ""
    return (f"Likelihood-ratio test of {t['effect']}: chi2({t['df']}) = {t['chisq']:.3f}, "
            f"p = {t['p']:.3g}{by}\n  {t['formula_small']}  vs  {t['formula_big']}")


def run_report(df: pd.DataFrame, out_dir, formula: str = DEFAULT_FORMULA, n_boot: int = 2000,
               seed: int = 0, exclusion_options: dict | None = None, fit_model: bool = True,
               effect: str = "basis", exclusions: str = "auto", curves=None) -> dict:
    """Exclusions → descriptives (accuracy, per-unit accuracy and its Kruskal–Wallis/Conover
    test, RT and confidence) → machine observer vs people per unit (when the export carries
    ``mis_delta``) → GLMM with the likelihood-ratio test of ``effect`` → REML LMMs of log RT and
    confidence on the same terms → plots → ``report.html`` and ``results.json``.

    ``exclusions`` (see :func:`analysis.exclusions.exclude`): by default the study's own flags when
    the export carries them and no ``exclusion_options`` are given, else the analysis's rules.

    ``curves``: the stimulus artifact's folder (or its ``figures/``): its curves are shown beside
    people's accuracy per basis (:mod:`analysis.curves`); without it that section says it was skipped."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    excl = exclude(df, exclusions, exclusion_options)
    kept = excl.kept
    main = main_trials(kept)
    notes: list[str] = []

    def section(name, compute, default=None):
        # a section that cannot be computed on these data says so; the rest of the report renders
        try:
            return compute()
        except Exception as exc:
            notes.append(f"{name} not computed: {type(exc).__name__}: {exc}")
            return default

    table = section("accuracy per condition",
                    lambda: accuracy_by_condition(kept, n_boot=n_boot, seed=seed), pd.DataFrame())
    table = section("reference types", lambda: by_reference_type(table, kept), table)
    desc = section("descriptives (results.json)", lambda: describe(kept, n_boot=n_boot, seed=seed), {})
    units = section("per-unit accuracy", lambda: unit_accuracy(kept), pd.DataFrame())
    rtc = section("response time and confidence", lambda: rt_confidence_by_condition(kept), pd.DataFrame())
    test = section("per-unit accuracy test", lambda: unit_accuracy_test(kept, units=units)) if len(units) else None
    notes += _data_notes(main, units)
    figures = []  # (caption, paths)

    def figure(caption, draw):
        paths = section(f"figure '{caption.split(' (')[0]}'", draw)
        if paths:
            figures.append((caption, paths))

    if len(table):
        figure("Accuracy per condition (95 % bootstrap CI over participants)",
               lambda: plot_accuracy(table, out / "accuracy"))
    if len(units):
        figure("Per-unit accuracy per condition (one point per unit)",
               lambda: plot_unit_accuracy(units, out / "unit_accuracy"))
    if "rt_ms" in main.columns and pd.to_numeric(main["rt_ms"], errors="coerce").gt(0).any():
        figure("Response time per condition (box: quartiles, whiskers 1.5 IQR)",
               lambda: plot_rt(main, out / "rt"))
    if "confidence" in main.columns and main["confidence"].notna().any():
        figure("Confidence ratings per condition", lambda: plot_confidence(main, out / "confidence"))
    results = {"exclusions": excl.to_dict(), "descriptives": desc, "machine": None, "model": None,
               "lrt": None, "lmm": {}, "notes": notes}
    machine, machine_note = None, None
    if not has_machine_deltas(kept):
        machine_note = ("skipped: the export has no mis_delta (the machine's Δ per trial; units "
                        "whose measures carry mis_deltas give one)")
    else:
        try:
            machine = MachineObserver(kept).fit()
        except Exception as exc:
            machine_note = f"not computed: {exc}"
    if machine is not None:
        results["machine"] = machine.to_dict()
        figure("Machine observer vs people per unit (people's 95 % Wilson interval; dashed: identity)",
               lambda: plot_machine_vs_human(machine.units, out / "machine_vs_human"))
    else:
        results["machine_note"] = machine_note
    model_text, lmm_texts = "", {}
    if fit_model and main.empty:
        notes.append("no main trials remain after the exclusions: the model is not fitted")
    elif fit_model:
        used, changed = adapt_formula(formula, main)
        notes += changed
        results["formula"] = used
        constant = _constant_response(used, main, binomial=True)
        if constant:
            notes.append(f"GLMM not fitted: {constant}")
        else:
            try:
                g = _fit_with_lrt(BinomialGLMM, used, main, effect, {})
                results["model"] = g["fit"].to_dict()
                results["lrt"] = g["lrt"]
                notes += [f"GLMM: {w}" for w in g["fit"].warnings]
                model_text = g["fit"].summary() + ("\n\n" + _lrt_line(g["lrt"]) if g["lrt"] else "")
            except Exception as exc:  # the report still carries descriptives
                notes.append(f"model not fitted: {exc}")
        for response, frame in _lmm_frames(main).items():
            f, changed = adapt_formula(with_response(formula, response), frame)
            notes += [f"{response} LMM: {n}" for n in changed if n not in notes]
            constant = _constant_response(f, frame, binomial=False)
            if constant:
                notes.append(f"{response} LMM not fitted: {constant}")
                continue
            try:
                m = _fit_with_lrt(LinearMixedModel, f, frame, effect, {"reml": True})
            except Exception as exc:
                notes.append(f"{response} LMM not fitted: {exc}")
                continue
            results["lmm"][response] = {"formula": f, "fit": m["fit"].to_dict(), "lrt": m["lrt"]}
            notes += [f"{response} LMM: {w}" for w in m["fit"].warnings]
            lmm_texts[response] = m["fit"].summary() + (
                "\n\n" + _lrt_line(m["lrt"]) if m["lrt"] else "")
    curves_section = _curves_section(curves, main, results)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.html").write_text(
        _html(results, table, rtc, units, test, excl, model_text, lmm_texts, figures, machine,
              machine_note, curves_section))
    plots = [p for _, paths in figures for p in paths]
    results["files"] = [str(p) for p in [out / "report.html", out / "results.json", *plots]]
    results["text"] = _text(table, rtc, test, excl, model_text, lmm_texts, results["notes"], machine,
                            machine_note)
    return results


def by_reference_type(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The per-condition table with each condition's ``reference_type`` (natural, synthetic, mixed, …)
    beside it, rows grouped by reference type, so natural and synthetic references compare in one
    table and one figure. Unchanged when the export has no reference types."""
    if table.empty or "reference_type" not in df.columns:
        return table
    kinds = df.groupby("condition")["reference_type"].agg(lambda s: "/".join(sorted(set(map(str, s)))))
    out = table.copy()
    out.insert(1, "reference_type", out["condition"].map(kinds))
    return out.sort_values(["reference_type", "condition"], kind="stable").reset_index(drop=True)


def _constant_response(formula: str, data: pd.DataFrame, binomial: bool) -> str | None:
    """Why a model of ``formula`` cannot be fitted to ``data`` because its response does not vary
    (every answer correct, a constant rating), else None."""
    response = parse_formula(formula).response
    if response not in data.columns:
        return None
    values = pd.to_numeric(data[response], errors="coerce").dropna()
    if len(values) and values.nunique() < 2:
        why = ("the binomial model's estimates would diverge" if binomial
               else "the residual variance would be 0")
        return f"{response} is the same ({values.iloc[0]:g}) in every row: nothing to model ({why})"
    return None


def _data_notes(main: pd.DataFrame, units: pd.DataFrame) -> list[str]:
    """What the data leave out of reach: intervals that need two participants, units every
    participant answered alike."""
    out = []
    if main.empty or "condition" not in main.columns:
        return out
    per = main.groupby("condition")["participant"].nunique()
    for cond, n in per[per < 2].items():
        out.append(f"condition {cond!s} has {n} participant: no bootstrap interval over participants "
                   "and no participant variance from it")
    if len(units) and "accuracy" in units.columns:
        at_bound = units[(units["accuracy"] == 0) | (units["accuracy"] == 1)]
        if len(at_bound):
            out.append(f"{len(at_bound)} unit(s) answered at 0 % or 100 % correct "
                       f"({', '.join(map(str, at_bound['unit'].head(5)))}"
                       f"{', ...' if len(at_bound) > 5 else ''}): their intervals reach the bound")
    return out


def _curves_section(curves, main: pd.DataFrame, results: dict) -> str:
    from .curves import accuracy_per_basis, curves_html, read_curves

    if curves is None:
        return ("<p class=note>skipped: the export carries no figures; give the stimulus artifact's folder "
                "(--curves) to show the network's curves beside people's accuracy per basis</p>")
    drawn = read_curves(curves)
    per_basis = accuracy_per_basis(main)
    results["curves"] = {"folder": str(curves), "figures": [c.title for c in drawn],
                         "accuracy_per_basis": per_basis.to_dict(orient="records")}
    return curves_html(drawn, per_basis, _table_html)


def _lmm_frames(main: pd.DataFrame) -> dict:
    """Rows for the LMMs: ``log_rt`` = ln(rt_ms) over positive RTs (unless the data carry a
    ``log_rt`` column); ``confidence`` where rated."""
    frames = {}
    if "log_rt" in main.columns:
        frames["log_rt"] = main.dropna(subset=["log_rt"])
    elif "rt_ms" in main.columns:
        rt = pd.to_numeric(main["rt_ms"], errors="coerce")
        frames["log_rt"] = main[rt > 0].assign(log_rt=np.log(rt[rt > 0]))
    if "confidence" in main.columns:
        conf = pd.to_numeric(main["confidence"], errors="coerce")
        frames["confidence"] = main[conf.notna()].assign(confidence=conf[conf.notna()])
    return {k: v for k, v in frames.items() if len(v)}


_ACC_COLS = ["condition", "reference_type", "trials", "accuracy", "ci_low", "ci_high", "participant_mean",
             "participant_sem"]
_RTC_COLS = ["condition", "rt_median_s", "rt_q1_s", "rt_q3_s", "rt_iqr_s", "confidence_median",
             "confidence_q1", "confidence_q3", "confidence_iqr", "confidence_mean"]


_EXCLUSION_SOURCE = {
    "study": "the study's own rules, as flagged in the export",
    "analysis": "the analysis's rules",
    "none": "none applied",
}


def _text(table, rtc, test, excl, model_text, lmm_texts, notes, machine=None, machine_note=None) -> str:
    cols = [c for c in _ACC_COLS if c in table.columns]
    parts = ["Accuracy per condition (main trials; 95 % bootstrap CI over participants)",
             format_table(table[cols]) if len(table) else "(no main trials)"]
    rcols = [c for c in _RTC_COLS if c in rtc.columns]
    if len(rcols) > 1:
        parts += ["", "Response time (s) and confidence per condition: median, quartiles, IQR",
                  format_table(rtc[rcols])]
    if test is not None:
        parts += ["", "Per-unit accuracy across conditions", test.summary()]
    if machine is not None:
        parts += ["", machine.summary()]
    else:
        parts += ["", f"Machine observer vs people: {machine_note}"]
    parts += ["", f"Excluded participants: {len(excl.excluded)} "
                  f"(exclusions: {_EXCLUSION_SOURCE.get(excl.source, excl.source)})"]
    if len(excl.excluded):
        parts.append(format_table(excl.excluded))
    parts += [f"note: {n}" for n in excl.notes + list(notes)]
    if model_text:
        parts += ["", model_text]
    for response, text in lmm_texts.items():
        parts += ["", f"LMM for {response}", text]
    return "\n".join(parts)


def _table_html(df: pd.DataFrame, cols=None) -> str:
    if df is None or df.empty:
        return "<p>None.</p>"
    d = df[[c for c in cols if c in df.columns]] if cols else df
    return ('<div class="scroll">' + d.to_html(index=False, border=0, na_rep="",
                                              float_format=lambda v: f"{v:.4g}") + "</div>")


def _figure_html(caption: str, paths) -> str:
    png = next(p for p in paths if p.suffix == ".png")
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(caption)} (also {html.escape(png.stem)}.svg)</figcaption></figure>")


def _machine_html(machine, machine_note, figure: str) -> str:
    esc = html.escape
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
        "<h3>Per condition</h3>" + _table_html(machine.conditions, cond_cols)
        + f"<h3>Correlation of people's and the machine's accuracy across units ({pct} CI: Fisher z; "
          "Spearman with Bonett &amp; Wright's standard error)</h3>"
        + _table_html(machine.correlation_table()) + figure
        + f"<details><summary>Every unit ({len(machine.units)} rows)</summary>"
        + _table_html(machine.units, unit_cols) + "</details>"
        + "".join(f"<p class=note>{esc(n)}</p>" for n in machine.notes)
    )


def _html(results, table, rtc, units, test, excl, model_text, lmm_texts, figures, machine=None,
          machine_note=None, curves_section="") -> str:
    figs = {caption.split(" (")[0]: _figure_html(caption, paths) for caption, paths in figures}
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in excl.notes + results["notes"])
    esc = html.escape
    if test is not None:
        t = test
        test_html = (f"<p>{esc(t.headline())}</p>"
                     + _table_html(t.groups) + _table_html(t.pairs)
                     + "".join(f"<p class=note>{esc(n)}</p>" for n in t.notes))
    else:
        test_html = "<p>Fewer than two conditions: no comparison.</p>"
    lmm_html = "".join(f"<h3>{esc(r)}</h3><pre>{esc(tx)}</pre>" for r, tx in lmm_texts.items())
    rcols = [c for c in _RTC_COLS if c in rtc.columns]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Analysis report</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;max-width:62em;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.6em 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right;font-size:.9em}}
th{{background:#f0f0f0}}pre{{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.85em}}
figure{{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}}
figure img{{max-width:100%;height:auto;max-height:360px}}figcaption{{font-size:.85em;color:#555}}
.note{{color:#7a4a00}}.scroll{{overflow-x:auto;max-width:100%}}
</style>
</head><body>
<h1>Analysis report</h1>
<h2>Accuracy per condition</h2>
<p>Main trials, catch trials excluded; 95 % bootstrap CIs over participants (ci_*) and units (unit_ci_*).</p>
{_table_html(table) if len(table) else "<p>No main trials.</p>"}
{figs.get("Accuracy per condition", "")}
<h2>Per-unit accuracy</h2>
{test_html}
{figs.get("Per-unit accuracy per condition", "")}
<details><summary>Accuracy of every unit ({len(units)} rows)</summary>{_table_html(units)}</details>
<h2>Machine observer vs people</h2>
{_machine_html(machine, machine_note, figs.get("Machine observer vs people per unit", ""))}
<h2>The network's curves</h2>
{curves_section}
<h2>Response time and confidence</h2>
<p>Median and quartiles per condition (RT in seconds).</p>
{_table_html(rtc, rcols) if len(rcols) > 1 else "<p>No RT or confidence columns.</p>"}
{figs.get("Response time per condition", "")}{figs.get("Confidence ratings per condition", "")}
<h2>Exclusions</h2>
<p>Rules: {esc(_EXCLUSION_SOURCE.get(excl.source, excl.source))}.
{results["exclusions"]["participants_kept"]} of {results["exclusions"]["participants_total"]} participants kept.</p>
{_table_html(excl.excluded) if len(excl.excluded) else "<p>None excluded.</p>"}
<ul>{notes}</ul>
<h2>Mixed-effects model of accuracy (binomial GLMM)</h2>
<pre>{esc(model_text) or "not fitted"}</pre>
<h2>Linear mixed models (REML)</h2>
<p>log RT (natural log of rt_ms) and confidence on the same terms as the GLMM; the likelihood-ratio
tests refit both models by ML.</p>
{lmm_html or "<p>not fitted (no RT or confidence columns)</p>"}
</body></html>
"""
