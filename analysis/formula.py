"""Parse lme4-notation formulas into fixed-effect and random-effect design matrices.

``correct ~ basis * layer + (1 | participant) + (1 | unit)`` is split into a
fixed-effect part (built by formulaic with treatment contrasts, columns named as
lme4 prints them: ``(Intercept)``, ``basispca``, ``basispca:layerconv3``) and
random-effect terms ``(expr | group)``.  Supported bar forms: ``(1 | g)``,
``(x | g)`` (correlated intercept and slope), ``(0 + x | g)``, ``(x || g)``
(uncorrelated), ``(1 | a:b)`` (interaction grouping factor) and ``(1 | a/b)``
(nested shorthand for ``(1 | a) + (1 | a:b)``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from formulaic import model_matrix

__all__ = ["RandomTerm", "MixedDesign", "parse_formula", "build_design", "lme4_name"]

_IDENT = re.compile(r"[A-Za-z_.][A-Za-z0-9_.]*")


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
                raise ValueError(f"unbalanced parentheses in {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


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

    def variables(self, columns) -> list[str]:
        """Data columns the formula mentions (to drop incomplete rows as lme4's na.omit)."""
        text = " ".join([self.response, self.fixed] + [f"{r.expr} {r.group}" for r in self.random])
        cols = set(columns)
        seen = []
        for tok in _IDENT.findall(text):
            if tok in cols and tok not in seen:
                seen.append(tok)
        return seen


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed-effect formula and random terms."""
    if "~" not in formula:
        raise ValueError(f"formula needs a '~': {formula!r}")
    lhs, rhs = formula.split("~", 1)
    response = lhs.strip()
    if not response:
        raise ValueError("formula needs a response on the left of '~'")
    fixed_terms, random = [], []
    for term in _split_top(rhs, "+"):
        if not term:
            raise ValueError(f"empty term in {formula!r}")
        inner = term[1:-1] if term.startswith("(") and term.endswith(")") else None
        if inner is not None and "|" in inner and _split_top(inner, "|") != [inner.strip()]:
            double = len(_split_top(inner, "||")) == 2
            expr, group = _split_top(inner, "||") if double else _split_top(inner, "|")
            if not expr or not group:
                raise ValueError(f"bad random-effect term {term!r}")
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
        else:
            fixed_terms.append(term)
    fixed = " + ".join(fixed_terms) if fixed_terms else "1"
    return ParsedFormula(response=response, fixed=fixed, random=random)


@dataclass
class RandomBlock:
    """Design of one random term: ``n_levels`` levels × ``p`` columns each."""

    group: str
    columns: list[str]
    levels: np.ndarray
    codes: np.ndarray  # level index of every row
    X: np.ndarray  # n × p model matrix of the term's expression

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
    gvars = [g.strip() for g in group.split(":")]
    for g in gvars:
        if g not in data.columns:
            raise KeyError(f"grouping factor {g!r} is not a column of the data")
    key = data[gvars[0]].astype(str)
    for g in gvars[1:]:
        key = key + ":" + data[g].astype(str)
    codes, levels = pd.factorize(key, sort=True)
    return codes.astype(np.int64), np.asarray(levels)


def build_design(formula: str, data: pd.DataFrame) -> MixedDesign:
    """Parse ``formula`` and build X, the random blocks and the raw response from ``data``."""
    parsed = parse_formula(formula)
    if not isinstance(data, pd.DataFrame):
        raise TypeError("data must be a pandas DataFrame")
    if parsed.response not in data.columns:
        raise KeyError(f"response {parsed.response!r} is not a column of the data")
    used = parsed.variables(data.columns)
    frame = data.dropna(subset=used).reset_index(drop=True)
    if len(frame) == 0:
        raise ValueError("no complete rows for the formula's variables")
    mm = model_matrix(parsed.fixed, frame, na_action="raise")
    X = np.asarray(mm, dtype=float)
    names = [lme4_name(c) for c in mm.columns]
    blocks = []
    for term in parsed.random:
        tm = model_matrix(term.expr, frame, na_action="raise")
        codes, levels = _group_codes(frame, term.group)
        blocks.append(
            RandomBlock(
                group=term.group,
                columns=[lme4_name(c) for c in tm.columns],
                levels=levels,
                codes=codes,
                X=np.asarray(tm, dtype=float),
            )
        )
    # lme4 orders random terms by decreasing number of levels (stable)
    blocks.sort(key=lambda b: -b.n_levels)
    return MixedDesign(
        formula=formula,
        response=parsed.response,
        y_raw=frame[parsed.response],
        X=X,
        fixed_names=names,
        blocks=blocks,
        data=frame,
    )
