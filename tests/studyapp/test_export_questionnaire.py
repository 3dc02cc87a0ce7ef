"""The questionnaire's answers in the response export: one column `q_<question>` per question, the same on
each of a participant's rows, typed per question, and read back to the same types by `analysis.load`
from CSV and from Parquet."""
import uuid

import pandas as pd
import pytest

from analysis.load import question_columns, read_responses
from studyapp.export import COLUMNS, response_frame, write_export
from tests.studyapp.helpers import answer, api, arrive, correct_choice, play_to_the_questionnaire, through_instructions


def finish(client, study, answers):
    participant = play_to_the_questionnaire(client, study, pid=str(uuid.uuid4()))
    if answers is not None:
        assert api(client, participant, "questionnaire", {"answers": answers})[0] == 200
    return participant


ANSWERS = [
    {"age": 31, "strategy": "shapes", "glasses": True, "difficulty": 2.5, "note": "7"},
    {"age": 45, "strategy": "colours", "glasses": False, "difficulty": 4, "note": "none"},
]


@pytest.mark.django_db
def test_questionnaire_answers_are_columns_repeated_on_each_row_of_their_participant(client, study):
    first, second = (finish(client, study, a) for a in ANSWERS)
    unfinished = arrive(client, study, pid="late")
    through_instructions(client, unfinished)
    trial = api(client, unfinished, "trials?limit=1")[1]["trials"][0]
    answer(client, unfinished, trial["id"], correct_choice(trial["id"]))
    frame = response_frame(study)
    assert list(frame.columns) == [*COLUMNS, "q_age", "q_difficulty", "q_glasses", "q_note", "q_strategy"]
    rows = {p.pseudonym: frame[frame["participant"] == p.pseudonym] for p in (first, second, unfinished)}
    assert len(rows[first.pseudonym]) == 12 and set(rows[first.pseudonym]["q_strategy"]) == {"shapes"}
    assert set(rows[second.pseudonym]["q_age"]) == {45}
    assert rows[unfinished.pseudonym][["q_age", "q_strategy", "q_glasses"]].isna().all().all()
    assert str(frame["q_age"].dtype) == "Int64" and str(frame["q_glasses"].dtype) == "boolean"
    assert str(frame["q_difficulty"].dtype) == "float64" and str(frame["q_note"].dtype) == "string"


@pytest.mark.django_db
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_analysis_reads_the_questionnaire_columns_back_with_their_types(client, study, tmp_path, fmt):
    for given in ANSWERS:
        finish(client, study, given)
    finish(client, study, {"age": 28})  # answered one question only
    path = tmp_path / f"export.{fmt}"
    write_export(study, path, fmt)
    df = read_responses(path)
    assert question_columns(df) == ["q_age", "q_difficulty", "q_glasses", "q_note", "q_strategy"]
    assert {c: str(df[c].dtype) for c in question_columns(df)} == {
        "q_age": "Int64", "q_difficulty": "float64", "q_glasses": "boolean", "q_note": "string",
        "q_strategy": "string"}
    per_participant = df.groupby("participant")[question_columns(df)].first()
    assert sorted(per_participant["q_age"].tolist()) == [28, 31, 45]
    assert per_participant["q_glasses"].isna().sum() == 1 and per_participant["q_glasses"].sum() == 1
    assert sorted(per_participant["q_difficulty"].dropna().tolist()) == [2.5, 4.0]
    assert set(per_participant["q_note"].dropna()) == {"7", "none"}


def test_analysis_reads_a_whole_number_csv_column_with_gaps_as_integers_and_true_false_text_as_booleans(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"participant": ["P1", "P2", "P3"], "condition": "c", "unit": "conv2:pca:0", "trial_kind": "main",
                  "correct": [1, 0, 1], "q_age": [31, None, 45], "q_consent_again": ["True", "", "False"],
                  "q_words": ["a", "", "b"]}).to_csv(path, index=False)
    df = read_responses(path)
    assert df["q_age"].dtype == "Int64" and df["q_age"].tolist()[0] == 31 and df["q_age"].isna().sum() == 1
    assert df["q_consent_again"].dtype == "boolean" and df["q_consent_again"].tolist()[2] == False  # noqa: E712
    assert df["q_words"].dtype == "string"
