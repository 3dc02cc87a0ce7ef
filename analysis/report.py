"""Terminal tables and a self-contained HTML report (plots embedded as base64)."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .descriptives import accuracy_by_condition, describe
from .exclusions import apply_exclusions
from .formula import parse_formula
from .glmm import BinomialGLMM
from .load import main_trials
from .plots import plot_accuracy

__all__ = ["DEFAULT_FORMULA", "adapt_formula", "format_table", "run_report"]

DEFAULT_FORMULA = "correct ~ basis + (1 | participant) + (1 | unit)"
_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


def format_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain fixed-width table for the terminal."""
    if df.empty:
        return "(empty)"
    cells = [[str(c) for c in df.columns]]
    for row in df.itertuples(index=False):
        cells.append([
            f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v) for v in row
        ])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def adapt_formula(formula: str, data: pd.DataFrame) -> tuple[str, list[str]]:
    """Drop fixed-effect variables that are absent or constant in ``data`` (e.g. ``basis`` in a
    single-basis study); returns the formula to fit and what was changed."""
    parsed = parse_formula(formula)
    notes, drop = [], set()
    for tok in dict.fromkeys(_IDENT.findall(parsed.fixed)):
        if tok in ("C", "I", "np", "log", "exp"):
            continue
        if tok not in data.columns:
            drop.add(tok)
            notes.append(f"'{tok}' is not a column of the data: dropped from the fixed effects")
        elif data[tok].nunique(dropna=True) < 2:
            drop.add(tok)
            notes.append(f"the data has a single {tok} ({data[tok].dropna().iloc[0]!r}): "
                         f"'{tok}' dropped from the fixed effects")
    if not drop:
        return formula, notes
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
    return f"{parsed.response} ~ {fixed}" + (f" + {rand}" if rand else ""), notes


def run_report(df: pd.DataFrame, out_dir, formula: str = DEFAULT_FORMULA, n_boot: int = 2000,
               seed: int = 0, exclusion_options: dict | None = None, fit_model: bool = True) -> dict:
    """Exclusions → descriptives → GLMM → plots → ``report.html`` and ``results.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    excl = apply_exclusions(df, **(exclusion_options or {}))
    kept = excl.kept
    table = accuracy_by_condition(kept, n_boot=n_boot, seed=seed)
    desc = describe(kept, n_boot=n_boot, seed=seed)
    plots = plot_accuracy(table, out / "accuracy") if len(table) else []
    results = {"exclusions": excl.to_dict(), "descriptives": desc, "model": None, "notes": []}
    model_text = ""
    main = main_trials(kept)
    if fit_model and main.empty:
        results["notes"].append("no main trials remain after the exclusions: the model is not fitted")
    elif fit_model:
        used, notes = adapt_formula(formula, main)
        results["notes"] += notes
        results["formula"] = used
        try:
            fit = BinomialGLMM.from_formula(used, main).fit()
            results["model"] = fit.to_dict()
            model_text = fit.summary()
        except Exception as exc:  # the report still carries descriptives
            results["notes"].append(f"model not fitted: {exc}")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "report.html").write_text(_html(results, table, excl, model_text, plots))
    results["files"] = [str(p) for p in [out / "report.html", out / "results.json", *plots]]
    results["text"] = _text(table, excl, model_text, results["notes"])
    return results


def _text(table, excl, model_text, notes) -> str:
    cols = [c for c in ["condition", "trials", "accuracy", "ci_low", "ci_high", "participant_mean",
                        "participant_sem", "median_rt_s", "mean_confidence"] if c in table.columns]
    parts = ["Accuracy per condition (main trials; 95 % bootstrap CI over participants)",
             format_table(table[cols]) if len(table) else "(no main trials)", "",
             f"Excluded participants: {len(excl.excluded)}"]
    if len(excl.excluded):
        parts.append(format_table(excl.excluded))
    parts += [f"note: {n}" for n in excl.notes + list(notes)]
    if model_text:
        parts += ["", model_text]
    return "\n".join(parts)


def _html(results, table, excl, model_text, plots) -> str:
    imgs = ""
    for p in plots:
        if p.suffix == ".png":
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            imgs += f'<img alt="accuracy per condition" src="data:image/png;base64,{b64}">'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in excl.notes + results["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Analysis report</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>Analysis report</h1>
<h2>Accuracy per condition</h2>
<p>Main trials, catch trials excluded; 95 % bootstrap CIs over participants (ci_*) and units (unit_ci_*).</p>
{table.to_html(index=False, float_format=lambda v: f"{v:.4f}") if len(table) else "<p>No main trials.</p>"}
{imgs}
<h2>Exclusions</h2>
<p>{results["exclusions"]["participants_kept"]} of {results["exclusions"]["participants_total"]} participants kept.</p>
{excl.excluded.to_html(index=False) if len(excl.excluded) else "<p>None excluded.</p>"}
<ul>{notes}</ul>
<h2>Mixed-effects model</h2>
<pre>{html.escape(model_text) or "not fitted"}</pre>
</body></html>
"""
