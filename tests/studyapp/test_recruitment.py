import pytest

from studyapp.recruitment import completion_url, hash_external_id, parse_arrival


def test_prolific_and_mturk_arrivals_are_recognised():
    prolific = parse_arrival({"PROLIFIC_PID": "5f1", "STUDY_ID": "s", "SESSION_ID": "x"})
    assert (prolific.platform, prolific.external_id, prolific.info) == ("prolific", "5f1", {"STUDY_ID": "s", "SESSION_ID": "x"})
    mturk = parse_arrival({"workerId": "A1", "assignmentId": "as", "hitId": "h",
                           "turkSubmitTo": "https://workersandbox.mturk.com"})
    assert mturk.platform == "mturk" and mturk.info["turkSubmitTo"] == "https://workersandbox.mturk.com"
    assert parse_arrival({}).platform == "link"


def test_overlong_ids_and_foreign_submit_addresses_are_refused():
    with pytest.raises(ValueError, match="PROLIFIC_PID"):
        parse_arrival({"PROLIFIC_PID": "x" * 101})
    for address in ("javascript:alert(1)", "https://evil.example/mturk.com", "https://www.mturk.com.evil.example"):
        with pytest.raises(ValueError, match="turkSubmitTo"):
            parse_arrival({"workerId": "A1", "turkSubmitTo": address})


def test_the_hash_is_keyed_and_platform_specific():
    assert hash_external_id("k1", "prolific", "a") != hash_external_id("k2", "prolific", "a")
    assert hash_external_id("k1", "prolific", "a") != hash_external_id("k1", "mturk", "a")
    assert len(hash_external_id("k1", "prolific", "a")) == 64


def test_completion_url_fills_the_code_and_the_arrival_parameters():
    assert completion_url("https://app.prolific.com/submissions/complete?cc={code}", {}, "C 1") == \
        "https://app.prolific.com/submissions/complete?cc=C%201"
    info = {"turkSubmitTo": "https://workersandbox.mturk.com", "assignmentId": "A&B"}
    assert completion_url("{turkSubmitTo}/mturk/externalSubmit?assignmentId={assignmentId}", info, "") == \
        "https://workersandbox.mturk.com/mturk/externalSubmit?assignmentId=A%26B"
    assert completion_url("https://x/?s={SESSION_ID}", {}, "c") == "https://x/?s={SESSION_ID}"
    assert completion_url("", {}, "c") == ""
