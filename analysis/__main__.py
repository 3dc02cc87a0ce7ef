"""``python -m analysis {report,describe,machine,glmm,lmm,emmeans,compare} FILE ...`` and ``python -m analysis power ...``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .exclusions import MODES, exclude
from .load import ExportError, answered, model_trials, normalise, read_responses, read_table
from .report import FORMULA_HELP, from_formula
from .satterthwaite import DDF_METHODS
from .summary import SCHEMA_VERSION
from .tables import format_table

R_FORMULA_SYNTAX = """\
formula syntax (lme4's, as in R):
  response ~ fixed terms + (random terms | group)
  a + b, a * b (= a + b + a:b), a:b    main effects and interactions
  (1 | participant) + (1 | unit)       crossed random intercepts
  (days | subject), (1 | batch/cask)   random slope with correlation; nested groups
  factor(period)                       a numeric column as categories
  relevel(condition, ref="natural")    the reference level of a factor
  I(days^2)                            arithmetic inside I(): ^ is a power, as in R
  offset(log(size))                    a known term with coefficient 1
  cbind(k, n - k) ~ ...                successes and failures (glmm)
  log(rt_ms) ~ ...                     a transformed response (lmm)
examples:
  python -m analysis glmm export.csv --formula "correct ~ condition + (1 | participant) + (1 | unit)"
  python -m analysis glmm cbpp.csv --all-trials \\
      --formula "cbind(incidence, size - incidence) ~ factor(period) + (1 | herd)"
  python -m analysis lmm sleepstudy.csv --all-trials --formula "Reaction ~ Days + (Days | Subject)" --correlation
"""


def _envelope(command: str, body: dict) -> dict:
    """Every command's --json: the contract's version and the command first (docs/contracts.md §4)."""
    return {"schema_version": SCHEMA_VERSION, "command": command, **body}


def _read_for_model(args) -> tuple:
    """The rows to fit and what choosing them left out: ``(frame, notes, counts)``. An export's main,
    non-catch trials unless ``--all-trials``; any other table whole."""
    df = read_table(args.file, args.map)
    if "trial_kind" in df.columns and "correct" in df.columns and not args.all_trials:
        needed = {"participant", "condition", "unit", "trial_kind", "correct"}
        if needed <= set(df.columns):
            df, note, counts = model_trials(normalise(df))
            return df, [note] if note else [], counts
    return df, [], {}


def _fit_model(cls, args, fit_kw: dict, **kw):
    """Fit ``args.formula`` to the rows ``_read_for_model`` chose; the rows the selection left out go
    first among the fit's notes and counts, so the summary and the JSON say them like the data
    checks' own."""
    data, notes, counts = _read_for_model(args)
    fit = from_formula(cls, args.formula, data, args.strict, **kw).fit(**fit_kw)
    fit.notes[:0] = notes
    fit.n_dropped = {**counts, **fit.n_dropped}
    return fit


def _parse_accuracy(text: str) -> dict:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"bad --accuracy entry {part!r}: expected condition=accuracy")
        out[name.strip()] = float(value)
    return out


def _exclusion_options(args) -> dict | None:
    """The rule options actually given; None when none was (so that ``auto`` may pick the study's
    own flags)."""
    given = {
        "min_catch_accuracy": args.min_catch_accuracy,
        "min_instructions_s": args.min_instructions_s,
        "min_total_minutes": args.min_total_minutes,
        "max_total_minutes": args.max_total_minutes,
        "max_fast_answer_share": args.max_fast_answer_share,
        "min_answer_interval_ms": args.min_answer_interval_ms,
        "one_side_alpha": args.one_side_alpha,
    }
    options = {k: v for k, v in given.items() if v is not None}
    if args.no_one_side_rule:
        options["exclude_one_side"] = False
    if args.keep_flagged:
        options["exclude_flagged"] = False
    return options or None


def _parse_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _power(args) -> None:
    from .power import power_analysis

    groups = [[c.strip() for c in g.split(",") if c.strip()] for g in args.groups.split(";")] \
        if args.groups else None
    res = power_analysis(
        _parse_accuracy(args.accuracy), _parse_ints(args.participants), units=args.units,
        trials=args.trials, participant_sd=args.participant_sd, unit_sd=args.unit_sd,
        sims=args.sims, seed=args.seed, alpha=args.alpha, jobs=args.jobs, design=args.design,
        groups=groups)
    print(json.dumps(_envelope("power", res.to_dict()), indent=2) if args.json else res.summary())


def _describe(args) -> None:
    from .descriptives import (
        accuracy_by_condition,
        accuracy_by_factor,
        accuracy_by_paradigm,
        describe,
        rt_confidence_by_condition,
        unit_accuracy_test,
    )

    df, notes = answered(read_responses(args.file, args.map))
    if args.json:
        body = {**describe(df, n_boot=args.n_boot, seed=args.seed), "notes": notes}
        print(json.dumps(_envelope("describe", body), indent=2))
        return
    print("\n".join(f"note: {n}" for n in notes) + ("\n" if notes else ""), end="")
    print(format_table(accuracy_by_condition(df, n_boot=args.n_boot, seed=args.seed)))
    paradigms = accuracy_by_paradigm(df, n_boot=args.n_boot, seed=args.seed)
    if len(paradigms):
        print("\nAccuracy per paradigm and reference type")
        print(format_table(paradigms))
    factors = accuracy_by_factor(df, n_boot=args.n_boot, seed=args.seed)
    if len(factors):
        print("\nAccuracy per factor level (pooled over the other factors)")
        print(format_table(factors))
    rtc = rt_confidence_by_condition(df)
    if rtc.shape[1] > 1:
        print("\nResponse time (s) and confidence: median, quartiles, IQR")
        print(format_table(rtc))
    test = unit_accuracy_test(df)
    if test is not None:
        print("\nPer-unit accuracy across conditions\n" + test.summary())


def _report(args) -> None:
    from .report import run_report

    df = read_responses(args.file, args.map)
    res = run_report(
        df, args.out, formula=args.formula, n_boot=args.n_boot, seed=args.seed,
        fit_model=not args.no_model, exclusions=args.exclusions, tests=args.test,
        allow_drop=args.allow_drop, strict=args.strict,
        exclusion_options=_exclusion_options(args), curves=args.curves, data_name=Path(args.file).name,
        profile_budget_s=args.profile_budget,
    )
    text = res.pop("text")
    print(json.dumps(res, indent=2, default=str) if args.json else text)
    if not args.json:
        print("\nwrote " + ", ".join(res["files"]))


def _machine(args) -> None:
    from .machine import MachineObserver

    df, notes = answered(read_responses(args.file, args.map))
    excl = exclude(df, args.exclusions, _exclusion_options(args))
    types = None if args.reference_types.strip().lower() == "all" else tuple(
        t.strip() for t in args.reference_types.split(",") if t.strip())
    fit = MachineObserver(excl.kept, level=args.level, reference_types=types).fit()
    if args.json:
        body = fit.to_dict()
        body["notes"] = notes + list(body["notes"])
        print(json.dumps(_envelope("machine", {**body, "exclusions": excl.to_dict()}), indent=2))
        return
    kept = excl.to_dict()
    print(fit.summary())
    print(f"\nparticipants kept: {kept['participants_kept']} of {kept['participants_total']}")
    print("\n".join(f"note: {n}" for n in notes + excl.notes))


def _show_fit(args, fit) -> None:
    name = Path(args.file).name
    ci = _intervals(args, fit)
    if args.json:
        body = fit.to_dict(data=name)
        if ci is not None:
            body["intervals"] = ci.to_dict()
        print(json.dumps(_envelope(args.cmd, body), indent=2))
    else:
        print(fit.summary(data=name, correlation=args.correlation))
        if ci is not None:
            print("\n" + ci.summary())


# -- intervals, residual check, ordinal model (issue 31, second half) ------------------------------
def _data_options(p, all_trials: bool = True) -> None:
    """--strict, and --all-trials for the commands that fit a model: every fitting command reads its rows
    the same way."""
    p.add_argument("--strict", action="store_true",
                   help="data checks refuse impossible values instead of dropping them with a note")
    if all_trials:
        p.add_argument("--all-trials", action="store_true",
                       help="fit every row (default: main, non-catch trials of an export)")


def _interval_options(p) -> None:
    p.add_argument("--ci", choices=("wald", "profile", "boot"), default=None,
                   help="confidence intervals of every fixed effect and random-effect SD, as lme4's "
                        "confint(): wald, profile (likelihood profile) or boot (parametric bootstrap)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of --ci")
    p.add_argument("--boot-n", type=int, default=200, help="bootstrap simulations for --ci boot")
    p.add_argument("--seed", type=int, default=0, help="random seed of --ci boot")


def _intervals(args, fit):
    if getattr(args, "ci", None) is None:
        return None
    from .intervals import confint

    return confint(fit, args.ci, level=args.level, n_boot=args.boot_n, seed=args.seed)


def _clmm(args) -> None:
    from .ordinal import CumulativeLogitMixedModel

    data, notes, _ = _read_for_model(args)
    fit = from_formula(CumulativeLogitMixedModel, args.formula, data, args.strict).fit()
    fit.notes[:0] = notes
    if args.json:
        print(json.dumps(_envelope("clmm", {**fit.to_dict(), "data": Path(args.file).name}), indent=2))
    else:
        print(fit.summary())


def _residual_check(args) -> None:
    from .glmm import BinomialGLMM
    from .lmm import LinearMixedModel
    from .residuals import plot_qq, simulate_residuals

    cls = LinearMixedModel if args.lmm else BinomialGLMM
    kw = {"trials": args.trials} if args.trials and not args.lmm else {}
    fit = _fit_model(cls, args, {}, **kw)
    check = simulate_residuals(fit, n_sim=args.n_sim, seed=args.seed)
    files = [str(p) for p in plot_qq(check, args.plot)] if args.plot else []
    if args.json:
        body = {"formula": fit.formula, "kind": fit.kind, "data": Path(args.file).name,
                **check.to_dict(), "files": files}
        print(json.dumps(_envelope("residual-check", body), indent=2))
    else:
        print(check.summary())
        if files:
            print("wrote " + ", ".join(files))


def _second_half_commands(sub, common) -> None:
    p = sub.add_parser("residual-check",
                       help="simulation-based residual check of a GLMM (or LMM), as R's DHARMa",
                       epilog=R_FORMULA_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("--formula", required=True, help="the model, as for glmm")
    p.add_argument("--lmm", action="store_true", help="the model is a linear mixed model (default: binomial GLMM)")
    p.add_argument("--trials", default=None, help="column of numbers of trials (response = successes)")
    p.add_argument("--n-sim", type=int, default=250, help="simulations per observation (DHARMa's n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, metavar="STEM",
                   help="write the QQ plot as STEM.png and STEM.svg")
    _data_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_residual_check)

    p = sub.add_parser("clmm", help="cumulative-logit mixed model of an ordered rating (ordinal::clmm)",
                       epilog=R_FORMULA_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("--formula", required=True,
                   help="e.g. 'confidence ~ condition + (1 | participant) + (1 | unit)' (random "
                        "intercepts only; the thresholds take the intercept's place)")
    _data_options(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_clmm)


def _glmm(args) -> None:
    from .glmm import BinomialGLMM

    kw = {"trials": args.trials} if args.trials else {}
    _show_fit(args, _fit_model(BinomialGLMM, args, {}, **kw))


def _lmm(args) -> None:
    from .lmm import LinearMixedModel

    _show_fit(args, _fit_model(LinearMixedModel, args, {"reml": args.reml, "ddf": args.ddf}))


# -- inference after the fit: emmeans, compare (analysis.emmeans, analysis.compare) --------------------
def _family_of(args, data) -> str:
    """binomial when the response is cbind(…) or takes only 0/1 (bool) values, else gaussian."""
    import pandas as pd

    if args.family != "auto":
        return args.family
    response = args.formula.split("~", 1)[0].strip()
    if response.startswith("cbind(") or args.trials:
        return "binomial"
    if response in data.columns:
        col = data[response].dropna()
        if col.dtype == bool or set(pd.unique(col.astype(str))) <= {"0", "1", "0.0", "1.0", "True", "False"}:
            return "binomial"
    return "gaussian"


def _fit_any(args, formula: str, data=None):
    from .glmm import BinomialGLMM
    from .lmm import LinearMixedModel

    args = argparse.Namespace(**{**vars(args), "formula": formula})
    if data is None:
        data, _, _ = _read_for_model(args)
    if _family_of(args, data) == "binomial":
        kw = {"trials": args.trials} if args.trials else {}
        return _fit_model(BinomialGLMM, args, {}, **kw)
    return _fit_model(LinearMixedModel, args, {"reml": True, "ddf": args.ddf})


def _emmeans(args) -> None:
    from .emmeans import emmeans, parse_at

    fit = _fit_any(args, args.formula)
    res = emmeans(fit, args.specs, type=args.type, pairs=args.pairs, adjust=args.adjust,
                  at=parse_at(args.at), level=args.level)
    if args.json:
        print(json.dumps(_envelope("emmeans", {**res.to_dict(), "data": Path(args.file).name}), indent=2))
    else:
        print(res.summary())


def _compare(args) -> None:
    from .compare import anova, wald_summary, wald_table

    data, _, _ = _read_for_model(args)
    fits = [_fit_any(args, f, data) for f in args.formula]
    table = anova(*fits) if len(fits) > 1 else None
    walds = [(f, wald_table(f)) for f in fits] if args.anova else []
    if args.json:
        body = {"data": Path(args.file).name, "lrt": table.to_dict()["models"] if table else None,
                "refitted_ml": table.refitted_ml if table else None,
                "anova": [{"formula": f.formula, "ddf": f.ddf,
                           "terms": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                      for k, v in r.items()} for r in w.to_dict(orient="records")]}
                          for f, w in walds] if args.anova else None}
        print(json.dumps(_envelope("compare", body), indent=2))
        return
    out = [table.summary()] if table else []
    out += [f"{f.formula}\n{wald_summary(w, f)}" for f, w in walds]
    print("\n\n".join(out))


def _inference_parsers(sub, common) -> None:
    def model_options(p):
        common(p)
        p.add_argument("--family", choices=("auto", "binomial", "gaussian"), default="auto",
                       help="binomial GLMM or LMM; auto: binomial for a 0/1 or cbind() response")
        p.add_argument("--trials", default=None, help="column of numbers of trials (binomial)")
        p.add_argument("--ddf", choices=DDF_METHODS, default="satterthwaite",
                       help="an LMM's denominator df: satterthwaite (default), kenward-roger or normal")
        _data_options(p)
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("emmeans", help="estimated marginal means and pairwise contrasts (R's emmeans)",
                       epilog=R_FORMULA_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_options(p)
    p.add_argument("--formula", required=True, help="model formula in lme4's notation")
    p.add_argument("--specs", required=True,
                   help="the means wanted, as emmeans' formula: 'ref', 'ref | cond', 'ref * stim | cond'")
    p.add_argument("--type", choices=("response", "link"), default="response",
                   help="response (default): a GLMM's probabilities by the delta method; link: log-odds")
    p.add_argument("--pairs", action="store_true", help="pairwise contrasts within each by group")
    p.add_argument("--adjust", choices=("tukey", "holm", "bonferroni", "none"), default="tukey",
                   help="p-value adjustment of the contrasts within each by group (default tukey, as pairs())")
    p.add_argument("--at", nargs="+", default=None, metavar="NAME=VALUE",
                   help="fix a variable of the reference grid: Days=5, or ref=natural,synthetic")
    p.add_argument("--level", type=float, default=0.95)
    p.set_defaults(func=_emmeans)

    p = sub.add_parser("compare", help="likelihood-ratio tests of nested models (anova(m1, m2)) and Wald tables",
                       epilog=R_FORMULA_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
    model_options(p)
    p.add_argument("--formula", action="append", required=True,
                   help="a model formula; give it twice or more to compare nested models")
    p.add_argument("--anova", action="store_true",
                   help="a Type III Wald table per term of each model (LMM: F on the --ddf df)")
    p.set_defaults(func=_compare)
# -- end of the inference commands ---------------------------------------------------------------------


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("file", help="response export (.csv or .parquet)")
        p.add_argument("--map", default=None,
                       help="column mapping ours=theirs,... for foreign data, or 'borowski'")

    def exclusion_options(p):
        p.add_argument("--exclusions", choices=MODES, default="auto",
                       help="study: the study's own flags in the export (excluded, excl_*); own: the "
                            "rule options below; none; auto (default): the study's flags when the "
                            "export has them and no rule option is given, else the rules")
        p.add_argument("--min-catch-accuracy", type=float, default=None, help="default 0.8")
        p.add_argument("--min-instructions-s", type=float, default=None, help="default 15")
        p.add_argument("--no-one-side-rule", action="store_true")
        p.add_argument("--one-side-alpha", type=float, default=None,
                       help="the one-side rule's false-positive rate: one side throughout excludes only from "
                            "the answer count at which an honest participant does it by chance less often "
                            "(default 0.001: 11 answers)")
        p.add_argument("--min-total-minutes", type=float, default=None)
        p.add_argument("--max-total-minutes", type=float, default=None)
        p.add_argument("--max-fast-answer-share", type=float, default=None,
                       help="default 0.25: share of answers the server received within the minimum interval")
        p.add_argument("--min-answer-interval-ms", type=float, default=None, help="default 1500")
        p.add_argument("--keep-flagged", action="store_true",
                       help="keep participants the export flags for automation or inattention")

    p = sub.add_parser("report", help="exclusions, descriptives, machine vs people, GLMM, plots, HTML report")
    common(p)
    p.add_argument("--formula", default=None, help=FORMULA_HELP)
    p.add_argument("--test", nargs="+", default=None, metavar="TERM",
                   help="fixed terms (variables) to test, each by a likelihood-ratio test of the model "
                        "without it; default: every fixed term of the formula")
    p.add_argument("--allow-drop", action="store_true",
                   help="fit without formula variables the data lack (default: an error)")
    _data_options(p, all_trials=False)
    p.add_argument("--out", default="analysis_report")
    p.add_argument("--curves", default=None,
                   help="the stimulus artifact's folder (or its figures/): its curves beside people's accuracy")
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    exclusion_options(p)
    p.add_argument("--no-model", action="store_true")
    p.add_argument("--profile-budget", type=float, default=60.0, metavar="SECONDS",
                   help="the GLMM's profile-likelihood intervals when they finish within this time, "
                        "else Wald intervals (said so); 0: Wald")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_report)

    p = sub.add_parser("machine", help="machine observer (MIS) vs people's accuracy per unit")
    common(p)
    exclusion_options(p)
    p.add_argument("--reference-types", default="natural",
                   help="conditions' reference types to compare, comma-separated, or 'all' "
                        "(default natural: Δ is measured against both reference sets)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_machine)

    p = sub.add_parser("describe", help="accuracy per condition with bootstrap CIs")
    common(p)
    p.add_argument("--n-boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_describe)

    for name, func in (("glmm", _glmm), ("lmm", _lmm)):
        p = sub.add_parser(name, help=f"fit a {'binomial GLMM' if name == 'glmm' else 'linear mixed model'}",
                           epilog=R_FORMULA_SYNTAX, formatter_class=argparse.RawDescriptionHelpFormatter)
        common(p)
        p.add_argument("--formula", required=True,
                       help="model formula in lme4's notation (see the syntax below), e.g. "
                            "'correct ~ condition + (1 | participant) + (1 | unit)'")
        _data_options(p)
        p.add_argument("--correlation", action="store_true",
                       help="print the correlation of the fixed effects, as summary(fit, correlation = TRUE)")
        p.add_argument("--json", action="store_true")
        _interval_options(p)
        if name == "glmm":
            p.add_argument("--trials", default=None,
                           help="column of numbers of trials (response = successes)")
        else:
            criterion = p.add_mutually_exclusive_group()
            # lmer fits by REML unless told otherwise, and lmerTest's Satterthwaite df are REML's.
            criterion.add_argument("--reml", dest="reml", action="store_true", default=True,
                                   help="restricted maximum likelihood (the default, as lmer)")
            criterion.add_argument("--ml", dest="reml", action="store_false",
                                   help="maximum likelihood, e.g. to compare fixed effects by LRT")
            p.add_argument("--ddf", choices=DDF_METHODS, default="satterthwaite",
                           help="denominator df of the fixed-effect tests: satterthwaite (default, t "
                                "tests as lmerTest) or normal (z, the large-sample approximation)")
        p.set_defaults(func=func)

    _second_half_commands(sub, common)

    p = sub.add_parser("power", help="power of a between, within or mixed design by simulation")
    p.add_argument("--accuracy", required=True,
                   help="condition=accuracy,... for a typical participant and unit; the first is "
                        "the reference, e.g. neuron=0.7,pca=0.8,nmf=0.85")
    p.add_argument("--participant-sd", type=float, default=0.5, help="logit scale")
    p.add_argument("--unit-sd", type=float, default=0.8, help="logit scale")
    p.add_argument("--design", choices=("between", "within", "mixed"), default="between",
                   help="between: one condition per participant; within: every condition per "
                        "participant; mixed: the conditions of one of --groups per participant")
    p.add_argument("--groups", default=None,
                   help="mixed design: the between-participant groups' conditions, e.g. "
                        "'natural,synthetic;natural_big,synthetic_big'")
    p.add_argument("--participants", default="30,60,90",
                   help="comma-separated; per condition (between), in all (within), per group (mixed)")
    p.add_argument("--units", type=int, default=20,
                   help="per condition (between), or shared by the conditions (within, mixed)")
    p.add_argument("--trials", type=int, default=18,
                   help="per participant (between), or per participant and condition (within, mixed)")
    p.add_argument("--sims", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_power)

    _inference_parsers(sub, common)
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except (ExportError, KeyError, ValueError, np.linalg.LinAlgError) as exc:
        # one line, never a traceback: the message names what to fix (FormulaError is a ValueError)
        # (a KeyError's str() is its repr, quotes and all)
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        message = " ".join(str(text).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
