"""Benchmark: our Laplace GLMM and REML LMM against statsmodels on simulated crossed designs.

Full size: 100k responses (500 participants × 200 units, every participant sees every unit).
statsmodels' MixedLM with crossed random effects (variance components under one group) grows
much faster than linearly in the rows (measured here: 1.8k rows 2.7 s, 4k rows 7.4 s, 9k rows
32 s), so it is compared with ours on a subsample (--sub-participants × --sub-units) and, at full
size, run only until --timeout and reported as cut off. statsmodels' GLMM counterpart,
BinomialBayesMixedGLM, is variational Bayes (posterior means, not ML estimates).

Every fit runs in its own interpreter (this script with --worker), so peak memory is not
inherited from an earlier fit and a fit past its time limit is killed cleanly. Reported: wall
time of the fit alone (the data are simulated before the clock starts), peak memory traced by
tracemalloc during the fit (Python and NumPy allocations), peak resident set size of the worker
process (interpreter and imports included), and recovery of the planted values.

    python bench/bench_analysis.py [--participants 500] [--units 200] [--timeout 120]
                                   [--sub-participants 100] [--sub-units 40] [--no-statsmodels]

``--scale`` instead runs the sizes of the field's largest studies, each participant answering a
random subset of the units (an incomplete crossed design): 118,800 answers (1,800 participants ×
760 units, 66 each), 200,000 (5,000 × 1,000, 40 each) and 1,000,000 (50,000 × 2,000, 20 each),
GLMM and LMM at each, with the sparse factorization and the dense one side by side (the dense
one only up to ``--dense-max-q`` random effects, since its q × q matrix would not fit, and cut
off after ``--dense-timeout`` seconds).

    python bench/bench_analysis.py --scale [--sizes small,medium,large] [--methods sparse,dense]
                                   [--dense-timeout 600]

``--emmeans`` times the fit and the estimated marginal means with their Tukey-adjusted pairwise
contrasts (``analysis.emmeans``) against mixedlm 1.3.0's ``glmer`` and ``emmeans(...).pairs()`` on
the same rows, in the same run: Borowski et al.'s Experiment I (1,350 answers) and a simulated
crossed export (``--emm-participants`` × ``--emm-units``, each participant ``--emm-per`` units).

    python bench/bench_analysis.py --emmeans [--emm-participants 600] [--emm-units 300] [--emm-per 40]
``--intervals`` times the intervals of a model the size of Borowski et al.'s Experiment II (3,680
binary trials: 23 participants × 4 conditions × 40 units of a 2 × 2 within design, ``correct ~ ref *
cond + (1 | participant) + (1 | unit)``, simulated by ``analysis.simulate.simulate_groups``, since the
experiment's trials are not in the repository): our profile intervals (2 SDs and 4 fixed effects) and
parametric bootstrap, and mixedlm's (the test-time reference) for the same work on the same rows, in
the same run, on one BLAS thread.

    python bench/bench_analysis.py --intervals [--boot-n 100]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PLANTED = dict(intercept=0.8, effects=(0.0, 0.5, -0.4), sd_participant=0.6, sd_unit=0.9,
               log_rt_mean=7.8, log_rt_effects=(0.0, 0.1, -0.05), sd_rt_participant=0.3,
               sd_rt_unit=0.15, sd_rt_residual=0.4)
# planted values under the names each fit reports (bases sorted: neuron baseline, nmf, pca)
TRUTH = {
    "glmm": {"(Intercept)": 0.8, "basisnmf": -0.4, "basispca": 0.5,
             "sd participant": 0.6, "sd unit": 0.9},
    "lmm": {"(Intercept)": 7.8, "basisnmf": -0.05, "basispca": 0.1,
            "sd participant": 0.3, "sd unit": 0.15, "sd residual": 0.4},
}
VC = {"participant": "0 + C(participant)", "unit": "0 + C(unit)"}


# (participants, units, units per participant) of the --scale table
SCALE_SIZES = {"small": (1800, 760, 66), "medium": (5000, 1000, 40), "large": (50000, 2000, 20)}


# -- workers: one fit each, in a fresh interpreter ----------------------------------------------
def _ours_glmm(df, method="auto"):
    from analysis.glmm import BinomialGLMM

    r = BinomialGLMM.from_formula("correct ~ basis + (1 | participant) + (1 | unit)", df,
                                  method=method).fit()
    sd = r.random.set_index("group").sd
    return bool(r.converged), {**dict(zip(r.fixed.term, r.fixed.estimate)),
                         "sd participant": sd["participant"], "sd unit": sd["unit"]}


def _ours_lmm(df, method="auto"):
    from analysis.lmm import LinearMixedModel

    # the fit alone, as statsmodels' (which has no Satterthwaite df)
    r = LinearMixedModel.from_formula("log_rt ~ basis + (1 | participant) + (1 | unit)",
                                      df, method=method).fit(reml=True, ddf="normal")
    sd = r.random.set_index("group").sd
    return bool(r.converged), {**dict(zip(r.fixed.term, r.fixed.estimate)),
                         "sd participant": sd["participant"], "sd unit": sd["unit"],
                         "sd residual": sd["Residual"]}


def _names(exog_names):
    return [n.replace("basis[T.", "basis").replace("]", "").replace("Intercept", "(Intercept)")
            for n in exog_names]


def _sm_vb_glmm(df):
    import numpy as np
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    r = BinomialBayesMixedGLM.from_formula("correct ~ basis", VC, df).fit_vb()
    # vcp_mean is the posterior mean of log SD
    sds = {f"sd {k}": float(np.exp(v)) for k, v in zip(r.model.vcp_names, r.vcp_mean)}
    return True, {**dict(zip(_names(r.model.exog_names), map(float, r.fe_mean))), **sds}


def _sm_mixedlm(df):
    import numpy as np
    import statsmodels.formula.api as smf

    r = smf.mixedlm("log_rt ~ basis", df.assign(one=1), groups="one", vc_formula=VC).fit(reml=True)
    sds = {f"sd {k}": float(np.sqrt(v)) for k, v in zip(r.model.exog_vc.names, r.vcomp)}
    return bool(r.converged), {**dict(zip(_names(r.fe_params.index), map(float, r.fe_params))),
                               **sds, "sd residual": float(np.sqrt(r.scale))}


WORKERS = {"ours_glmm": _ours_glmm, "ours_lmm": _ours_lmm, "sm_vb_glmm": _sm_vb_glmm,
           "sm_mixedlm": _sm_mixedlm}


def worker(name, participants, units, seed, per_participant=None, method=None, trace=True):
    from analysis.simulate import simulate_responses

    df = simulate_responses(participants, units, seed=seed, units_per_participant=per_participant,
                            **PLANTED)
    fn = WORKERS[name]
    if name.startswith("sm_"):
        import statsmodels.formula.api  # noqa: F401  (imports outside the clock, as for ours)
    else:
        import analysis.glmm  # noqa: F401
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if trace:  # tracemalloc slows NumPy-heavy fits; the scale table reports RSS only
        tracemalloc.start()
    t, cpu = time.perf_counter(), time.process_time()
    converged, est = fn(df) if method is None else fn(df, method)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else float("nan")
    if trace:
        tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": len(df), "wall_s": wall, "cpu_s": cpu, "traced_mib": traced,
                      "rss_mib": rss,
                      "rss_before_mib": rss0, "converged": converged, "estimates": est}))


# -- driver -----------------------------------------------------------------------------------
def run(name, participants, units, seed, timeout):
    cmd = [sys.executable, __file__, "--worker", name, "--participants", str(participants),
           "--units", str(units), "--seed", str(seed)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "rows": participants * units, "cut_off": True,
                "elapsed_s": time.perf_counter() - t}
    if out.returncode != 0:
        return {"name": name, "rows": participants * units, "error": out.stderr.strip()[-300:]}
    return {"name": name, "cut_off": False, **json.loads(out.stdout.strip().splitlines()[-1])}


LABEL = {"ours_glmm": "ours GLMM (Laplace, ML)", "ours_lmm": "ours LMM (REML)",
         "sm_vb_glmm": "statsmodels BinomialBayesMixedGLM.fit_vb",
         "sm_mixedlm": "statsmodels MixedLM (REML, crossed via vc)"}


def recovery(kind, est):
    truth = TRUTH[kind]
    return "  ".join(f"{k.replace('(Intercept)', 'icpt')} {est[k]:+.3f}" for k in truth if k in est)


def table(rows):
    head = (f"{'fit':<44}{'rows':>8}{'wall s':>9}{'x ours':>8}{'traced MiB':>12}{'RSS MiB':>9}"
            f"  {'conv':<5} recovery (planted in the header)")
    lines = [head, "-" * len(head)]
    ours = {}
    for r in rows:
        kind = "glmm" if "glmm" in r["name"] else "lmm"
        if r["name"].startswith("ours") and "wall_s" in r:
            ours[(kind, r["rows"])] = r["wall_s"]
        label = LABEL[r["name"]]
        if r.get("cut_off"):
            lines.append(f"{label:<44}{r['rows']:>8}{'>' + format(r['elapsed_s'], '.0f'):>9}"
                         f"{'':>8}{'':>12}{'':>9}  cut off at the time limit (killed)")
            continue
        if "error" in r:
            lines.append(f"{label:<44}{r['rows']:>8}  error: {r['error']}")
            continue
        base = ours.get((kind, r["rows"]))
        ratio = f"{r['wall_s'] / base:.1f}" if base and not r["name"].startswith("ours") else ""
        lines.append(f"{label:<44}{r['rows']:>8}{r['wall_s']:>9.2f}{ratio:>8}"
                     f"{r['traced_mib']:>12.1f}{r['rss_mib']:>9.0f}  {str(r['converged']):<5} "
                     f"{recovery(kind, r['estimates'])}")
    return "\n".join(lines)


def run_scale(name, size, method, seed, timeout):
    participants, units, k = SCALE_SIZES[size]
    cmd = [sys.executable, __file__, "--worker", name, "--participants", str(participants),
           "--units", str(units), "--seed", str(seed), "--per-participant", str(k),
           "--method", method]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cut_off": True, "elapsed_s": time.perf_counter() - t}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][-200:] if out.stderr.strip() else
                f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def scale(a):
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    print("planted: logit icpt +0.8, basisnmf -0.4, basispca +0.5, sd participant 0.6, sd unit 0.9;"
          "\n         log RT icpt +7.8, basisnmf -0.05, basispca +0.1, sd participant 0.3, "
          "sd unit 0.15, sd residual 0.4\n")
    head = (f"{'answers':>9}  {'participants x units':<21}{'q':>7}  {'fit':<5}{'method':<8}"
            f"{'wall s':>9}{'CPU s':>8}{'RSS MiB':>9}  {'conv':<5} recovery")
    print(head)
    print("-" * len(head))
    for size in sizes:
        participants, units, k = SCALE_SIZES[size]
        q = participants + units
        for kind in ("glmm", "lmm"):
            for method in methods:
                label = (f"{participants * k:>9,}  {f'{participants:,} x {units:,}':<21}{q:>7,}  "
                         f"{kind.upper():<5}{method:<8}")
                if method == "dense" and q > a.dense_max_q:
                    gb = q * q * 8 / 2**30
                    print(f"{label}{'—':>9}{'—':>8}{'—':>9}  not run: one dense {q:,}² matrix "
                          f"is {gb:.1f} GB",
                          flush=True)
                    continue
                print(f"  running {kind} {method} at {size} ...", file=sys.stderr, flush=True)
                timeout = a.dense_timeout if method == "dense" else None
                r = run_scale(f"ours_{kind}", size, method, a.seed, timeout)
                if r.get("cut_off"):
                    print(f"{label}{'>' + format(r['elapsed_s'], '.0f'):>9}{'':>8}{'':>9}  "
                          "cut off at the time limit (killed)", flush=True)
                elif "error" in r:
                    print(f"{label}  error: {r['error']}", flush=True)
                else:
                    print(f"{label}{r['wall_s']:>9.2f}{r['cpu_s']:>8.2f}{r['rss_mib']:>9.0f}  "
                          f"{str(r['converged']):<5} {recovery(kind, r['estimates'])}", flush=True)
    print("\nwall: the fit alone (model building included, data simulated before the clock); CPU: "
          "its processor time (the fits are single-threaded, so on an idle machine wall ≈ CPU); "
          "RSS: peak resident set of the worker process, interpreter and imports included")


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def emmeans_bench(a):
    """Fit, then EMMs + pairs, ours and mixedlm's, on the same rows; the EMMs timed as the median of
    ``--emm-repeat`` runs (each ours includes the reference grid; mixedlm's its own)."""
    import mixedlm
    import numpy as np

    from analysis.glmm import BinomialGLMM
    from analysis.load import model_trials, normalise, read_responses
    from analysis.simulate import simulate_responses

    root = Path(__file__).resolve().parents[1]
    exp1, _, _ = model_trials(normalise(read_responses(
        root / "tests/data/borowski2021/experiment_I_trials.csv", "borowski")))
    exp1 = exp1[["correct", "condition", "participant", "unit"]].assign(correct=lambda d: d.correct.astype(float))
    sim = simulate_responses(n_participants=a.emm_participants, n_units=a.emm_units,
                             units_per_participant=a.emm_per, seed=a.seed)
    sim = sim[["correct", "basis", "participant", "unit"]].assign(correct=lambda d: d.correct.astype(float))
    cases = [("Borowski Exp I", exp1, "correct ~ condition + (1 | participant) + (1 | unit)", "condition"),
             (f"simulated {len(sim):,}", sim, "correct ~ basis + (1 | participant) + (1 | unit)", "basis")]
    print(f"{'data':<22}{'rows':>8}  {'fit ours':>9}{'fit mixedlm':>12}  {'emm ours':>9}"
          f"{'emm mixedlm':>12}  {'max |Δ p|':>10}")
    for name, d, formula, spec in cases:
        d = d.reset_index(drop=True)
        t = time.perf_counter()
        ours = BinomialGLMM.from_formula(formula, d).fit()
        fit_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = mixedlm.glmer(formula, d, family=mixedlm.families.Binomial())
        fit_ref = time.perf_counter() - t
        em_ours = _median_time(lambda ours=ours, spec=spec: ours.emmeans(spec, pairs=True), a.emm_repeat)
        em_ref = _median_time(lambda ref=ref, spec=spec: mixedlm.emmeans(ref, spec, type="response").pairs(),
                              a.emm_repeat)
        diff = np.max(np.abs(ours.emmeans(spec).means["estimate"].to_numpy()
                             - np.asarray(mixedlm.emmeans(ref, spec, type="response").result.emmean)))
        print(f"{name:<22}{len(d):>8,}  {fit_ours:>8.2f}s{fit_ref:>11.2f}s  {em_ours * 1e3:>7.1f}ms"
              f"{em_ref * 1e3:>10.1f}ms  {diff:>10.1e}")
# -- --intervals: profile and bootstrap intervals of a Borowski-Exp-II-sized model -------------------
EXP2_CONDITIONS = {"natural_a": ("natural", "a", 2.0), "natural_b": ("natural", "b", 1.5),
                   "optimized_a": ("optimized", "a", 1.0), "optimized_b": ("optimized", "b", 0.8)}
EXP2_FORMULA = "correct ~ ref * cond + (1 | participant) + (1 | unit)"


def intervals_bench(boot_n: int, seed: int) -> None:
    import warnings

    from threadpoolctl import threadpool_limits

    from analysis.glmm import BinomialGLMM
    from analysis.intervals import bootstrap_intervals, profile_intervals
    from analysis.simulate import simulate_groups

    factors = {k: {"ref": r, "cond": c} for k, (r, c, _) in EXP2_CONDITIONS.items()}
    df = simulate_groups([list(EXP2_CONDITIONS)], {k: v[2] for k, v in EXP2_CONDITIONS.items()},
                         participants_per_group=23, units=40, trials_per_condition=40,
                         sd_participant=0.4, sd_unit=0.7, factors=factors, seed=seed)
    rows = []
    with threadpool_limits(1):
        t = time.perf_counter()
        fit = BinomialGLMM.from_formula(EXP2_FORMULA, df).fit()
        rows.append(("ours", "fit", time.perf_counter() - t, f"-2LL {-2 * fit.loglik:.3f}"))
        prof = profile_intervals(fit)
        rows.append(("ours", "profile (2 SDs + 4 fixed effects)", prof.extra["seconds"],
                     f"{prof.extra['evaluations']} deviance evaluations"))
        boot = bootstrap_intervals(fit, n_boot=boot_n, seed=seed, progress=False)
        rows.append(("ours", f"bootstrap ({boot_n} refits)", boot.extra["seconds"],
                     f"{boot.extra['n_failed']} failed"))
        try:
            import mixedlm
        except ImportError:
            mixedlm = None
        if mixedlm is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                m = mixedlm.glmer(EXP2_FORMULA, df, family=mixedlm.families.Binomial())
                rows.append(("mixedlm 1.3", "fit", time.perf_counter() - t, f"-2LL {m.deviance:.3f}"))
                t = time.perf_counter()
                ci = m.confint(method="profile")
                rows.append(("mixedlm 1.3", "profile (4 fixed effects; it profiles no SDs)",
                             time.perf_counter() - t, ""))
                t = time.perf_counter()
                m.confint(method="boot", n_boot=boot_n, seed=seed)
                rows.append(("mixedlm 1.3", f"bootstrap ({boot_n} refits)", time.perf_counter() - t, ""))
            ours = prof.table.set_index("parameter")
            diff = max(max(abs(ours.loc[k, "lower"] - lo), abs(ours.loc[k, "upper"] - hi))
                       for k, (lo, hi) in zip(fit.params.index, ci.values()))
            rows.append(("", "max |ours - mixedlm| over the profile ends", float("nan"), f"{diff:.1e}"))
    print(f"{len(df)} trials, {EXP2_FORMULA}, one BLAS thread")
    print(f"{'':12} {'work':48} {'seconds':>8}  note")
    for who, what, sec, note in rows:
        print(f"{who:12} {what:48} {'' if math.isnan(sec) else f'{sec:8.2f}':>8}  {note}")
    print()
    print(prof.summary())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=500)
    ap.add_argument("--units", type=int, default=200)
    ap.add_argument("--sub-participants", type=int, default=100)
    ap.add_argument("--sub-units", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds per statsmodels fit at full size before it is killed")
    ap.add_argument("--no-statsmodels", action="store_true")
    ap.add_argument("--scale", action="store_true",
                    help="the 118,800 / 200,000 / 1,000,000-answer table, sparse vs dense")
    ap.add_argument("--sizes", default="small,medium,large",
                    help=f"--scale sizes, of {', '.join(SCALE_SIZES)}")
    ap.add_argument("--methods", default="sparse,dense",
                    help="--scale: factorizations to run, of sparse, dense")
    ap.add_argument("--dense-max-q", type=int, default=6000,
                    help="--scale: largest number of random effects the dense fit is tried at")
    ap.add_argument("--dense-timeout", type=float, default=600.0,
                    help="--scale: seconds before a dense fit is killed")
    ap.add_argument("--emmeans", action="store_true",
                    help="fit + emmeans with pairs, ours against mixedlm's, on the same rows")
    ap.add_argument("--emm-participants", type=int, default=600)
    ap.add_argument("--emm-units", type=int, default=300)
    ap.add_argument("--emm-per", type=int, default=40)
    ap.add_argument("--emm-repeat", type=int, default=5)
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--per-participant", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--intervals", action="store_true",
                    help="profile and bootstrap intervals of a Borowski-Exp-II-sized GLMM, ours and mixedlm's")
    ap.add_argument("--boot-n", type=int, default=100, help="--intervals: bootstrap refits")
    a = ap.parse_args()
    if a.intervals:
        intervals_bench(a.boot_n, a.seed)
        return
    if a.worker:
        worker(a.worker, a.participants, a.units, a.seed, a.per_participant, a.method,
               trace=a.method is None)
        return
    if a.scale:
        scale(a)
        return
    if a.emmeans:
        emmeans_bench(a)
        return
    have_sm = not a.no_statsmodels
    if have_sm:
        try:
            import statsmodels  # noqa: F401
        except ImportError:
            print("statsmodels not installed: comparison skipped")
            have_sm = False
    print("planted: logit icpt +0.8, basisnmf -0.4, basispca +0.5, sd participant 0.6, sd unit 0.9;"
          "\n         log RT icpt +7.8, basisnmf -0.05, basispca +0.1, sd participant 0.3, "
          "sd unit 0.15, sd residual 0.4")
    full, sub = (a.participants, a.units), (a.sub_participants, a.sub_units)
    plan = [("ours_glmm", full, None), ("ours_lmm", full, None)]
    if have_sm:
        plan += [("sm_vb_glmm", full, a.timeout), ("sm_mixedlm", full, a.timeout),
                 ("ours_glmm", sub, None), ("sm_vb_glmm", sub, None),
                 ("ours_lmm", sub, None), ("sm_mixedlm", sub, None)]
    rows = []
    for name, (p, u), timeout in plan:
        print(f"  running {LABEL[name]} on {p} x {u} ...", file=sys.stderr, flush=True)
        rows.append(run(name, p, u, a.seed, timeout))
    print(f"\nfull size: {full[0]} participants x {full[1]} units; subsample: "
          f"{sub[0]} x {sub[1]} (statsmodels limit at full size {a.timeout:.0f} s)\n")
    print(table(rows))
    print("\nwall: the fit alone; traced: tracemalloc peak during the fit; RSS: peak resident set "
          "of the worker process, interpreter and imports included; x ours: wall time over ours "
          "on the same rows")


if __name__ == "__main__":
    main()
