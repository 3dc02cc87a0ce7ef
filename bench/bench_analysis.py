"""Benchmark: 100k simulated responses (500 participants × 200 units, crossed).

Our Laplace GLMM vs statsmodels' BinomialBayesMixedGLM (variational Bayes) and our REML LMM on
log RT vs statsmodels' MixedLM: wall time, peak traced memory, recovery of the planted values.

    python bench/bench_analysis.py [--participants 500] [--units 200] [--no-statsmodels]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.glmm import BinomialGLMM  # noqa: E402
from analysis.lmm import LinearMixedModel  # noqa: E402
from analysis.simulate import simulate_responses  # noqa: E402

PLANTED = dict(intercept=0.8, effects=(0.0, 0.5, -0.4), sd_participant=0.6, sd_unit=0.9,
               log_rt_mean=7.8, log_rt_effects=(0.0, 0.1, -0.05), sd_rt_participant=0.3,
               sd_rt_unit=0.15, sd_rt_residual=0.4)


def measure(fn):
    tracemalloc.start()
    t = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, wall, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--participants", type=int, default=500)
    ap.add_argument("--units", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-statsmodels", action="store_true")
    a = ap.parse_args()
    df = simulate_responses(a.participants, a.units, seed=a.seed, **PLANTED)
    print(f"{len(df)} responses: {a.participants} participants × {a.units} units; planted "
          f"logit: intercept 0.8, basisnmf −0.4, basispca +0.5, SD participant 0.6, SD unit 0.9; "
          f"log RT: 7.8, nmf −0.05, pca +0.1, SDs 0.3 / 0.15 / residual 0.4")

    g, wall, peak = measure(lambda: BinomialGLMM.from_formula(
        "correct ~ basis + (1 | participant) + (1 | unit)", df).fit())
    sd = g.random.set_index("group").sd
    print(f"\nours  GLMM (Laplace)   {wall:6.2f} s  peak {peak:7.1f} MiB  converged={g.converged}")
    print("      " + "  ".join(f"{r.term} {r.estimate:+.3f}±{r.std_error:.3f}" for r in g.fixed.itertuples())
          + f"  SD participant {sd['participant']:.3f} unit {sd['unit']:.3f}")

    lm, wall, peak = measure(lambda: LinearMixedModel.from_formula(
        "log_rt ~ basis + (1 | participant) + (1 | unit)", df).fit(reml=True))
    sd = lm.random.set_index("group").sd
    print(f"ours  LMM (REML)       {wall:6.2f} s  peak {peak:7.1f} MiB  converged={lm.converged}")
    print("      " + "  ".join(f"{r.term} {r.estimate:+.4f}±{r.std_error:.4f}" for r in lm.fixed.itertuples())
          + f"  SD participant {sd['participant']:.3f} unit {sd['unit']:.3f} residual {sd['Residual']:.3f}")

    if a.no_statsmodels:
        return
    try:
        import statsmodels.formula.api as smf
        from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM
    except ImportError:
        print("\nstatsmodels not installed: comparison skipped")
        return
    vc = {"participant": "0 + C(participant)", "unit": "0 + C(unit)"}

    def sm_glmm():
        return BinomialBayesMixedGLM.from_formula("correct ~ basis", vc, df).fit_vb()

    r, wall, peak = measure(sm_glmm)
    sds = dict(zip(r.model.vcp_names, r.vcp_mean))
    import numpy as np

    print(f"\nstatsmodels BinomialBayesMixedGLM.fit_vb  {wall:6.2f} s  peak {peak:7.1f} MiB")
    print("      " + "  ".join(f"{n} {m:+.3f}±{s:.3f}" for n, m, s in
                               zip(r.model.exog_names, r.fe_mean, r.fe_sd))
          + "  " + "  ".join(f"SD {k} {np.exp(v):.3f}" for k, v in sds.items()))

    def sm_lmm():
        d = df.assign(one=1)
        return smf.mixedlm("log_rt ~ basis", d, groups="one", vc_formula=vc).fit(reml=True)

    r, wall, peak = measure(sm_lmm)
    print(f"statsmodels MixedLM (REML, crossed via vc)  {wall:6.2f} s  peak {peak:7.1f} MiB")
    print("      " + "  ".join(f"{k} {v:+.4f}±{s:.4f}" for k, v, s in
                               zip(r.fe_params.index, r.fe_params, r.bse_fe))
          + "  " + "  ".join(f"SD {k} {np.sqrt(v):.3f}" for k, v in zip(r.model.exog_vc.names, r.vcomp))
          + f"  residual {np.sqrt(r.scale):.3f}")


if __name__ == "__main__":
    main()
