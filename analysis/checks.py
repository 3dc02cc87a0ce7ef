"""Data checks that run before any model is fitted, each writing one plain-language note.

A fit must never fail on a pandas error about a column it does not name, nor drop rows without
saying so. These functions are pure: they take a data frame (or arrays) and return the rows
kept, the notes and the number of rows dropped per reason; the formula layer
(``analysis.formula.build_design``) calls them and the notes end up in the result's ``notes``.

- ``drop_nonfinite``: NaN, None and ±inf per column, the column and the count named;
- ``drop_outside_domain``: values a transform cannot take (``log(RT)`` with RT ≤ 0), dropped
  with a note, or an error under ``strict``;
- ``non_integer_successes``: lme4's (R glm's) "non-integer #successes" warning for a binomial
  response that is not a whole number of successes;
- ``rows_left_out``: how many rows a selection (main, non-catch trials) left out, by kind;
- ``few_values_note``: a numeric column with few distinct values entered as one slope.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

__all__ = ["DataError", "drop_nonfinite", "drop_outside_domain", "transformed_columns",
           "non_integer_successes", "trial_kinds", "rows_left_out", "few_values_note",
           "FEW_VALUES"]

# A numeric predictor with at most this many distinct values is more likely a coded factor
# (cbpp's period 1–4, a block number) than a quantity with a linear effect.
FEW_VALUES = 5


class DataError(ValueError):
    """Data a fit refuses (under ``strict=True``): the message names the column and the rows."""


def _plural(n: int, word: str = "row") -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _bad_mask(values: pd.Series) -> np.ndarray:
    """NaN/None everywhere, and ±inf in numeric columns."""
    bad = np.array(values.isna(), dtype=bool)
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        with np.errstate(invalid="ignore"):
            bad |= ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    return bad


def drop_nonfinite(frame: pd.DataFrame, columns) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
    """Drop rows with NaN or infinite values in ``columns``; one note per column that had any.

    Columns are checked in the order given and each row is counted once, under the first column
    where it is missing, so the counts add up to the rows dropped."""
    notes, dropped = [], {}
    keep = np.ones(len(frame), bool)
    for col in columns:
        bad = _bad_mask(frame[col]) & keep
        n = int(bad.sum())
        if n:
            kinds = "NaN or infinite values" if pd.api.types.is_numeric_dtype(frame[col]) else "missing values"
            notes.append(f"{kinds} in '{col}': {_plural(n)} dropped")
            dropped[f"NaN in {col}"] = n
            keep &= ~bad
    return frame[keep], notes, dropped


# transforms with a restricted domain: name → (test of an impossible value, how to say it)
_DOMAINS = {
    "log": (lambda v: v <= 0, "≤ 0"),
    "log2": (lambda v: v <= 0, "≤ 0"),
    "log10": (lambda v: v <= 0, "≤ 0"),
    "log1p": (lambda v: v <= -1, "≤ −1"),
    "sqrt": (lambda v: v < 0, "< 0"),
}
_TRANSFORM = re.compile(r"(?<![\w.])(?:np\.)?(" + "|".join(_DOMAINS) + r")\(\s*([A-Za-z_.][\w.]*)\s*\)")


def transformed_columns(text: str) -> list[tuple[str, str]]:
    """``(transform, column)`` pairs written as ``log(RT)`` in a formula's text."""
    return [(m.group(1), m.group(2)) for m in _TRANSFORM.finditer(text)]


def drop_outside_domain(frame: pd.DataFrame, transforms, strict: bool = False
                        ) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
    """Drop rows whose value a transform cannot take (``log(RT)`` with RT ≤ 0): a negative
    reaction time is a recording error, and log of it is NaN that would vanish silently.

    ``transforms``: ``(name, column)`` pairs as ``transformed_columns`` returns them. With
    ``strict`` such rows raise ``DataError`` instead."""
    notes, dropped = [], {}
    keep = np.ones(len(frame), bool)
    for name, col in transforms:
        if col not in frame.columns or not pd.api.types.is_numeric_dtype(frame[col]):
            continue
        test, said = _DOMAINS[name]
        with np.errstate(invalid="ignore"):
            bad = test(frame[col].to_numpy(dtype=float, na_value=np.nan)) & keep
        n = int(bad.sum())
        if not n:
            continue
        shown = ", ".join(f"{v:g}" for v in frame[col].to_numpy(dtype=float)[bad][:3])
        what = f"'{col}' {said} in {_plural(n)} ({shown}{', …' if n > 3 else ''}), impossible under {name}({col})"
        if strict:
            raise DataError(f"{what}; fix the data or drop strict to leave them out")
        notes.append(f"{what}: dropped")
        dropped[f"{col} {said} under {name}"] = n
        keep &= ~bad
    return frame[keep], notes, dropped


def non_integer_successes(successes, trials=None) -> str | None:
    """lme4's (R glm's) "non-integer #successes in a binomial glm!" as a sentence, or None.

    Without ``trials`` every response is one trial and must be 0 or 1; a share such as 0.4
    fitted as a Bernoulli "response" gives a likelihood of nothing real."""
    k = np.asarray(successes, dtype=float)
    bad = int(np.sum(np.abs(k - np.round(k)) > 1e-8))
    if not bad:
        return None
    how = ("the response is a count of successes" if trials is not None
           else "no trials were given, so each response is one trial")
    return (f"non-integer #successes in a binomial glm!: {_plural(bad, 'response')} not a whole "
            f"number while {how}; give the numbers of trials (cbind(successes, failures) or "
            "trials=) for proportions")


def trial_kinds(df: pd.DataFrame, kind: str = "trial_kind", catch: str = "catch") -> pd.Series:
    """A label per row: the trial kind, or ``catch`` where the catch column is true."""
    labels = (df[kind].astype(str) if kind in df.columns
              else pd.Series("trial", index=df.index, dtype=object))
    if catch in df.columns:
        is_catch = df[catch].fillna(False).astype(bool)
        labels = labels.where(~is_catch, "catch")
    return labels


def rows_left_out(kinds: pd.Series, kept) -> tuple[str | None, dict[str, int]]:
    """The rows a selection left out, counted by kind: ``(note, {kind: count})``.

    ``kinds``: a label per row of the full data (``trial_kinds``); ``kept``: the index labels
    (or a boolean mask aligned with ``kinds``) of the rows kept."""
    if isinstance(kept, (pd.Series, np.ndarray)) and np.asarray(kept).dtype == bool:
        out_mask = ~np.asarray(kept, bool)
    else:
        out_mask = ~kinds.index.isin(pd.Index(kept))
    counts = kinds[out_mask].value_counts(sort=True)
    counts = {str(k): int(v) for k, v in counts.items()}
    n = sum(counts.values())
    if not n:
        return None, {}
    parts = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    return (f"{n:,} of {len(kinds):,} rows left out by trial kind ({parts}); "
            f"{len(kinds) - n:,} rows kept"), {f"trial kind {k}": v for k, v in counts.items()}


def few_values_note(frame: pd.DataFrame, column: str, limit: int = FEW_VALUES) -> str | None:
    """A hint for a numeric column with few distinct values that enters the model as one slope."""
    v = frame[column]
    if not pd.api.types.is_numeric_dtype(v) or pd.api.types.is_bool_dtype(v):
        return None
    k = int(v.nunique())
    if k > limit or k < 3:  # two values: a slope and a factor are the same model
        return None
    return (f"'{column}' is numeric with {k} distinct values and enters the model as one slope; "
            f"write factor({column}) to fit one effect per value, as R does for a factor")
