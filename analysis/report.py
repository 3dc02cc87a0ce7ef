"""The analysis report: exclusions, descriptives, machine observer, mixed models with a likelihood-ratio
test per term, figures, ``results.json`` and ``report.html`` (rendered by :mod:`analysis.render`), plus
the terminal text.

The model's terms follow the formula: every fixed term is tested by dropping it and refitting
(:func:`lrt_rows`), unless ``tests`` names others. Without a formula the fixed term is ``condition``, or
``basis`` when every condition has a basis of its own (:func:`default_formula`)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ._json import clean
from .checks import DataError, rows_left_out, trial_kinds
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
from .intervals import report_intervals
from .lmm import LinearMixedModel, lrt
from .load import answered, main_trials
from .machine import MachineObserver, has_machine_deltas
from .ordinal import CumulativeLogitMixedModel
from .plots import plot_accuracy, plot_confidence, plot_contrasts, plot_machine_vs_human, plot_rt, plot_unit_accuracy
from .render import render_report, table_html
from .summary import SCHEMA_VERSION
from .tables import format_table

__all__ = ["DEFAULT_FORMULA", "from_formula", "FORMULA_HELP", "ReportError", "adapt_formula", "default_formula",
           "drop_variables", "fixed_variables", "lrt_rows", "run_report", "with_response"]

#: the random part every default formula carries (crossed participants and units, as the papers fit)
RANDOM = "(1 | participant) + (1 | unit)"
#: the default when the data do not say otherwise (see :func:`default_formula`)
DEFAULT_FORMULA = f"correct ~ condition + {RANDOM}"

FORMULA_HELP = (
    "model formula in lme4's notation, e.g. 'correct ~ condition + (1 | participant) + (1 | unit)', "
    "'correct ~ basis * layer + (1 | participant) + (1 | unit)' or "
    "'correct ~ factor(block) + relevel(condition, ref=\"natural\") + (1 | participant)'. Default: "
    "'correct ~ condition + (1 | participant) + (1 | unit)', or basis in place of condition when every "
    "condition has a basis of its own. The log-RT and confidence LMMs reuse its right-hand side.")

# What a report section may meet in the data and still render the rest: bad or too few values
# (ValueError, the export's ExportError among them) and a singular system. A TypeError, NameError or
# AttributeError is a bug and propagates.
DATA_ERRORS = (ValueError, np.linalg.LinAlgError, FloatingPointError, ZeroDivisionError)
#: seconds the main model's profile-likelihood intervals may take before the report shows Wald ones
PROFILE_BUDGET_S = 60.0

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")


class ReportError(ValueError):
    """The report cannot honour its options on these data (a term to test that the data lack)."""


def _constituents(text: str) -> list[str]:
    """The data variables of a formula part: identifiers that are neither a function's name (``factor(``,
    ``log(``), a keyword argument (``ref=``) nor inside a quoted level."""
    text = _STRING.sub(" ", text)
    out = []
    for m in _IDENT.finditer(text):
        tok, rest = m.group(), text[m.end():].lstrip()
        if rest.startswith("(") or (rest.startswith("=") and not rest.startswith("==")):
            continue
        if tok[0] == "." and tok[1:2].isdigit():
            continue  # a number such as .5
        out.append(tok)
    return list(dict.fromkeys(out))


def fixed_variables(formula: str) -> list[str]:
    """The variables of the fixed part, in formula order: the default terms to test."""
    return _constituents(parse_formula(formula).fixed)


def drop_variables(formula: str, drop) -> str:
    """``formula`` with every fixed-effect term that involves a variable in ``drop`` removed; a
    ``a * b`` term keeps its other factors (``basis * layer`` without basis → ``layer``)."""
    parsed = parse_formula(formula)
    drop = set(drop)
    terms = []
    for term in (t.strip() for t in parsed.fixed.split("+")):
        names = set(_constituents(term))
        if not names & drop:
            terms.append(term)
        elif "*" in term and ":" not in term:
            keep = [f.strip() for f in term.split("*") if not set(_constituents(f)) & drop]
            if keep:
                terms.append(" * ".join(keep))
    fixed = " + ".join(terms) if terms else "1"
    rand = " + ".join(f"({r.expr} | {r.group})" for r in parsed.random)
    return f"{parsed.response} ~ {fixed}" + (f" + {rand}" if rand else "")


def with_response(formula: str, response: str) -> str:
    """The same right-hand side for another response (the LMMs reuse the GLMM's terms)."""
    return f"{response} ~ {formula.split('~', 1)[1].strip()}"


def default_formula(data: pd.DataFrame) -> tuple[str, list[str]]:
    """The model a study's question asks for: ``condition`` as the fixed term, or ``basis`` when every
    condition has a basis of its own (then the two say the same and basis reads better). When two
    conditions share a basis (natural vs synthetic references of one basis, two layers), a ``basis``
    term would pool them, so ``condition`` stays and a note says why."""
    if "condition" not in data.columns:
        if "basis" in data.columns:
            return f"correct ~ basis + {RANDOM}", ["the data have no 'condition' column: the fixed term is basis"]
        return f"correct ~ 1 + {RANDOM}", ["the data have neither 'condition' nor 'basis': no fixed term"]
    if "basis" not in data.columns:
        return DEFAULT_FORMULA, []
    pairs = data[["condition", "basis"]].dropna().drop_duplicates()
    per_condition = pairs.groupby("condition")["basis"].nunique()
    per_basis = pairs.groupby("basis")["condition"].nunique()
    if len(pairs) and (per_condition == 1).all() and (per_basis == 1).all():
        return f"correct ~ basis + {RANDOM}", []
    shared = {b: sorted(map(str, pairs.loc[pairs["basis"] == b, "condition"])) for b in per_basis[per_basis > 1].index}
    notes = []
    for b, conds in shared.items():
        notes.append(f"conditions {', '.join(conds)} share the basis {b}: the model's fixed term is condition, "
                     "not basis, so that they are not pooled")
    return DEFAULT_FORMULA, notes


def adapt_formula(formula: str, data: pd.DataFrame, allow_drop: bool = True) -> tuple[str, list[str]]:
    """Drop fixed-effect variables that are absent or constant in ``data``; returns the formula to fit
    and what was changed. A variable the data lack is an error (:class:`ReportError`) unless
    ``allow_drop``: the model would otherwise answer a question nobody asked. A constant one (one basis
    in a single-basis study) is dropped with a note: there is nothing to estimate."""
    parsed = parse_formula(formula)
    notes, drop = [], set()
    missing = [tok for tok in _constituents(parsed.fixed) if tok not in data.columns]
    if missing and not allow_drop:
        raise ReportError(
            f"the formula's fixed part names {', '.join(repr(m) for m in missing)}, which the data lack "
            f"(columns: {', '.join(map(str, data.columns))}); fix the formula or pass --allow-drop to fit "
            "without it")
    for tok in _constituents(parsed.fixed):
        if tok not in data.columns:
            drop.add(tok)
            notes.append(f"'{tok}' is not a column of the data: dropped from the fixed effects (--allow-drop)")
        elif data[tok].nunique(dropna=True) < 2:
            drop.add(tok)
            notes.append(f"the data has a single {tok} ({data[tok].dropna().iloc[0]!r}): "
                         f"'{tok}' dropped from the fixed effects")
    if not drop:
        return formula, notes
    return drop_variables(formula, drop), notes


def from_formula(cls, formula, data, strict, **kw):
    """``cls.from_formula``, with ``strict=True`` passed only when asked for: a model class whose data
    checks have no strict mode says so instead of failing on an unknown keyword."""
    if strict:
        if "strict" not in inspect.signature(cls.from_formula).parameters:
            raise ValueError(f"--strict: {cls.__name__} has no strict data checks in this version")
        kw["strict"] = True
    return cls.from_formula(formula, data, **kw)


def lrt_rows(cls, formula: str, data: pd.DataFrame, big, terms, fit_kw: dict, strict: bool = False) -> list[dict]:
    """One likelihood-ratio test per term: the model without every fixed term that involves it, refitted
    to the same rows, against ``big`` (lme4's ``drop1(fit, test = "Chisq")`` by variable). A term the
    formula does not involve, or whose reduced model cannot be fitted, gets a row with a note and no χ²."""
    present = fixed_variables(formula)
    rows = []
    for term in terms:
        if term not in present:
            rows.append({"term": term, "chisq": None, "df": None, "p": None, "formula_small": None,
                         "formula_big": formula, "refitted_ml": None,
                         "note": f"'{term}' is not a fixed term of {formula!r}"})
            continue
        small_formula = drop_variables(formula, {term})
        small_kw = dict(fit_kw)
        # only the small model's likelihood is needed
        if cls is BinomialGLMM:
            small_kw["se"] = "rx"
        else:
            small_kw["ddf"] = "normal"
        # the rows the full model used: where the dropped term's column has missing values, the
        # smaller model would otherwise gain those rows and the two likelihoods would not compare
        used = data if big.row_labels is None else data.loc[big.row_labels]
        try:
            small = from_formula(cls, small_formula, used, strict).fit(**small_kw)
            test = lrt(small, big)
        except DATA_ERRORS as exc:
            rows.append({"term": term, "chisq": None, "df": None, "p": None, "formula_small": small_formula,
                         "formula_big": formula, "refitted_ml": None,
                         "note": f"not tested: {type(exc).__name__}: {exc}"})
            continue
        rows.append({"term": term, "chisq": test["chisq"], "df": test["df"], "p": test["p"],
                     "formula_small": small_formula, "formula_big": formula,
                     "refitted_ml": bool(test["refitted_ml"]), "note": None})
    return rows


def _fit_with_lrt(cls, formula, data, terms, fit_kw, strict=False, data_name=None) -> tuple:
    fit = from_formula(cls, formula, data, strict).fit(**fit_kw)
    entry = {"formula": formula, "fit": fit.to_dict(data=data_name),
             "lrt": lrt_rows(cls, formula, data, fit, terms, fit_kw, strict)}
    return fit, entry


def lrt_text(rows: list[dict]) -> str:
    """The terminal's anova-style table of the likelihood-ratio tests."""
    if not rows:
        return ""
    by = " (both models refitted by ML)" if any(r.get("refitted_ml") for r in rows) else ""
    table = pd.DataFrame([{"term": r["term"], "Chisq": r["chisq"], "Df": r["df"], "Pr(>Chisq)": r["p"]}
                          for r in rows if r["chisq"] is not None])
    lines = [f"Likelihood-ratio tests, each term dropped in turn{by}:"]
    if len(table):
        lines.append(format_table(table))
    lines += [f"{r['term']}: {r['note']}" for r in rows if r["chisq"] is None]
    return "\n".join(lines)


def _dates(df: pd.DataFrame) -> str | None:
    """First and last time in the export's server timestamps (the browser's are secondary)."""
    stamps = []
    for col in ("participant_started", "server_time", "participant_finished", "trial_served"):
        if col in df.columns:
            t = pd.to_datetime(df[col], errors="coerce", utc=True).dropna()
            if len(t):
                stamps += [t.min(), t.max()]
    if not stamps:
        return None
    lo, hi = min(stamps), max(stamps)
    return f"{lo:%Y-%m-%d %H:%M} – {hi:%Y-%m-%d %H:%M} UTC"


def _rules_line(excl) -> str:
    source = _EXCLUSION_SOURCE.get(excl.source, excl.source)
    counts = "; ".join(f"{name}: {n}" for name, n in excl.counts.items())
    return source + (f" (participants each rule excludes: {counts})" if counts else "")


def report_header(df: pd.DataFrame, excl) -> dict:
    """The study, its version, participants started / completed / excluded, dates and the rules."""
    def values(col):
        return sorted(map(str, df[col].dropna().unique())) if col in df.columns else []

    started = int(df["participant"].nunique()) if "participant" in df.columns else 0
    completed = None
    if "participant_status" in df.columns:
        status = df.groupby("participant")["participant_status"].first()
        completed = int((status == "completed").sum())
    elif "participant_finished" in df.columns:
        completed = int(df.groupby("participant")["participant_finished"].agg(lambda s: s.notna().any()).sum())
    excluded = int(len(excl.excluded))
    line = f"{started} started, " + (f"{completed} completed, " if completed is not None else "") + \
           f"{excluded} excluded, {started - excluded} analysed"
    return {"study": ", ".join(values("study")) or None, "version": ", ".join(values("study_version")) or None,
            "participants_started": started, "participants_completed": completed,
            "participants_excluded": excluded, "participants_line": line, "dates": _dates(df),
            "rules": _rules_line(excl)}


def nobody_left(df: pd.DataFrame, excl) -> str | None:
    """The true reason every data section is empty, when the exclusions left nobody."""
    total = int(df["participant"].nunique()) if "participant" in df.columns else 0
    if total == 0 or excl.kept["participant"].nunique() > 0:
        return None
    source = {"study": "the study's rules", "analysis": "the analysis's rules"}.get(excl.source, "the rules")
    counts = ", ".join(f"{name} {n}" for name, n in excl.counts.items() if n)
    return (f"all {total} participants are excluded by {source}" + (f": {counts}" if counts else "")
            + "; rerun with `--exclusions none` to see the data")


def run_report(df: pd.DataFrame, out_dir, formula: str | None = None, n_boot: int = 2000,
               seed: int = 0, exclusion_options: dict | None = None, fit_model: bool = True,
               tests=None, allow_drop: bool = False, strict: bool = False, exclusions: str = "auto",
               curves=None, data_name: str | None = None, profile_budget_s: float = PROFILE_BUDGET_S) -> dict:
    """Exclusions → descriptives (accuracy, per-unit accuracy and its Kruskal–Wallis/Conover
    test, RT and confidence) → machine observer vs people per unit (when the export carries
    ``mis_delta``) → GLMM of ``formula`` with a likelihood-ratio test per term → REML LMMs of log RT and
    confidence on the same terms → plots (PNG at 300 dpi and SVG) → ``report.html`` and ``results.json``
    (docs/contracts.md §4).

    ``formula``: None for :func:`default_formula`. ``tests``: the variables to test (default: every
    fixed variable of the formula). ``allow_drop``: fit without formula variables the data lack
    (otherwise :class:`ReportError`). ``strict``: the fitting side's data checks refuse rather than drop.

    ``exclusions`` (see :func:`analysis.exclusions.exclude`): by default the study's own flags when
    the export carries them and no ``exclusion_options`` are given, else the analysis's rules.

    ``curves``: the stimulus artifact's folder (or its ``figures/``): its curves are shown beside
    people's accuracy per basis (:mod:`analysis.curves`); without it that section says it was skipped.

    ``profile_budget_s``: the GLMM's profile-likelihood intervals when they finish within it, else
    Wald intervals with a note; confidence is modelled as an ordered rating (cumulative-logit mixed
    model), or by the Gaussian LMM where that fails, with a note."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df, notes = answered(df)
    excl = exclude(df, exclusions, exclusion_options)
    kept = excl.kept
    main = main_trials(kept)
    left_out, _ = rows_left_out(trial_kinds(kept), main.index)
    if left_out:
        notes.append(f"accuracy and the fits use main trials: {left_out}")
    header = report_header(df, excl)
    blocked = nobody_left(df, excl)

    def section(name, compute, default=None):
        # a section the data cannot support says why; the rest of the report renders. Only data
        # errors are caught: a bug is not a "not computed" note.
        if blocked:
            return default
        try:
            return compute()
        except DATA_ERRORS as exc:
            notes.append(f"{name} not computed: {type(exc).__name__}: {exc}")
            return default

    table = section("accuracy per condition",
                    lambda: accuracy_by_condition(kept, n_boot=n_boot, seed=seed), pd.DataFrame())
    table = section("reference types", lambda: by_reference_type(table, kept), table)
    table = section("paradigms", lambda: by_paradigm(table, kept), table)
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
        figure("Response time per condition (box: quartiles, whiskers 1.5 IQR of log RT)",
               lambda: plot_rt(main, out / "rt"))
    if "confidence" in main.columns and main["confidence"].notna().any():
        figure("Confidence ratings per condition", lambda: plot_confidence(main, out / "confidence"))
    results = {"schema_version": SCHEMA_VERSION, "command": "report", "data": data_name,
               "header": {k: v for k, v in header.items() if k != "participants_line"},
               "exclusions": excl.to_dict(), "descriptives": desc, "machine": None,
               "machine_note": None, "formula": None, "tests": None, "model": None, "lmm": {},
               "blocked": blocked, "notes": notes}
    machine, machine_note = None, None
    if blocked:
        machine_note = blocked
    elif not has_machine_deltas(kept):
        machine_note = ("skipped: the export has no mis_delta (the machine's Δ per trial; units "
                        "whose measures carry mis_deltas give one)")
    else:
        try:
            machine = MachineObserver(kept).fit()
        except DATA_ERRORS as exc:
            machine_note = f"not computed: {exc}"
    if machine is not None:
        results["machine"] = machine.to_dict()
        figure("Machine observer vs people per unit (people's 95 % Wilson interval; dashed: identity)",
               lambda: plot_machine_vs_human(machine.units, out / "machine_vs_human"))
    else:
        results["machine_note"] = machine_note
    model_text, lmm_texts = "", {}
    if fit_model:
        if formula is None:
            formula, chosen = default_formula(main if len(main) else df)
            notes += chosen
        # a term the data lack is refused before anything is fitted, whoever is left after exclusions
        adapt_formula(formula, df, allow_drop=allow_drop)
    if fit_model and blocked:
        notes.append(f"the models are not fitted: {blocked}")
    elif fit_model and main.empty:
        notes.append("no main trials remain after the exclusions: the model is not fitted")
    elif fit_model:
        used, changed = adapt_formula(formula, main, allow_drop=allow_drop)
        notes += changed
        terms = list(tests) if tests else fixed_variables(used)
        results["formula"] = used
        results["tests"] = terms
        constant = _constant_response(used, main, binomial=True)
        if constant:
            notes.append(f"GLMM not fitted: {constant}")
        else:
            try:
                fit, entry = _fit_with_lrt(BinomialGLMM, used, main, terms, {}, strict, data_name)
                results["model"] = entry
                notes += [f"GLMM: {n}" for n in [*fit.notes, *fit.warnings]]
                model_text = fit.summary(data=data_name) + ("\n\n" + lrt_text(entry["lrt"]) if entry["lrt"] else "")
                em = section("estimated marginal means", lambda: main_emmeans(fit, used, main))
                if em is not None:
                    entry["emmeans"] = em.to_dict()
                    model_text += "\n\nEstimated marginal means (emmeans, type = \"response\"):\n" + em.summary()
                    if em.contrasts is not None and len(em.contrasts):
                        figure("Contrasts of the estimated marginal means (odds ratios, Tukey-adjusted "
                               "95 % intervals)",
                               lambda: plot_contrasts(em.contrasts, out / "contrasts", by=em.by))
                ci = section("GLMM intervals", lambda: report_intervals(fit, budget_s=profile_budget_s))
                if ci is not None:
                    entry["intervals"] = ci.to_dict()
                    model_text += "\n\n" + ci.summary()
            except DATA_ERRORS as exc:  # the report still carries descriptives
                if strict and isinstance(exc, DataError):
                    raise  # --strict: the data checks refuse, the report is not written
                notes.append(f"GLMM not fitted: {type(exc).__name__}: {exc}")
        for key, (response, frame) in _lmm_frames(main).items():
            f, changed = adapt_formula(with_response(formula, response), frame, allow_drop=allow_drop)
            notes += [f"{key} LMM: {n}" for n in changed if n not in notes]
            constant = _constant_response(f, frame, binomial=False)
            if constant:
                notes.append(f"{key} LMM not fitted: {constant}")
                continue
            if key == "confidence":
                try:
                    clmm = from_formula(CumulativeLogitMixedModel, f, frame, strict).fit()
                except DATA_ERRORS as exc:
                    if strict and isinstance(exc, DataError):
                        raise
                    notes.append(f"confidence: the cumulative-logit mixed model failed ({type(exc).__name__}: "
                                 f"{exc}); the Gaussian LMM is shown instead")
                else:
                    results.setdefault("ordinal", {})["confidence"] = {"formula": f, "fit": clmm.to_dict()}
                    notes += [f"confidence model: {n}" for n in [*clmm.notes, *clmm.warnings]]
                    lmm_texts["confidence"] = clmm.summary()
                    continue
            lmm_terms = [t for t in terms if t in fixed_variables(f)] if tests else fixed_variables(f)
            try:
                fit, entry = _fit_with_lrt(LinearMixedModel, f, frame, lmm_terms, {"reml": True}, strict,
                                           data_name)
            except DATA_ERRORS as exc:
                if strict and isinstance(exc, DataError):
                    raise
                notes.append(f"{key} LMM not fitted: {type(exc).__name__}: {exc}")
                continue
            results["lmm"][key] = entry
            notes += [f"{key} LMM: {n}" for n in [*fit.notes, *fit.warnings]]
            lmm_texts[key] = fit.summary(data=data_name) + (
                "\n\n" + lrt_text(entry["lrt"]) if entry["lrt"] else "")
    curves_section = _curves_section(curves, main, results)
    (out / "results.json").write_text(json.dumps(clean(results), indent=2, default=str))
    rcols = [c for c in _RTC_COLS if c in rtc.columns]
    (out / "report.html").write_text(render_report(
        header=header, results=results, table=table, rtc=rtc, rtc_cols=rcols, units=units,
        test=test, excl=excl, exclusion_source=_EXCLUSION_SOURCE.get(excl.source, excl.source),
        model_text=model_text, lmm_texts=lmm_texts, figures=figures, machine=machine,
        machine_note=machine_note, curves_section=curves_section, blocked=blocked))
    plots = [p for _, paths in figures for p in paths]
    results["files"] = [str(p) for p in [out / "report.html", out / "results.json", *plots]]
    results["text"] = _text(header, table, rtc, test, excl, model_text, lmm_texts, results["notes"], machine,
                            machine_note, blocked, factors=pd.DataFrame((desc or {}).get("factors") or []),
                            paradigms=(desc or {}).get("paradigms"))
    return results


def main_specs(formula: str, data: pd.DataFrame) -> tuple[list[str], list[str]] | None:
    """The marginal means the report shows: natural vs synthetic references (``reference_type``)
    within each level of the model's other factors when the formula has it, else the first factor
    of the formula (condition or basis) within the others; None without a factor."""
    factors = [v for v in fixed_variables(formula) if v in data.columns
               and not pd.api.types.is_numeric_dtype(data[v])]
    if not factors:
        return None
    first = "reference_type" if "reference_type" in factors else factors[0]
    return [first], [v for v in factors if v != first]


def main_emmeans(fit, formula: str, data: pd.DataFrame):
    """The main model's estimated marginal means on the response scale with Tukey-adjusted pairwise
    contrasts (``analysis.emmeans``), or None when the formula has no factor."""
    from .emmeans import emmeans

    specs = main_specs(formula, data)
    if specs is None:
        return None
    return emmeans(fit, specs[0], by=specs[1], type="response", pairs=True, adjust="tukey")


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


def by_paradigm(table: pd.DataFrame, df: pd.DataFrame) -> pd.DataFrame:
    """The per-condition table with each condition's ``paradigm`` (reference_2afc, ordered_strip,
    occlusion_2afc) beside it and the rows grouped by paradigm, the order within one kept: accuracies of
    different tasks sit in separate groups, never side by side as if comparable. Unchanged when the export
    has no paradigm."""
    if table.empty or "paradigm" not in df.columns:
        return table
    kinds = df.groupby("condition")["paradigm"].agg(lambda s: "/".join(sorted(set(map(str, s)))))
    out = table.copy()
    out.insert(1, "paradigm", out["condition"].map(kinds))
    return out.sort_values(["paradigm"], kind="stable").reset_index(drop=True)


def _constant_response(formula: str, data: pd.DataFrame, binomial: bool) -> str | None:
    """Why a model of ``formula`` cannot be fitted to ``data`` because its response does not vary
    (every answer correct, a constant rating), else None."""
    # a transform of one column (log(rt_ms)) is constant where the column is
    response = _column(parse_formula(formula).response)
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
    return curves_html(drawn, per_basis, table_html)


def _lmm_frames(main: pd.DataFrame) -> dict:
    """The LMMs' responses and rows, by results key: ``log_rt`` models ``log(rt_ms)`` (or the data's own
    ``log_rt`` column) and ``confidence`` the rating, both where the data carry any value.

    The rows are not filtered here: the fitting side's data checks drop a missing value, and an RT ≤ 0
    (a recording error; Borowski et al.'s data hold one at −69 ms) that ``log`` cannot take, each with
    a note naming the column and the count, or refuse it under ``strict``."""
    frames = {}
    if "log_rt" in main.columns:
        frames["log_rt"] = ("log_rt", main.assign(log_rt=pd.to_numeric(main["log_rt"], errors="coerce")))
    elif "rt_ms" in main.columns:
        frames["log_rt"] = ("log(rt_ms)", main.assign(rt_ms=pd.to_numeric(main["rt_ms"], errors="coerce")))
    if "confidence" in main.columns:
        frames["confidence"] = ("confidence",
                                main.assign(confidence=pd.to_numeric(main["confidence"], errors="coerce")))
    return {k: (response, frame) for k, (response, frame) in frames.items()
            if frame[_column(response)].notna().any()}


def _column(response: str) -> str:
    """The data column of an LMM's response (``log(rt_ms)`` → ``rt_ms``)."""
    return response[response.index("(") + 1:-1] if response.endswith(")") else response


_ACC_COLS = ["condition", "paradigm", "reference_type", "trials", "accuracy", "ci_low", "ci_high", "participant_mean",
             "participant_sem"]
_RTC_COLS = ["condition", "rt_median_s", "rt_q1_s", "rt_q3_s", "rt_iqr_s", "confidence_median",
             "confidence_q1", "confidence_q3", "confidence_iqr", "confidence_mean"]


_EXCLUSION_SOURCE = {
    "study": "the study's own rules, as flagged in the export",
    "analysis": "the analysis's rules",
    "none": "none applied",
}


def _text(header, table, rtc, test, excl, model_text, lmm_texts, notes, machine=None, machine_note=None,
          blocked=None, factors=None, paradigms=None) -> str:
    head = [f"Study: {header['study'] or '(not named in the export)'}"
            + (f", version {header['version']}" if header.get("version") else ""),
            f"Participants: {header['participants_line']}"]
    if header.get("dates"):
        head.append(f"Dates: {header['dates']}")
    head += [f"Exclusion rules: {header['rules']}", ""]
    if blocked:
        head += [blocked, ""]
    cols = [c for c in _ACC_COLS if c in table.columns]
    parts = head + ["Accuracy per condition (main trials; 95 % bootstrap CI over participants)",
                    format_table(table[cols]) if len(table) else f"({blocked or 'no main trials'})"]
    paradigms = pd.DataFrame(paradigms or [])
    if len(paradigms):
        pcols = ["paradigm", "reference_type", *[c for c in _ACC_COLS[3:] if c in paradigms.columns]]
        parts += ["", "Accuracy per paradigm and reference type (main trials; 95 % bootstrap CI over participants)",
                  format_table(paradigms[pcols])]
    if factors is not None and len(factors):
        fcols = ["factor", "level", *[c for c in _ACC_COLS if c in factors.columns and c != "condition"]]
        parts += ["", "Accuracy per factor level (main trials, pooled over the other factors)",
                  format_table(factors[fcols])]
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
