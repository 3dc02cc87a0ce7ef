"""Parse lme4-notation formulas into fixed-effect and random-effect design matrices.

``correct ~ basis * layer + (1 | participant) + (1 | unit)`` is split into a
fixed-effect part (built by formulaic with treatment contrasts, columns named as
lme4 prints them: ``(Intercept)``, ``basispca``, ``basispca:layerconv3``) and
random-effect terms ``(expr | group)``.  Supported bar forms: ``(1 | g)``,
``(x | g)`` (correlated intercept and slope), ``(0 + x | g)``, ``(x || g)``
(uncorrelated), ``(1 | a:b)`` (interaction grouping factor) and ``(1 | a/b)``
(nested shorthand for ``(1 | a) + (1 | a:b)``).

R's idioms are read as R reads them and translated for formulaic (the formula library,
whose own spellings also work: ``C(x)``, ``C(x, contr.treatment("a"))``, ``I(x ** 2)``):

- ``factor(x)`` (or ``as.factor(x)``): x as a factor (formulaic's ``C(x)``), columns named
  ``factor(x)2`` as in R; a grouping factor may be written ``(1 | factor(g))``;
- ``relevel(x, ref = "a")`` (or ``relevel(x, "a")``): a factor with ``a`` as the reference level;
- ``I(Days^2)``: inside ``I()`` R's ``^`` is a power (in formulaic's Python it is xor);
- ``offset(log(size))``: a term with a fixed coefficient of 1, added to the linear predictor;
- ``cbind(k, n - k) ~ …``: a binomial response of k successes in k + (n − k) trials;
- ``log(Reaction) ~ …``: any transformed response (``log``, ``sqrt``, arithmetic).

A name that is not a column raises ``FormulaError`` (one line, with the closest column names).
Before the design is built the data are checked (``analysis.checks``): rows with missing values
in the formula's columns, or with values its transforms cannot take (``log`` of RT ≤ 0), are
dropped with a note each, and a rank-deficient fixed-effect matrix loses its aliased columns as
in lme4, named in a note. Every note lands in ``MixedDesign.notes`` and then on the result.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg as la
import scipy.sparse as sp
from formulaic import Formula, model_matrix

from . import checks

__all__ = ["RandomTerm", "MixedDesign", "FormulaError", "parse_formula", "build_design", "lme4_name",
           "drop_aliased", "RANK_TOL"]

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")
_STRING = re.compile(r"\"[^\"]*\"|'[^']*'")
# names a formula may use that are not columns (literals)
_LITERALS = {"True", "False", "TRUE", "FALSE", "None", "NA", "Inf", "pi"}
# lme4's tolerance for rank deficiency of X (lmerControl(check.rankX) → chkRank.drop.cols, tol = 1e-7)
RANK_TOL = 1e-7


class FormulaError(ValueError, KeyError):
    """A formula that does not fit the data: one line that the CLI prints as it is.

    A subclass of ValueError (a bad argument) and of KeyError (for callers that caught the
    missing-column KeyError this used to be)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def lme4_name(name: str) -> str:
    """formulaic column name → lme4 name (``basis[T.pca]`` → ``basispca``)."""
    if name == "Intercept":
        return "(Intercept)"
    return re.sub(r"\[(?:T\.)?([^\]]*)\]", r"\1", name)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` at parenthesis depth 0."""
    parts, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _call(text: str, name: str) -> str | None:
    """The argument text of ``name(...)`` when ``text`` is exactly that call, else None."""
    m = re.fullmatch(rf"\s*{re.escape(name)}\s*\((.*)\)\s*", text, flags=re.S)
    if m is None:
        return None
    inner = m.group(1)
    try:
        _split_top(inner, ",")  # balanced: the closing parenthesis is the call's own
    except FormulaError:
        return None
    return inner


@dataclass
class RandomTerm:
    """One ``(expr | group)`` term of a formula."""

    expr: str
    group: str

    @property
    def group_vars(self) -> list[str]:
        return [g.strip() for g in self.group.split(":")]


@dataclass
class ParsedFormula:
    response: str
    fixed: str
    random: list[RandomTerm] = field(default_factory=list)
    offsets: list[str] = field(default_factory=list)  # the expressions inside offset(...)

    def variables(self, columns) -> list[str]:
        """Data columns the formula mentions (to drop incomplete rows as lme4's na.omit)."""
        text = " ".join([self.response, self.fixed, *self.offsets]
                        + [f"{r.expr} {r.group}" for r in self.random])
        cols = set(columns)
        seen = []
        for tok in _IDENT.findall(_STRING.sub(" ", text)):
            if tok in cols and tok not in seen:
                seen.append(tok)
        return seen


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed-effect formula, offsets and random terms."""
    if "~" not in formula:
        raise FormulaError(f"formula needs a '~': {formula!r}")
    lhs, rhs = formula.split("~", 1)
    response = lhs.strip()
    if not response:
        raise FormulaError("formula needs a response on the left of '~'")
    fixed_terms, random, offsets = [], [], []
    for term in _split_top(rhs, "+"):
        if not term:
            raise FormulaError(f"empty term in {formula!r}")
        inner = term[1:-1] if term.startswith("(") and term.endswith(")") else None
        if inner is not None and "|" in inner and _split_top(inner, "|") != [inner.strip()]:
            double = len(_split_top(inner, "||")) == 2
            expr, group = _split_top(inner, "||") if double else _split_top(inner, "|")
            if not expr or not group:
                raise FormulaError(f"bad random-effect term {term!r}")
            groups = [group]
            if "/" in group:  # a/b ≡ a + a:b
                levels = [g.strip() for g in group.split("/")]
                groups = [":".join(levels[: i + 1]) for i in range(len(levels))]
            for g in groups:
                if double:
                    raw = _split_top(expr, "+")
                    has_int = not ({"0", "-1"} & set(raw))
                    slopes = [p for p in raw if p not in ("0", "-1", "1")]
                    if has_int:
                        random.append(RandomTerm("1", g))
                    random.extend(RandomTerm(f"0 + {s}", g) for s in slopes)
                else:
                    random.append(RandomTerm(expr, g))
        elif (off := _call(term, "offset")) is not None:
            offsets.append(off.strip())
        else:
            fixed_terms.append(term)
    fixed = " + ".join(fixed_terms) if fixed_terms else "1"
    return ParsedFormula(response=response, fixed=fixed, random=random, offsets=offsets)


# -- checking names and translating R's idioms ------------------------------------------------
def _names_used(text: str) -> list[str]:
    """Identifiers that must be data columns: not function names (followed by '('), not keyword
    names (followed by '='), not inside string literals, not numbers or literals."""
    # `a column name` in backticks (formulaic's quoting of names that are not identifiers)
    out = [name for name in re.findall(r"`([^`]*)`", text)]
    plain = _STRING.sub(" ", re.sub(r"`[^`]*`", " ", text))
    for m in _IDENT.finditer(plain):
        tok = m.group(0)
        rest = plain[m.end():].lstrip()
        if rest.startswith("(") or (rest.startswith("=") and not rest.startswith("==")):
            continue
        if tok in _LITERALS or re.fullmatch(r"\.?\d.*", tok) or tok.startswith("np."):
            continue
        if tok not in out:
            out.append(tok)
    return out


def _check_names(parsed: ParsedFormula, columns) -> None:
    cols = [str(c) for c in columns]
    parts = [("response", parsed.response), ("fixed effects", parsed.fixed)]
    parts += [("offset", o) for o in parsed.offsets]
    for r in parsed.random:
        parts += [("random effects", r.expr), ("grouping factor", r.group)]
    for where, text in parts:
        for name in _names_used(text):
            if name not in cols:
                close = difflib.get_close_matches(name, cols, n=3, cutoff=0.6)
                hint = (f"did you mean {', '.join(repr(c) for c in close)}?" if close
                        else f"columns: {', '.join(cols[:12])}{', …' if len(cols) > 12 else ''}")
                raise FormulaError(f"'{name}' ({where}) is not a column of the data; {hint}")


def _calls(text: str, name: str):
    """(start, end, argument text) of each top-level-or-nested call ``name(...)`` in ``text``."""
    for m in re.finditer(rf"(?<![\w.]){re.escape(name)}\s*\(", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if depth:
            raise FormulaError(f"unbalanced parentheses in {text!r}")
        yield m.start(), i, text[m.end():i - 1]


def _normalised(expr: str) -> str:
    """formulaic's own spelling of a one-factor expression (the prefix of its column names)."""
    return str(list(Formula(expr))[-1])


class _Translator:
    """R spellings → formulaic spellings, remembering how to name the columns back."""

    def __init__(self, data: pd.DataFrame):
        self.data = data
        self.names: dict[str, str] = {}  # formulaic's prefix → R's text

    def _sub(self, text: str, name: str, make) -> str:
        out, last = [], 0
        for start, end, inner in list(_calls(text, name)):
            if start < last:  # nested in a call already replaced
                continue
            new = make(inner.strip(), text[start:end])
            out.append(text[last:start] + new)
            last = end
        return "".join(out) + text[last:]

    def _factor(self, inner: str, original: str) -> str:
        new = f"C({inner})"
        self.names[_normalised(new)] = original
        return new

    def _relevel(self, inner: str, original: str) -> str:
        args = _split_top(inner, ",")
        if len(args) != 2:
            raise FormulaError(f"relevel needs a column and a reference level: {original}")
        col, ref = args[0], args[1]
        ref = re.sub(r"^ref\s*=\s*", "", ref).strip()
        if col not in self.data.columns:
            return original  # reported by the name check
        value = ref.strip("\"'")
        levels = pd.unique(self.data[col].dropna())
        match = [v for v in levels if str(v) == value]
        if not match:
            shown = ", ".join(str(v) for v in sorted(levels, key=str)[:10])
            raise FormulaError(f"relevel: {value!r} is not a level of '{col}' (levels: {shown})")
        lit = repr(match[0].item() if hasattr(match[0], "item") else match[0])
        new = f"C({col}, contr.treatment({lit}))"
        self.names[_normalised(new)] = original
        return new

    def _power(self, inner: str, original: str) -> str:
        # inside I(), R's ^ is a power; Python's ** is
        new = f"I({inner.replace('^', '**')})"
        self.names[_normalised(new)] = f"I({inner})"
        return new

    def __call__(self, text: str) -> str:
        text = self._sub(text, "as.factor", self._factor)
        text = self._sub(text, "factor", self._factor)
        text = self._sub(text, "relevel", self._relevel)
        return self._sub(text, "I", self._power)

    def column_name(self, name: str) -> str:
        for norm, original in self.names.items():
            name = name.replace(norm, original)
        return lme4_name(name)


def _evaluate(expr: str, frame: pd.DataFrame, translate: _Translator) -> np.ndarray:
    """A numeric expression of the data's columns (``log(Reaction)``, ``size - incidence``)."""
    if expr in frame.columns:
        return frame[expr].to_numpy()
    mm = model_matrix(f"0 + I({translate(expr)})", frame, na_action="ignore")
    values = np.asarray(mm, dtype=float)
    if values.shape[1] != 1:
        raise FormulaError(f"{expr!r} does not give one number per row")
    return values[:, 0]


def drop_aliased(X: np.ndarray, names: list[str], tol: float = RANK_TOL):
    """Drop the columns of X that are linear combinations of earlier ones, as lme4 does.

    The rank is read from a pivoted QR (|R_jj| > tol·|R_00|, LAPACK's geqp3 through SciPy).
    Which columns go follows R's ``qr()`` (LINPACK's dqrdc2, used by lme4's chkRank.drop.cols):
    columns are taken in order and one whose norm, once the earlier kept columns are projected
    out, falls below tol × its own norm is aliased, so the first of a set of collinear columns
    stays, as in lme4's output. Returns (X kept, names kept, aliased names)."""
    n, p = X.shape
    if p == 0:
        return X, names, []
    R, piv = la.qr(X, mode="r", pivoting=True)
    d = np.abs(np.diag(R))
    rank = int(np.sum(d > tol * d[0])) if d.size and d[0] > 0 else 0
    if rank == p:
        return X, names, []
    keep, Q = [], np.zeros((n, 0))
    for j in range(p):
        v = X[:, j]
        n0 = float(np.linalg.norm(v))
        r = v - Q @ (Q.T @ v)
        r = r - Q @ (Q.T @ r)  # twice is enough (Kahan–Parlett) for orthogonality
        nr = float(np.linalg.norm(r))
        if n0 > 0 and nr > tol * n0:
            keep.append(j)
            Q = np.column_stack([Q, r / nr])
    if len(keep) != rank:  # the two criteria disagree at the tolerance: trust the pivoted QR
        keep = sorted(int(k) for k in piv[:rank])
    dropped = [names[j] for j in range(p) if j not in keep]
    return X[:, keep], [names[j] for j in keep], dropped


@dataclass
class RandomBlock:
    """Design of one random term: ``n_levels`` levels × ``p`` columns each."""

    group: str
    columns: list[str]
    levels: np.ndarray
    codes: np.ndarray  # level index of every row
    X: np.ndarray  # n × p model matrix of the term's expression
    spec: object = None  # formulaic's model spec of the term's expression (for new data)

    @property
    def p(self) -> int:
        return len(self.columns)

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass
class MixedDesign:
    """Everything a mixed-model fit needs, built once from a formula and a data frame."""

    formula: str
    response: str
    y_raw: pd.Series
    X: np.ndarray
    fixed_names: list[str]
    blocks: list[RandomBlock]
    data: pd.DataFrame  # rows used (after dropping incomplete ones)
    notes: list[str] = field(default_factory=list)  # data checks, aliased columns, hints
    n_dropped: dict = field(default_factory=dict)  # reason → rows dropped
    row_labels: pd.Index | None = None  # index labels (in the caller's data) of the rows used
    aliased: list[str] = field(default_factory=list)  # fixed-effect columns dropped (rank)
    offset: np.ndarray | None = None  # added to the linear predictor
    offset_expr: str | None = None
    trials: np.ndarray | None = None  # from a cbind(successes, failures) response
    # formulaic's model spec of the fixed part and the namer of its columns: X for new data
    fixed_spec: object = None
    translate: object = None
    offsets: list = field(default_factory=list)  # the expressions inside offset(...)

    def fixed_matrix(self, data: pd.DataFrame) -> np.ndarray:
        """The fixed-effect model matrix of new rows, coded as X was (the same levels, contrasts
        and columns, aliased ones left out): for reference grids and predictions."""
        if self.fixed_spec is None:
            raise ValueError("this design keeps no model spec: rebuild it with build_design")
        mm = self.fixed_spec.get_model_matrix(data, na_action="raise")
        names = [self.translate.column_name(c) for c in mm.columns]
        M = np.asarray(mm, dtype=float)
        try:
            return M[:, [names.index(n) for n in self.fixed_names]]
        except ValueError:
            raise FormulaError("the new data do not give the fitted fixed-effect columns") from None

    def offset_values(self, data: pd.DataFrame) -> np.ndarray:
        """The offset of new rows (zeros when the formula has none)."""
        out = np.zeros(len(data))
        for expr in self.offsets:
            out += np.asarray(_evaluate(expr, data.reset_index(drop=True), self.translate), dtype=float)
        return out

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def q(self) -> int:
        return sum(b.p * b.n_levels for b in self.blocks)

    def Z(self) -> sp.csc_matrix:
        """Sparse n × q random-effects design; columns level-major within each term (as lme4)."""
        rows, cols, vals = [], [], []
        offset = 0
        n = self.n
        for b in self.blocks:
            for j in range(b.p):
                rows.append(np.arange(n))
                cols.append(offset + b.codes * b.p + j)
                vals.append(b.X[:, j])
            offset += b.p * b.n_levels
        if not rows:
            return sp.csc_matrix((n, 0))
        return sp.csc_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, offset)
        )


def _group_codes(data: pd.DataFrame, group: str) -> tuple[np.ndarray, np.ndarray]:
    # a grouping factor is a factor already: (1 | factor(g)) is (1 | g)
    gvars = [re.sub(r"^(?:as\.)?factor\((.*)\)$", r"\1", g.strip()).strip() for g in group.split(":")]
    for g in gvars:
        if g not in data.columns:
            raise FormulaError(f"grouping factor {g!r} is not a column of the data")
    key = data[gvars[0]].astype(str)
    for g in gvars[1:]:
        key = key + ":" + data[g].astype(str)
    codes, levels = pd.factorize(key, sort=True)
    return codes.astype(np.int64), np.asarray(levels)


def _slope_hints(fixed: str, frame: pd.DataFrame) -> list[str]:
    """Notes for bare numeric columns with few values that enter as one slope (cbpp's period)."""
    notes = []
    try:
        terms = list(Formula(fixed))
    except Exception:  # noqa: BLE001 - formulaic reports the real error when the matrix is built
        return notes
    seen = set()
    for term in terms:
        for factor in term.factors:
            expr = str(factor.expr)
            if expr in frame.columns and expr not in seen:
                seen.add(expr)
                note = checks.few_values_note(frame, expr)
                if note:
                    notes.append(note)
    return notes


def build_design(formula: str, data: pd.DataFrame, strict: bool = False,
                 extra_columns=()) -> MixedDesign:
    """Parse ``formula``, check the data and build X, the random blocks and the raw response.

    ``strict``: values a transform cannot take (``log`` of RT ≤ 0) raise ``checks.DataError``
    instead of being dropped with a note. ``extra_columns``: further columns whose missing
    values drop a row (a GLMM's trials column)."""
    parsed = parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise TypeError("data must be a pandas DataFrame")
    _check_names(parsed, data.columns)
    for c in extra_columns:
        if c not in data.columns:
            raise FormulaError(f"'{c}' is not a column of the data")
    used = parsed.variables(data.columns) + [c for c in extra_columns
                                             if c not in parsed.variables(data.columns)]
    frame, notes, dropped = checks.drop_nonfinite(data, used)
    text = " ".join([parsed.response, parsed.fixed, *parsed.offsets])
    frame, n2, d2 = checks.drop_outside_domain(frame, checks.transformed_columns(text), strict)
    notes += n2
    dropped.update(d2)
    if len(frame) == 0:
        raise checks.DataError("no complete rows for the formula's variables"
                               + (f" ({'; '.join(notes)})" if notes else ""))
    row_labels = frame.index.copy()
    frame = frame.reset_index(drop=True)
    translate = _Translator(frame)

    # the response: a column, a transform of columns, or cbind(successes, failures)
    trials = None
    cb = _call(parsed.response, "cbind")
    if cb is not None:
        args = _split_top(cb, ",")
        if len(args) != 2:
            raise FormulaError(f"cbind needs two columns (successes, failures): {parsed.response}")
        k = np.asarray(_evaluate(args[0], frame, translate), dtype=float)
        f = np.asarray(_evaluate(args[1], frame, translate), dtype=float)
        if np.any(k < 0) or np.any(f < 0):
            raise checks.DataError(f"{parsed.response}: successes and failures must be ≥ 0 "
                                   f"({int(np.sum((k < 0) | (f < 0)))} rows are not)")
        y_raw, trials = pd.Series(k, name=args[0]), k + f
    elif parsed.response in frame.columns:
        y_raw = frame[parsed.response]
    else:
        y_raw = pd.Series(_evaluate(parsed.response, frame, translate), name=parsed.response)
    if pd.api.types.is_numeric_dtype(y_raw) and not pd.api.types.is_bool_dtype(y_raw):
        bad = ~np.isfinite(np.asarray(y_raw, dtype=float))
        if bad.any():
            raise checks.DataError(f"the response {parsed.response} is not finite in {int(bad.sum())} rows")

    offset = None
    if parsed.offsets:
        offset = np.zeros(len(frame))
        for expr in parsed.offsets:
            offset += np.asarray(_evaluate(expr, frame, translate), dtype=float)
        if not np.all(np.isfinite(offset)):
            raise checks.DataError(f"the offset {' + '.join(parsed.offsets)} is not finite in "
                                   f"{int(np.sum(~np.isfinite(offset)))} rows")

    fixed = translate(parsed.fixed)
    mm = model_matrix(fixed, frame, na_action="raise")
    X = np.asarray(mm, dtype=float)
    names = [translate.column_name(c) for c in mm.columns]
    X, names, aliased = drop_aliased(X, names)
    if aliased:
        # lme4's message, with the names it keeps in an attribute written out
        notes.append(f"fixed-effect model matrix is rank deficient so dropping {len(aliased)} "
                     f"column{'' if len(aliased) == 1 else 's'} / coefficient"
                     f"{'' if len(aliased) == 1 else 's'}: {', '.join(aliased)}")
    notes += _slope_hints(parsed.fixed, frame)
    blocks = []
    for term in parsed.random:
        tm = model_matrix(translate(term.expr), frame, na_action="raise")
        codes, levels = _group_codes(frame, term.group)
        blocks.append(
            RandomBlock(
                group=term.group,
                columns=[translate.column_name(c) for c in tm.columns],
                levels=levels,
                codes=codes,
                X=np.asarray(tm, dtype=float),
                spec=tm.model_spec,
            )
        )
    # lme4 orders random terms by decreasing number of levels (stable)
    blocks.sort(key=lambda b: -b.n_levels)
    return MixedDesign(
        formula=formula,
        response=parsed.response,
        y_raw=y_raw,
        X=X,
        fixed_names=names,
        blocks=blocks,
        data=frame,
        notes=notes,
        n_dropped=dropped,
        row_labels=row_labels,
        aliased=aliased,
        offset=offset,
        offset_expr=" + ".join(parsed.offsets) or None,
        trials=trials,
        fixed_spec=mm.model_spec,
        translate=translate,
        offsets=list(parsed.offsets),
    )
