"""Participant exclusions (catch accuracy, one response side, instruction time, total time).

Each rule is an option; a rule whose columns are absent from the export is skipped and the
result says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

__all__ = ["ExclusionResult", "apply_exclusions"]


@dataclass
class ExclusionResult:
    kept: pd.DataFrame
    excluded: pd.DataFrame  # participant, reasons
    notes: list = field(default_factory=list)  # rules skipped and why
    counts: dict = field(default_factory=dict)  # rule → participants it excludes

    def to_dict(self) -> dict:
        return {
            "participants_total": int(self.kept["participant"].nunique() + len(self.excluded)),
            "participants_kept": int(self.kept["participant"].nunique()),
            "excluded": self.excluded.to_dict(orient="records"),
            "counts": self.counts,
            "notes": self.notes,
        }


def apply_exclusions(
    df: pd.DataFrame,
    min_catch_accuracy: float | None = 0.8,
    exclude_one_side: bool = True,
    min_instructions_s: float | None = 15.0,
    min_total_minutes: float | None = None,
    max_total_minutes: float | None = None,
) -> ExclusionResult:
    """Apply the study's exclusion rules; ``None``/``False`` turns a rule off."""
    reasons: dict[str, list[str]] = {}
    notes, counts = [], {}

    def flag(participants, reason):
        counts[reason] = int(len(participants))
        for p in participants:
            reasons.setdefault(p, []).append(reason)

    answered = df[df["trial_kind"].isin(["main", "catch"])]
    if min_catch_accuracy is not None:
        catch = df[df["trial_kind"] == "catch"]
        if catch.empty:
            notes.append("catch-accuracy rule skipped: no catch trials in the data")
        else:
            acc = catch.groupby("participant")["correct"].mean()
            flag(list(acc[acc < min_catch_accuracy].index),
                 f"catch accuracy < {min_catch_accuracy:g}")
    if exclude_one_side:
        if "choice" not in df.columns:
            notes.append("one-side rule skipped: no 'choice' column")
        else:
            sides = answered.groupby("participant")["choice"].nunique()
            flag(list(sides[sides <= 1].index), "one response side throughout")
    if min_instructions_s is not None:
        if "instructions_ms" not in df.columns:
            notes.append("instruction-time rule skipped: no 'instructions_ms' column")
        else:
            t = df.groupby("participant")["instructions_ms"].min() / 1000.0
            flag(list(t[t < min_instructions_s].index),
                 f"instructions read in < {min_instructions_s:g} s")
    if min_total_minutes is not None or max_total_minutes is not None:
        total = _total_minutes(df)
        if total is None:
            notes.append("total-time rule skipped: no participant_started/participant_finished "
                         "or server_time columns")
        else:
            lo = -float("inf") if min_total_minutes is None else min_total_minutes
            hi = float("inf") if max_total_minutes is None else max_total_minutes
            out = total[(total < lo) | (total > hi)]
            flag(list(out.index), f"total time outside [{min_total_minutes}, {max_total_minutes}] min")
    else:
        notes.append("total-time rule off: no time window given")
    excluded = pd.DataFrame(
        [{"participant": p, "reasons": "; ".join(r)} for p, r in sorted(reasons.items())],
        columns=["participant", "reasons"],
    )
    kept = df[~df["participant"].isin(reasons)]
    return ExclusionResult(kept=kept, excluded=excluded, notes=notes, counts=counts)


def _total_minutes(df: pd.DataFrame):
    if {"participant_started", "participant_finished"} <= set(df.columns):
        g = df.groupby("participant")
        start = pd.to_datetime(g["participant_started"].first(), utc=True, errors="coerce")
        end = pd.to_datetime(g["participant_finished"].first(), utc=True, errors="coerce")
        if end.notna().any():
            return ((end - start).dt.total_seconds() / 60.0).dropna()
    if "server_time" in df.columns:
        t = pd.to_datetime(df["server_time"], utc=True, errors="coerce")
        g = t.groupby(df["participant"])
        return ((g.max() - g.min()).dt.total_seconds() / 60.0).dropna()
    return None
