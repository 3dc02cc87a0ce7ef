"""Read a response export (CSV or Parquet, one row per response; docs/contracts.md §2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .checks import drop_nonfinite, rows_left_out, trial_kinds

__all__ = ["REQUIRED", "BOROWSKI_MAP", "parse_mapping", "read_table", "read_responses", "main_trials",
           "model_trials", "answered", "flag_columns", "integrity_columns", "question_columns", "QUESTION_PREFIX"]

REQUIRED = ("participant", "condition", "unit", "trial_kind", "correct")
#: the questionnaire's answers: one column ``q_<question>`` per question (docs/contracts.md §2)
QUESTION_PREFIX = "q_"

#: Borowski et al. (2021), bethgelab/testing_visualizations: ours → theirs
BOROWSKI_MAP = {
    "participant": "subject_id",
    "unit": "unit_name",
    "condition": "instr_type",
    "reference_type": "instr_type",
    "correct": "correct",
    "trial_kind": "trial_type",
    "catch": "catch_trial",
    "rt": "RT",
    "confidence": "abs_conf_rating",
}


#: a foreign table's reference types in ours: Borowski et al.'s feature visualizations are "optimized",
#: and their two no-reference baselines (before and after the references) are both "none"
REFERENCE_TYPE_VALUES = {"optimized": "synthetic", "none_pre": "none", "none_post": "none"}


class ExportError(ValueError):
    """The file is not a usable response export."""


def parse_mapping(text: str | dict | None) -> dict:
    """``"participant=subject_id,unit=unit_name"`` (ours=theirs) → dict; ``"borowski"`` → the
    Borowski map."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    if text.strip().lower() == "borowski":
        return dict(BOROWSKI_MAP)
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ExportError(f"bad mapping entry {part!r}: expected ours=theirs")
        ours, theirs = (s.strip() for s in part.split("=", 1))
        out[ours] = theirs
    return out


def read_table(path, mapping: dict | str | None = None) -> pd.DataFrame:
    """Read CSV/Parquet and rename foreign columns (``mapping``: ours → theirs)."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"no such file: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path)
        first = df.columns[0]
        if first == "" or first.startswith("Unnamed: 0"):  # a written-out pandas index
            df = df.drop(columns=first)
    mapping = parse_mapping(mapping)
    missing = [theirs for theirs in mapping.values() if theirs not in df.columns]
    if missing:
        raise ExportError(f"mapped columns not in the file: {', '.join(missing)}")
    # several of ours may point at one of theirs: copy, then drop originals no longer needed
    for ours, theirs in mapping.items():
        if ours != theirs:
            df[ours] = df[theirs]
    return df


def _as01(s: pd.Series) -> pd.Series:
    """0/1 from booleans, numbers or text (true/false, yes/no, 1/0).

    A missing answer (an empty cell, NaN) stays missing, as a float NaN, rather than failing here
    with pandas' "cannot convert non-finite values": each consumer then says what it does with it
    (the models' data checks drop such rows with a note naming the column and the count, the report
    drops them from every section with one). Without missing values the column is ``int``."""
    name = s.name if s.name is not None else "correct"
    missing = np.array(s.isna(), dtype=bool)
    if pd.api.types.is_bool_dtype(s):
        return s.astype(int) if not missing.any() else s.astype("float64")
    if pd.api.types.is_numeric_dtype(s):
        v = s.astype("float64")
        bad = sorted(set(v[~missing & ~v.isin([0.0, 1.0])].tolist()))
        if bad:
            # truncating 0.5 or 2 to an int would change the answer silently
            raise ExportError(f"column {name!r} has values that are not 0/1: {bad[:5]}")
        return v if missing.any() else v.astype(int)
    low = s.astype("string").str.strip().str.lower()
    missing |= np.array((low == "").fillna(True), dtype=bool)
    table = {"true": 1, "false": 0, "1": 1, "0": 0, "1.0": 1, "0.0": 0, "yes": 1, "no": 0, "y": 1, "n": 0}
    bad = sorted(set(low[~missing]) - set(table))
    if bad:
        raise ExportError(f"column {name!r} has values that are not 0/1: {bad[:5]}")
    out = low.map(table).astype("float64")
    out[missing] = float("nan")
    return out if missing.any() else out.astype(int)


def flag_columns(df: pd.DataFrame) -> list[str]:
    """The study's verdict columns an export carries: ``excluded`` and ``excl_<rule>``, then the integrity
    flags ``flagged`` and ``flag_<flag>``."""
    return ([c for c in df.columns if c == "excluded" or str(c).startswith("excl_")]
            + integrity_columns(df))


def integrity_columns(df: pd.DataFrame) -> list[str]:
    """The integrity flags an export carries: ``flagged`` and ``flag_<flag>`` (automation, inattention)."""
    return [c for c in df.columns if c == "flagged" or str(c).startswith("flag_")]


def question_columns(df: pd.DataFrame) -> list[str]:
    """The questionnaire's columns an export carries, ``q_<question>``, in the file's order."""
    return [c for c in df.columns if str(c).startswith(QUESTION_PREFIX)]


def _as_answer(s: pd.Series) -> pd.Series:
    """One question's answers with the type the export wrote, read back the same from CSV and Parquet:
    ``boolean`` for true / false answers, ``Int64`` for whole numbers (CSV turns an integer column with
    empty cells into floats), ``float64`` for other numbers, ``string`` for text; empty cells missing."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    if pd.api.types.is_numeric_dtype(s):
        given = s.dropna()
        if pd.api.types.is_integer_dtype(s) or (len(given) and (given == given.round()).all()):
            return s.astype("Float64").astype("Int64")
        return s.astype("float64")
    text = s.astype("string")
    low = text.str.strip().str.lower()
    if low.notna().any() and set(low.dropna()) <= {"true", "false"}:
        return low.map({"true": True, "false": False}).astype("boolean")
    return text


def _as_flag(s: pd.Series) -> pd.Series:
    """True / False / missing (a rule the study does not apply), from CSV text or Parquet booleans."""
    if pd.api.types.is_bool_dtype(s):
        return s.astype("boolean")
    table = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}
    low = s.astype("string").str.strip().str.lower()
    bad = sorted(set(low.dropna()) - set(table) - {"", "nan", "<na>", "none"})
    if bad:
        raise ExportError(f"column {s.name!r} has values that are not true/false: {bad[:5]}")
    return low.map(table).astype("boolean")


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Types and derived columns: ``correct`` 0/1, ``trial_kind`` with catch trials marked
    (foreign data with a separate boolean ``catch`` column), ``rt_ms`` from ``rt`` in seconds."""
    df = df.copy()
    df["correct"] = _as01(df["correct"])
    df["participant"] = df["participant"].astype(str)
    df["unit"] = df["unit"].astype(str)
    df["condition"] = df["condition"].astype(str)
    df["trial_kind"] = df["trial_kind"].astype(str).str.strip().str.lower()
    if "reference_type" in df.columns:
        kind = df["reference_type"].astype(str).str.strip().str.lower()
        df["reference_type"] = kind.map(lambda v: REFERENCE_TYPE_VALUES.get(v, v))
    if "catch" in df.columns:
        catch = _as01(df["catch"].fillna(False)).astype(bool)
        df.loc[catch & (df["trial_kind"] == "main"), "trial_kind"] = "catch"
    for c in flag_columns(df):
        df[c] = _as_flag(df[c])
    for c in question_columns(df):
        df[c] = _as_answer(df[c])
    for c in ("mis_delta", "unit_mis", "server_instructions_ms", "server_interval_ms", "instructions_ms",
              "occlusion_delta_a", "occlusion_delta_b"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    if "rt_ms" not in df.columns and "rt" in df.columns:
        df["rt_ms"] = pd.to_numeric(df["rt"], errors="coerce") * 1000.0
    return df


def read_responses(path, mapping: dict | str | None = None) -> pd.DataFrame:
    """Read and validate a response export; foreign files through ``mapping`` (ours → theirs)."""
    df = read_table(path, mapping)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ExportError(
            f"{path}: missing required column(s) {', '.join(missing)}; the file has "
            f"{', '.join(map(str, df.columns[:30]))}. For foreign data pass a mapping such as "
            "--map participant=subject_id,unit=unit_name"
        )
    return normalise(df)


def main_trials(df: pd.DataFrame) -> pd.DataFrame:
    """Main, non-catch trials (the ones accuracy is about)."""
    return df[df["trial_kind"] == "main"]


def answered(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows whose ``correct`` is known, and a note naming how many were not. An answer without a
    recorded outcome counts neither as right nor as wrong, so accuracy, catch rules and models all
    leave it out alike (counted in the trials but not the successes, it would read as wrong)."""
    kept, notes, _ = drop_nonfinite(df, ["correct"])
    return kept, [f"{n} from every section" for n in notes]


def model_trials(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None, dict[str, int]]:
    """The main, non-catch trials a model of accuracy is fitted to, with the note saying how many rows
    of each other trial kind (catch, practice, …) that leaves out and those counts by kind, so that no
    row leaves a fit unsaid (:func:`analysis.checks.rows_left_out`). ``df``: a normalised export."""
    main = main_trials(df)
    note, counts = rows_left_out(trial_kinds(df), main.index)
    return main, note, counts


def catch_trials(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["trial_kind"] == "catch"]


