"""Participant exclusions (catch accuracy, one response side, instruction time, total time, answers
faster than a person gives them, integrity flags).

Two sources: the study's own verdicts, which an export of this platform carries per row (``excluded``
and ``excl_<rule>``, beside the integrity flags ``flagged`` and ``flag_<flag>``, docs/contracts.md §2),
or this module's rules applied to the rows
(:func:`apply_exclusions`; each rule is an option, and a rule whose columns are absent is skipped and
the result says so). :func:`exclude` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .load import ExportError, integrity_columns

__all__ = ["ExclusionResult", "apply_exclusions", "study_exclusions", "exclude", "has_study_flags",
           "MODES", "ONE_SIDE_ALPHA", "one_side_chance", "one_side_min_answers"]

MODES = ("auto", "study", "own", "none")

#: The one-side rule's default false-positive rate. The server draws each trial's correct side by a fair
#: coin, so a participant with no side preference, however accurate, picks side "a" with probability 1/2
#: on every answer, independently; all n answers fall on one side with probability 2 · 2⁻ⁿ. With six
#: answers that is 3 %: an honest participant would be excluded once in 32 studies. The rule therefore
#: judges one side throughout only once it is this unlikely for an honest participant.
ONE_SIDE_ALPHA = 0.001


def one_side_chance(n_answers: int) -> float:
    """Probability that a participant with no side preference uses one response side on all
    ``n_answers`` answers, when each trial's correct side is a fair coin: 2 · 2⁻ⁿ (1 for n ≤ 1)."""
    return 1.0 if n_answers <= 1 else 2.0 ** (1 - n_answers)


def one_side_min_answers(alpha: float = ONE_SIDE_ALPHA) -> int:
    """The fewest answers from which one side throughout excludes: the smallest n whose
    :func:`one_side_chance` is at most ``alpha`` (11 at the default 0.001), so that the rule excludes a
    participant without a side preference with probability at most ``alpha`` at any trial count."""
    if not 0 < alpha < 1:
        raise ValueError(f"the one-side rule's alpha must lie in (0, 1), got {alpha!r}")
    n = 2
    while one_side_chance(n) > alpha:
        n += 1
    return n

#: the export's ``excl_<rule>`` columns, as a reason a person reads
STUDY_RULES = {
    "excl_catch_accuracy": "catch accuracy below the study's minimum",
    "excl_one_side": "one response side throughout",
    "excl_instructions_time": "instructions read faster than the study's minimum",
    "excl_total_time": "total time outside the study's window",
    "excl_answer_interval": "answers arriving faster than a person gives them",
    "excl_flagged": "flagged (automation or inattention), which the study excludes",
}

#: the export's ``flag_<flag>`` columns, as a reason a person reads
STUDY_FLAGS = {
    "flag_webdriver": "browser driven by automation (navigator.webdriver)",
    "flag_focus_loss": "left the study's window or tab more often than the study allows",
    "flag_fullscreen_exit": "left full screen more often than the study allows",
    "flag_client_time": "browser's reading time longer than the server measured",
}


def _any_true(df: pd.DataFrame, column: str) -> list:
    hit = df.groupby("participant")[column].agg(lambda s: bool(s.fillna(False).any()))
    return list(hit[hit].index)


def flag_counts(df: pd.DataFrame) -> tuple[dict, list]:
    """Participants per integrity flag the export carries (whether or not the study excludes them), and
    notes that say how many are flagged and for what."""
    counts, notes = {}, []
    columns = [c for c in integrity_columns(df) if c != "flagged"]
    for column in columns:
        if df[column].isna().all():
            notes.append(f"the study does not apply the flag '{STUDY_FLAGS.get(column, column)}' ({column} is empty)")
            continue
        counts[STUDY_FLAGS.get(column, column.removeprefix("flag_").replace("_", " "))] = len(_any_true(df, column))
    if "flagged" in df.columns:
        notes.append(f"flagged participants (automation or inattention): {len(_any_true(df, 'flagged'))}"
                     + "".join(f"; {name}: {n}" for name, n in counts.items()))
    return counts, notes


@dataclass
class ExclusionResult:
    kept: pd.DataFrame
    excluded: pd.DataFrame  # participant, reasons
    notes: list = field(default_factory=list)  # rules skipped and why
    counts: dict = field(default_factory=dict)  # rule → participants it excludes
    source: str = "analysis"  # "study": the export's flags; "analysis": apply_exclusions; "none"

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "participants_total": int(self.kept["participant"].nunique() + len(self.excluded)),
            "participants_kept": int(self.kept["participant"].nunique()),
            "excluded": self.excluded.to_dict(orient="records"),
            "counts": self.counts,
            "notes": self.notes,
        }


def has_study_flags(df: pd.DataFrame) -> bool:
    return "excluded" in df.columns


def study_exclusions(df: pd.DataFrame) -> ExclusionResult:
    """The study's own verdicts as the export carries them: a participant is excluded when any of
    their rows says ``excluded``; the reasons are the ``excl_*`` columns that are true."""
    if not has_study_flags(df):
        raise ExportError("the export carries no 'excluded' column (an export of this platform "
                          "has one); use the analysis's own rules instead")
    flags = [c for c in df.columns if str(c).startswith("excl_")]
    by_participant = df.groupby("participant")
    excluded_ids = by_participant["excluded"].agg(lambda s: bool(s.fillna(False).any()))
    excluded_ids = list(excluded_ids[excluded_ids].index)
    reasons = {p: [] for p in excluded_ids}
    counts, notes = {}, []
    for column in flags:
        name = STUDY_RULES.get(column, column.removeprefix("excl_").replace("_", " "))
        if df[column].isna().all():
            notes.append(f"the study does not apply the rule '{name}' ({column} is empty)")
            continue
        hit = by_participant[column].agg(lambda s: bool(s.fillna(False).any()))
        hit = list(hit[hit].index)
        counts[name] = len(hit)
        for p in hit:
            reasons.setdefault(p, []).append(name)
    for p in excluded_ids:
        if not reasons[p]:
            reasons[p].append("excluded by the study")
    excluded = pd.DataFrame(
        [{"participant": p, "reasons": "; ".join(reasons[p])} for p in sorted(excluded_ids)],
        columns=["participant", "reasons"],
    )
    notes.insert(0, "exclusions: the study's own rules, as flagged in the export (columns "
                    + ", ".join(["excluded", *flags]) + "); the analysis's rule options "
                    "apply instead when given")
    flagged, flag_notes = flag_counts(df)
    notes += flag_notes
    counts.update({f"flagged: {name}": n for name, n in flagged.items()})
    kept = df[~df["participant"].isin(excluded_ids)]
    return ExclusionResult(kept=kept, excluded=excluded, notes=notes, counts=counts, source="study")


def exclude(df: pd.DataFrame, mode: str = "auto", options: dict | None = None) -> ExclusionResult:
    """``mode``: ``study`` (the export's flags), ``own`` (:func:`apply_exclusions` with ``options``),
    ``none``, or ``auto``: the study's flags when the export has them and no ``options`` are given,
    else the analysis's rules."""
    if mode not in MODES:
        raise ValueError(f"unknown exclusion mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "auto":
        mode = "study" if has_study_flags(df) and not options else "own"
    if mode == "study":
        return study_exclusions(df)
    if mode == "none":
        return ExclusionResult(kept=df, excluded=pd.DataFrame(columns=["participant", "reasons"]),
                               notes=["no exclusions applied"], source="none")
    res = apply_exclusions(df, **(options or {}))
    if has_study_flags(df):
        res.notes.insert(0, "exclusions: the analysis's own rules, not the study's flags in the export")
    return res


def apply_exclusions(
    df: pd.DataFrame,
    min_catch_accuracy: float | None = 0.8,
    exclude_one_side: bool = True,
    min_instructions_s: float | None = 15.0,
    min_total_minutes: float | None = None,
    max_total_minutes: float | None = None,
    max_fast_answer_share: float | None = 0.25,
    min_answer_interval_ms: float = 1500.0,
    exclude_flagged: bool = True,
    one_side_alpha: float = ONE_SIDE_ALPHA,
) -> ExclusionResult:
    """Apply the study's exclusion rules; ``None``/``False`` turns a rule off. Times are the server's
    where the export has them (``server_instructions_ms``, ``server_interval_ms``), the browser's
    otherwise; ``exclude_flagged`` drops participants the export's ``flagged`` column marks. One side
    throughout excludes only from :func:`one_side_min_answers` (``one_side_alpha``) answers on."""
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
            per = answered.groupby("participant")["choice"]
            enough = one_side_min_answers(one_side_alpha)
            one_side = (per.nunique() <= 1) & (per.count() >= enough)
            flag(list(one_side[one_side].index),
                 f"one response side throughout ({enough}+ answers, chance < {one_side_alpha:g})")
    if min_instructions_s is not None:
        if "instructions_ms" not in df.columns and "server_instructions_ms" not in df.columns:
            notes.append("instruction-time rule skipped: no 'instructions_ms' column")
        else:
            # compared in ms, as studyapp.exclusions does, so both give the same verdict at the edge;
            # the server's measure where there is one, the browser's for rows stored before it
            g = df.groupby("participant")
            t = g["instructions_ms"].min() if "instructions_ms" in df.columns else None
            if "server_instructions_ms" in df.columns:
                server = g["server_instructions_ms"].min()
                t = server if t is None else server.where(server.notna(), t)
            t = t.dropna()
            flag(list(t[t < 1000.0 * min_instructions_s].index),
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
    if max_fast_answer_share is not None:
        if "server_interval_ms" not in df.columns:
            notes.append("answer-interval rule skipped: no 'server_interval_ms' column")
        else:
            measured = df[df["server_interval_ms"].notna()]
            share = (measured["server_interval_ms"] < min_answer_interval_ms).groupby(measured["participant"]).mean()
            flag(list(share[share > max_fast_answer_share].index),
                 f"more than {max_fast_answer_share:g} of answers within {min_answer_interval_ms:g} ms")
    if exclude_flagged:
        if "flagged" not in df.columns:
            notes.append("flag rule skipped: no 'flagged' column")
        else:
            flag(_any_true(df, "flagged"), "flagged (automation or inattention)")
            flagged, flag_notes = flag_counts(df)
            notes += flag_notes
            counts.update({f"flagged: {name}": n for name, n in flagged.items()})
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
