"""Machinery shared by the LMM and the GLMM: the relative covariance factor Λθ, the
cross-products Z'WZ, optimisation and the results object.

Notation follows Bates, Mächler, Bolker & Walker (2015), "Fitting Linear Mixed-Effects
Models Using lme4", J. Stat. Softw. 67(1): b = Λθ u with u ~ N(0, σ² I); each random term
k has a lower-triangular p_k × p_k template T_k whose lower triangle (column-major) is a
slice of θ, repeated along the diagonal of Λθ once per level of its grouping factor.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as la
import scipy.optimize as opt
import scipy.sparse as sp
from scipy import stats
from tqdm import tqdm

from . import summary as summary_mod
from ._blocked import BlockedFactor, BlockedPattern
from .formula import MixedDesign

# Above this many random effects a dense q × q matrix (288 MB at 6000) is never formed: the
# blocked sparse factorization (analysis/_blocked.py) is used whatever the cost model says.
MAX_DENSE_Q = 6000
# Below this the dense Cholesky is always cheap (milliseconds) and the choice is not worth making.
MIN_SPARSE_Q = 300
METHODS = ("auto", "dense", "sparse")


class DenseFactor:
    """A = L L' by LAPACK for small q; the same interface as ``BlockedFactor``."""

    def __init__(self, A: np.ndarray):
        self.L = cholesky_lower(A)

    def solve(self, b):
        return tri_solve(self.L, b)

    def solve_t(self, x):
        return tri_solve(self.L, x, trans=True)

    def logdet(self) -> float:
        return float(2 * np.log(np.diag(self.L)).sum())

    def row_inverse(self, rs) -> np.ndarray:
        """R[i, c, a] = A⁻¹[col_c(i), col_a(i)]."""
        Ainv, _ = la.lapack.dpotri(self.L, lower=1)
        Ainv = np.tril(Ainv) + np.tril(Ainv, -1).T
        return Ainv[rs.cols[:, :, None], rs.cols[:, None, :]]


class RandomStructure:
    """θ ↔ Λθ for a design's random terms, and the factorization of Λ'Z'WZΛ + I.

    ``method``: "dense" (LAPACK Cholesky of the q × q matrix, fastest for small q), "sparse"
    (the blocked sparse factorization of analysis/_blocked.py, nothing q × q) or "auto": sparse
    above MAX_DENSE_Q random effects, otherwise whichever the operation count says is cheaper.
    """

    def __init__(self, design: MixedDesign, method: str = "auto"):
        self.design = design
        self.blocks = design.blocks
        self.q = design.q
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {method!r}")
        if method == "dense" and self.q > MAX_DENSE_Q:
            raise ValueError(
                f"{self.q} random effects: the dense Cholesky supports at most {MAX_DENSE_Q}; "
                "use method='sparse' or 'auto'"
            )
        # θ layout: per block, lower triangle of T_k column-major (lme4's order)
        self.theta_slices, lower, names = [], [], []
        start = 0
        lam_rows, lam_cols, lam_idx = [], [], []
        q_off = 0
        for b in self.blocks:
            p = b.p
            tri = [(i, j) for j in range(p) for i in range(j, p)]
            self.theta_slices.append(slice(start, start + len(tri)))
            for k, (i, j) in enumerate(tri):
                lower.append(0.0 if i == j else -np.inf)
                base = q_off + np.arange(b.n_levels) * p
                lam_rows.append(base + i)
                lam_cols.append(base + j)
                lam_idx.append(np.full(b.n_levels, start + k))
            names.extend((b.group, b.columns[i], b.columns[j]) for i, j in tri)
            start += len(tri)
            q_off += p * b.n_levels
        self.n_theta = start
        self.theta_lower = np.array(lower)
        self.theta_names = names
        if self.n_theta:
            self._lam_rows = np.concatenate(lam_rows)
            self._lam_cols = np.concatenate(lam_cols)
            self._lam_idx = np.concatenate(lam_idx)
        self.Z = design.Z().tocsr()
        self.Zt = self.Z.T.tocsr()
        self._prepare_scatter()
        self.pattern = None
        self.sparse = False
        if method == "sparse" or (method == "auto" and self.q >= MIN_SPARSE_Q and self.n_theta):
            pattern = BlockedPattern(self)
            if method == "sparse" or self.q > MAX_DENSE_Q or pattern.cost() < self.q**3 / 3:
                self.pattern, self.sparse = pattern, True
        if not self.sparse:
            self._prepare_dense()

    @property
    def method(self) -> str:
        return "sparse" if self.sparse else "dense"

    def factor(self, zl: np.ndarray, w: np.ndarray | None):
        """Factor of (ZΛ)' diag(w) (ZΛ) + I from the stored values ``zl`` of ZΛ."""
        if self.sparse:
            return BlockedFactor(self.pattern, zl, w)
        A = self.cross(zl, w)
        A[np.diag_indices_from(A)] += 1.0
        return DenseFactor(A)

    def theta0(self) -> np.ndarray:
        return np.where(np.isfinite(self.theta_lower), 1.0, 0.0)

    def bounds(self):
        return [(0.0 if np.isfinite(lo) else None, None) for lo in self.theta_lower]

    def Lambda_t(self, theta: np.ndarray) -> sp.csr_matrix:
        """Λθ' as a sparse q × q matrix."""
        if not self.n_theta:
            return sp.csr_matrix((0, 0))
        return sp.csr_matrix(
            (theta[self._lam_idx], (self._lam_cols, self._lam_rows)), shape=(self.q, self.q)
        )

    def templates(self, theta: np.ndarray) -> list[np.ndarray]:
        out = []
        for b, s in zip(self.blocks, self.theta_slices):
            T = np.zeros((b.p, b.p))
            k = 0
            for j in range(b.p):
                for i in range(j, b.p):
                    T[i, j] = theta[s][k]
                    k += 1
            out.append(T)
        return out

    def _prepare_scatter(self):
        # Every row of Z has the same m stored entries (one per column of each term's model
        # matrix), in increasing column order: kept as n × m arrays of columns and values.
        cols, vals, slot_block, slot_j = [], [], [], []
        off = 0
        for k, b in enumerate(self.blocks):
            for j in range(b.p):
                cols.append(off + b.codes * b.p + j)
                vals.append(b.X[:, j])
                slot_block.append(k)
                slot_j.append(j)
            off += b.p * b.n_levels
        n = self.design.n
        self.m = m = len(cols)
        self.cols = np.column_stack(cols) if cols else np.zeros((n, 0), np.int64)
        # column-major values and one contiguous index array per slot: the products with ZΛ
        # run slot by slot over contiguous columns, 2–4× faster than over the n × m rows
        self.vals = np.asfortranarray(np.column_stack(vals) if vals else np.zeros((n, 0)))
        self._slot_cols = [np.ascontiguousarray(self.cols[:, j], dtype=np.intp) for j in range(m)]
        self.slot_block = np.array(slot_block, int)
        self.slot_j = np.array(slot_j, int)
        self._indptr = np.arange(0, n * m + 1, m)
        self._scalar = all(b.p == 1 for b in self.blocks)

    def _prepare_dense(self):
        m = self.m
        pa, pc = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        self._pa, self._pc = pa.ravel(), pc.ravel()
        # Z'WZ = scatter-add of w·z_a·z_c into (col_a, col_c) over all ordered slot pairs
        self._flat = (self.cols[:, self._pa] * self.q + self.cols[:, self._pc]).ravel()

    def cross(self, zl: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        """Dense (ZΛ)' diag(w) (ZΛ) from the n × m stored values ``zl`` of ZΛ."""
        prod = zl[:, self._pa] * zl[:, self._pc]
        if w is not None:
            prod *= w[:, None]
        q = self.q
        return np.bincount(self._flat, weights=prod.ravel(), minlength=q * q).reshape(q, q)

    def ZtWZ(self, w: np.ndarray | None) -> np.ndarray:
        return self.cross(self.vals, w)

    def zl(self, theta: np.ndarray) -> np.ndarray:
        """Stored values of ZΛθ (same sparsity as Z, since Λθ is block diagonal per level),
        column-major."""
        out = np.empty_like(self.vals, order="F")
        for k, T in enumerate(self.templates(theta)):
            s = self.slot_block == k
            out[:, s] = self.vals[:, s] @ T
        return out

    def as_csr(self, zl: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((zl.ravel(), self.cols.ravel(), self._indptr), shape=(len(zl), self.q))

    def tmul(self, zl: np.ndarray, r: np.ndarray) -> np.ndarray:
        """(ZΛ)' r for an n-vector r."""
        out = np.zeros(self.q)
        for j, c in enumerate(self._slot_cols):
            out += np.bincount(c, weights=zl[:, j] * r, minlength=self.q)
        return out

    def mul(self, zl: np.ndarray, a: np.ndarray) -> np.ndarray:
        """(ZΛ) a for a q-vector a."""
        out = np.zeros(len(zl))
        for j, c in enumerate(self._slot_cols):
            out += zl[:, j] * a[c]
        return out

    def sandwich(self, Lt: sp.csr_matrix, M: np.ndarray) -> np.ndarray:
        """Λ' M Λ for dense symmetric M."""
        if self._scalar:
            d = Lt.diagonal()
            return M * np.outer(d, d)
        left = np.asarray(Lt @ M)
        return np.ascontiguousarray(np.asarray(Lt @ left.T).T)


def single_threaded_blas():
    """Context limiting BLAS to one thread: for the q ≲ 1000 matrices here, threading costs
    far more than it gains (measured: a 700 × 700 Cholesky 3 ms on one thread, 25–350 ms on
    two busy cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def cholesky_lower(A: np.ndarray) -> np.ndarray:
    return la.cholesky(A, lower=True, check_finite=False)


def tri_solve(L: np.ndarray, b: np.ndarray, trans: bool = False) -> np.ndarray:
    return la.solve_triangular(L, b, lower=True, trans=1 if trans else 0, check_finite=False)


def minimize_bounded(fun, x0, bounds, maxiter=2000, polish=True, ftol=1e-12, eps=1e-7, maxfun=15000):
    """Minimise a smooth criterion under box bounds; L-BFGS-B then a Nelder–Mead polish.

    lme4 uses derivative-free BOBYQA; a quasi-Newton start with a derivative-free
    polish lands on the same optimum to well below the 1e-3 the references need.
    """
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    res = opt.minimize(
        fun,
        x0,
        method="L-BFGS-B",
        bounds=bounds,
        options={"ftol": ftol, "gtol": 1e-6, "maxiter": maxiter, "eps": eps, "maxfun": maxfun},
    )
    x, f, nfev, ok = res.x, res.fun, res.nfev, bool(res.success)
    if polish and len(x0) > 0:
        step = np.maximum(np.abs(x) * 0.02, 0.01)
        simplex = [x] + [np.maximum(x + np.eye(len(x))[i] * step, lo) for i in range(len(x))]
        nm = opt.minimize(
            fun,
            x,
            method="Nelder-Mead",
            bounds=bounds,
            options={
                "initial_simplex": np.array(simplex),
                "xatol": 1e-7,
                "fatol": 1e-10,
                "maxfev": 400 * (len(x) + 1),
            },
        )
        nfev += nm.nfev
        if nm.fun <= f:
            x, f = nm.x, nm.fun
        ok = ok or bool(nm.success)
    return x, f, nfev, ok


def progress(desc: str):
    """A running count of criterion evaluations on stderr, for fits long enough to wonder about:
    tqdm shows it only after ``delay`` seconds and only when stderr is a terminal
    (``disable=None``), so short fits, tests and piped output stay silent."""
    return tqdm(desc=desc, unit=" evaluations", delay=3.0, disable=None, leave=False,
                file=sys.stderr, mininterval=0.5)


@dataclass
class MixedResult:
    """Fitted mixed model with the names of statsmodels' results (``params``, ``bse``, ``tvalues``,
    ``pvalues``, ``llf``, ``aic``, ``bic``, ``cov_params()``, ``summary()``) and ``to_dict()``
    for the CLI's ``--json``.

    The constructor's fields (``fixed``, ``loglik``, ``vcov``, ...) are the fitting code's side of
    the contract; the statsmodels names are what callers use."""

    kind: str  # "glmm" | "lmm"
    formula: str
    fixed: pd.DataFrame  # term, estimate, std_error, z, p (LMM with Satterthwaite: df, t, p)
    random: pd.DataFrame  # group, term, variance, sd
    loglik: float
    aic: float
    bic: float
    nobs: int
    converged: bool
    n_params: int
    criterion: str  # "Laplace", "REML", "ML"
    deviance: float  # −2 log-likelihood (or REML criterion)
    theta: np.ndarray
    vcov: np.ndarray
    correlations: pd.DataFrame = field(default_factory=pd.DataFrame)
    ngroups: dict = field(default_factory=dict)
    ranef: dict = field(default_factory=dict)  # group → DataFrame of conditional modes
    sigma: float | None = None
    se_method: str = ""
    model: object = None
    extra: dict = field(default_factory=dict)
    ddf: str = "normal"  # denominator df of the fixed-effect tests: "normal" or "Satterthwaite"
    warnings: list = field(default_factory=list)  # convergence, separation, singular fit
    # data checks and informational notes (rows dropped, factor() hints, aliased columns), in order
    notes: list = field(default_factory=list)
    aliased: list = field(default_factory=list)  # fixed-effect columns dropped for rank deficiency
    response: str = ""  # the response expression as written: "log(Reaction)", "cbind(k, n - k)"
    row_labels: object = None  # index labels (in the caller's data frame) of the rows fitted
    n_dropped: dict = field(default_factory=dict)  # rows dropped per reason
    gradient_max: float | None = None  # max |scaled gradient| at the optimum (lme4's check)
    offset: str | None = None  # the offset expression, if any

    def __post_init__(self):
        self.singular_groups = singular_groups(self.random, self.correlations,
                                               self.sigma ** 2 if self.kind == "lmm" and self.sigma else 1.0)
        if self.singular_groups:
            self.warnings.append(
                "boundary (singular) fit: a random-effect variance is zero or a random-effect covariance "
                f"matrix is singular ({', '.join(self.singular_groups)}); the random-effects structure "
                "may be too rich for the data")

    # -- statsmodels' names -----------------------------------------------------------------
    @property
    def singular(self) -> bool:
        return bool(self.singular_groups)

    @property
    def params(self) -> pd.Series:
        return pd.Series(self.fixed["estimate"].to_numpy(), index=self.fixed["term"].to_numpy())

    @property
    def fe_params(self) -> pd.Series:
        return self.params

    @property
    def bse(self) -> pd.Series:
        return pd.Series(self.fixed["std_error"].to_numpy(), index=self.params.index)

    @property
    def tvalues(self) -> pd.Series:
        stat = "t" if "t" in self.fixed.columns else "z"
        return pd.Series(self.fixed[stat].to_numpy(), index=self.params.index)

    @property
    def pvalues(self) -> pd.Series:
        return pd.Series(self.fixed["p"].to_numpy(), index=self.params.index)

    @property
    def df_fixed(self) -> pd.Series | None:
        """Denominator df of each fixed-effect t test (Satterthwaite); None for z tests."""
        if "df" not in self.fixed.columns:
            return None
        return pd.Series(self.fixed["df"].to_numpy(), index=self.params.index)

    @property
    def llf(self) -> float:
        return float(self.loglik)

    def cov_params(self) -> pd.DataFrame:
        names = self.params.index
        return pd.DataFrame(np.asarray(self.vcov), index=names, columns=names)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald intervals: on the t distribution with the Satterthwaite df where the tests use it,
        else normal."""
        df = self.df_fixed
        q = stats.t.isf(alpha / 2, df.to_numpy()) if df is not None else stats.norm.isf(alpha / 2)
        est, se = self.params, self.bse
        return pd.DataFrame({0: est - q * se, 1: est + q * se}, index=est.index)

    def with_ddf(self, df, method: str = "Satterthwaite", notes=()) -> MixedResult:
        """The fixed-effect tests as t tests on ``df`` denominator degrees of freedom (one per term)."""
        f = self.fixed
        t = f["estimate"].to_numpy() / f["std_error"].to_numpy()
        df = np.asarray(df, dtype=float)
        with np.errstate(invalid="ignore"):
            p = 2 * stats.t.sf(np.abs(t), df)
        self.fixed = pd.DataFrame({"term": f["term"].to_numpy(), "estimate": f["estimate"].to_numpy(),
                                   "std_error": f["std_error"].to_numpy(), "df": df, "t": t, "p": p})
        self.ddf = method
        self.warnings.extend(notes)
        return self

    # -- after the fit (analysis.emmeans, analysis.postfit, analysis.compare) ----------------
    def emmeans(self, specs, by=None, type: str = "response", pairs: bool = False,
                adjust: str = "tukey", at: dict | None = None, level: float = 0.95):
        """Estimated marginal means, as R's ``emmeans(fit, specs, type = …)`` (and ``pairs()``
        with ``pairs=True``); see ``analysis.emmeans``."""
        from .emmeans import emmeans

        return emmeans(self, specs, by=by, type=type, pairs=pairs, adjust=adjust, at=at, level=level)

    def predict(self, newdata=None, re_form: str = "conditional", type: str = "response",
                allow_new_levels: bool = False) -> np.ndarray:
        """lme4's ``predict()``; see ``analysis.postfit.predict``."""
        from .postfit import predict

        return predict(self, newdata, re_form, type, allow_new_levels)

    @property
    def fittedvalues(self) -> np.ndarray:
        from .postfit import fitted

        return fitted(self)

    @property
    def resid(self) -> np.ndarray:
        return self.residuals("response")

    def residuals(self, type: str = "response") -> np.ndarray:
        """Response, Pearson or deviance residuals (lme4's ``residuals(fit, type)``)."""
        from .postfit import residuals

        return residuals(self, type)

    def ranef_condvar(self) -> pd.DataFrame:
        """The conditional modes with their conditional variances (lme4's ``condVar``)."""
        from .postfit import ranef_condvar

        return ranef_condvar(self)

    def odds_ratios(self, level: float = 0.95) -> pd.DataFrame:
        from .postfit import odds_ratios

        return odds_ratios(self, level)

    def anova(self) -> pd.DataFrame:
        """A Wald test per fixed-effect term (Type III); see ``analysis.wald``."""
        from .wald import wald_table

        return wald_table(self)

    # -- output -----------------------------------------------------------------------------
    def to_dict(self, **kw) -> dict:
        return summary_mod.to_dict(self, **kw)

    def to_json(self, data: str | None = None, **kw) -> str:
        return json.dumps(self.to_dict(data=data), **kw)

    def summary(self, **kw) -> str:
        return summary_mod.summary(self, **kw)

    def __str__(self) -> str:
        return self.summary()


def fixed_table(names, beta, vcov) -> pd.DataFrame:
    se = np.sqrt(np.clip(np.diag(vcov), 0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = beta / se
    p = 2 * stats.norm.sf(np.abs(z))
    return pd.DataFrame({"term": names, "estimate": beta, "std_error": se, "z": z, "p": p})


def random_tables(rs: RandomStructure, theta, scale: float):
    """Variance components σ² T_k T_k' per term → (variances, correlations)."""
    rows, corr = [], []
    for b, T in zip(rs.blocks, rs.templates(theta)):
        S = scale * T @ T.T
        sd = np.sqrt(np.clip(np.diag(S), 0, None))
        for i, name in enumerate(b.columns):
            rows.append({"group": b.group, "term": name, "variance": S[i, i], "sd": sd[i]})
        for j in range(b.p):
            for i in range(j + 1, b.p):
                c = S[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                corr.append(
                    {"group": b.group, "term1": b.columns[j], "term2": b.columns[i],
                     "covariance": S[i, j], "corr": c}
                )
    return (
        pd.DataFrame(rows, columns=["group", "term", "variance", "sd"]),
        pd.DataFrame(corr, columns=["group", "term1", "term2", "covariance", "corr"]),
    )


def ranef_tables(rs: RandomStructure, b_vec: np.ndarray) -> dict:
    out, off = {}, 0
    for blk in rs.blocks:
        n = blk.p * blk.n_levels
        vals = b_vec[off : off + n].reshape(blk.n_levels, blk.p)
        key = blk.group if blk.group not in out else f"{blk.group}.{len(out)}"
        out[key] = pd.DataFrame(vals, index=pd.Index(blk.levels, name=blk.group), columns=blk.columns)
        off += n
    return out


def information_criteria(loglik, k, nobs):
    return -2 * loglik + 2 * k, -2 * loglik + k * math.log(nobs)


def same_data(a: MixedResult, b: MixedResult) -> None:
    """Refuse to compare models fitted to different rows or responses, as lme4's anova does: a
    likelihood ratio between fits to different data measures the data, not the terms."""
    if a.response and b.response and a.response.replace(" ", "") != b.response.replace(" ", ""):
        raise ValueError(f"models have different responses: {a.response} vs {b.response}; "
                         "a likelihood-ratio test compares models of the same response")
    if a.nobs != b.nobs:
        raise ValueError(f"models were fitted to different rows: {a.nobs} vs {b.nobs} observations; "
                         "refit both on the same rows")
    la_, lb_ = a.row_labels, b.row_labels
    if la_ is not None and lb_ is not None and not pd.Index(la_).equals(pd.Index(lb_)):
        raise ValueError(f"models were fitted to different rows: both {a.nobs} observations but "
                         "not the same ones; refit both on the same rows")


def lrt(small: MixedResult, big: MixedResult) -> dict:
    """Likelihood-ratio test of nested models (REML fits are refitted by ML, as lme4's anova).

    Raises ValueError when the two fits used different rows or responses (``same_data``)."""
    same_data(small, big)
    fits = []
    refitted = False
    for r in (small, big):
        if r.criterion == "REML":
            refitted = True
            if r.model is None:
                raise ValueError("REML fit without its model cannot be refitted by ML")
            # only the likelihood is needed: no Satterthwaite df for the refit
            r = r.model.fit(reml=False, ddf="normal")
        fits.append(r)
    s, b = fits
    if b.n_params < s.n_params:
        s, b = b, s
    df = b.n_params - s.n_params
    chisq = max(2 * (b.loglik - s.loglik), 0.0)
    p = float(stats.chi2.sf(chisq, df)) if df > 0 else float("nan")
    return {
        "df": int(df),
        "chisq": float(chisq),
        "p": p,
        "loglik_small": float(s.loglik),
        "loglik_big": float(b.loglik),
        "aic_small": float(s.aic),
        "aic_big": float(b.aic),
        "refitted_ml": refitted,
    }


# lme4's isSingular() tolerance on the relative Cholesky factor: θ_ii < 1e-4
SINGULAR_TOL = 1e-4


def singular_groups(random: pd.DataFrame, correlations: pd.DataFrame, scale: float = 1.0) -> list[str]:
    """Grouping factors whose random-effect covariance is singular: a variance at the boundary or a
    near-zero eigenvalue, relative to ``scale`` (σ² for an LMM, whose θ is relative to σ; 1 for a
    GLMM). The threshold is lme4's ``isSingular`` (θ < 1e-4, i.e. a relative variance < 1e-8);
    read from the variance tables so that it holds whatever the factorisation."""
    out = []
    if random is None or random.empty:
        return out
    for group, rows in random[random["group"] != "Residual"].groupby("group", sort=False):
        terms = list(rows["term"])
        S = np.diag(rows["variance"].to_numpy(float))
        if correlations is not None and len(correlations):
            for r in correlations[correlations["group"] == group].itertuples():
                if r.term1 in terms and r.term2 in terms:
                    i, j = terms.index(r.term1), terms.index(r.term2)
                    S[i, j] = S[j, i] = r.covariance
        if not np.all(np.isfinite(S)):
            continue
        eig = np.linalg.eigvalsh(S / scale)
        if eig.min() < SINGULAR_TOL ** 2:
            out.append(str(group))
    return out


# lme4's convergence check (lmerControl(check.conv.grad = .makeCC("warning", tol = 2e-3))):
# the largest of min(|scaled gradient|, |gradient|) over the parameters
GRAD_TOL = 2e-3
# lme4 computes the derivatives for its check only below this many observations
# (check.conv.nobsmax); above it the check costs more than the fit
CHECK_NOBS_MAX = 10_000
# |θ − θ₀| below this: a random-effect parameter the optimiser left where it started
START_TOL = 1e-5


def deriv12(fun, x, delta: float = 1e-4, fx: float | None = None):
    """Gradient and Hessian of ``fun`` at ``x`` by central differences, as lme4's ``deriv12``
    (the same step, 1e-4, and the same stencil), so the convergence check reads as lme4's."""
    x = np.asarray(x, float)
    n = len(x)
    fx = fun(x) if fx is None else fx
    g, H = np.zeros(n), np.zeros((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = delta
        fp, fm = fun(x + e), fun(x - e)
        H[j, j] = (fp - 2 * fx + fm) / delta**2
        g[j] = (fp - fm) / (2 * delta)
        for i in range(j):
            f = np.zeros(n)
            f[i] = delta
            H[i, j] = H[j, i] = (fun(x + e + f) - fun(x + e - f) - fun(x - e + f)
                                 + fun(x - e - f)) / (4 * delta**2)
    return g, H


def gradient_check(g, H, names, free=None) -> tuple[float | None, list[str]]:
    """lme4's checkConv on the gradient ``g`` and Hessian ``H`` of the deviance at the optimum:
    the scaled gradient H^{-1/2} g (the Newton decrement per parameter, unit-free) must stay
    below GRAD_TOL, and H must be positive definite. ``free``: parameters not on a bound (a
    variance at zero has a one-sided optimum and is left out, as lme4 skips singular fits).
    Returns (max |scaled gradient|, warnings naming the parameter)."""
    g = np.asarray(g, float)
    free = np.ones(len(g), bool) if free is None else np.asarray(free, bool)
    if not free.any():
        return None, []
    idx = np.flatnonzero(free)
    gf = g[idx]
    if not np.all(np.isfinite(gf)):
        return None, ["Model failed to converge: the gradient at the optimum is not finite"]
    if H is None:
        scaled = np.abs(gf)
    else:
        Hf = np.asarray(H, float)[np.ix_(idx, idx)]
        if not np.all(np.isfinite(Hf)):
            return float(np.max(np.abs(gf))), ["Model failed to converge: the Hessian is not finite"]
        try:
            L = np.linalg.cholesky(Hf)
        except np.linalg.LinAlgError:
            neg = int(np.sum(np.linalg.eigvalsh(Hf) <= 0))
            return float(np.max(np.abs(gf))), [
                f"Model failed to converge: degenerate Hessian with {neg} negative eigenvalue"
                f"{'' if neg == 1 else 's'}"]
        scaled = np.minimum(np.abs(la.solve_triangular(L, gf, lower=True)), np.abs(gf))
    k = int(np.argmax(scaled))
    gmax = float(scaled[k])
    if gmax > GRAD_TOL:
        return gmax, [f"Model failed to converge with max|grad| = {gmax:.3g} (tol = {GRAD_TOL:g}, "
                      f"component {idx[k] + 1}: {names[idx[k]]})"]
    return gmax, []


def start_value_warnings(rs: RandomStructure, theta) -> list[str]:
    """A random-effect parameter still at its starting value: the optimiser never moved it,
    which happens when the deviance does not depend on it (perfect separation), not at an
    optimum."""
    out = []
    th0 = rs.theta0()
    for k, (group, a, b) in enumerate(rs.theta_names):
        if th0[k] != 0 and abs(theta[k] - th0[k]) < START_TOL:
            what = f"SD of {a}" if a == b else f"covariance of {a} and {b}"
            out.append(f"the {group} random-effect {what} stayed at its starting value "
                       f"{th0[k]:g}: the optimiser did not move it")
    return out


def theta_labels(rs: RandomStructure) -> list[str]:
    return [f"theta[{g}: {a}]" if a == b else f"theta[{g}: {a}, {b}]" for g, a, b in rs.theta_names]


def design_fields(design) -> dict:
    """The result's fields that come from the design and its data checks."""
    return dict(notes=list(design.notes), aliased=list(design.aliased), response=design.response,
                row_labels=design.row_labels, n_dropped=dict(design.n_dropped),
                offset=design.offset_expr)
