"""The instructions follow the participant's paradigm unless the researcher wrote their own, and the
session tells the front end the paradigm it dispatches the trials and its texts by."""
import uuid

import pytest

from studyapp import texts
from studyapp.trials import PARADIGMS
from tests.studyapp.helpers import api, arrive, make_study


def test_every_paradigm_has_default_instructions_of_its_own():
    assert set(texts.PARADIGM_INSTRUCTIONS) == set(PARADIGMS)
    assert len(set(texts.PARADIGM_INSTRUCTIONS.values())) == len(PARADIGMS)
    assert "row A" in texts.PARADIGM_INSTRUCTIONS["ordered_strip"]
    assert "centre" in texts.PARADIGM_INSTRUCTIONS["reference_2afc"]


@pytest.mark.parametrize("paradigm", PARADIGMS)
@pytest.mark.parametrize("stored", ["", "   \n", texts.DEFAULT_INSTRUCTIONS, texts.DEFAULT_STRIP_INSTRUCTIONS,
                                    # the admin's textarea sends CRLF line ends and drops the final one
                                    texts.DEFAULT_INSTRUCTIONS.replace("\n", "\r\n").rstrip()])
def test_an_unset_or_default_text_gives_the_paradigms_default(stored, paradigm):
    assert texts.instructions_for(stored, paradigm) == texts.PARADIGM_INSTRUCTIONS[paradigm]


@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_the_researchers_own_text_is_kept_for_every_paradigm(paradigm):
    own = texts.DEFAULT_INSTRUCTIONS + "\nAlso: take a break between blocks if you like.\n"
    assert texts.instructions_for(own, paradigm) == own


def test_an_unknown_paradigm_is_refused_by_name():
    with pytest.raises(ValueError, match="saliency_2afc"):
        texts.instructions_for("", "saliency_2afc")


@pytest.mark.django_db
@pytest.mark.parametrize("paradigm", PARADIGMS)
def test_the_session_names_the_paradigm_and_its_instructions(client, paradigm):
    study = make_study()
    study.conditions.update(paradigm=paradigm)
    participant = arrive(client, study)
    status, session = api(client, participant, "session")
    assert status == 200 and session["study"]["paradigm"] == paradigm
    expected = texts.render_markdown(texts.PARADIGM_INSTRUCTIONS[paradigm])
    assert session["study"]["instructions_html"] == expected

    study.instructions_text = "Our own instructions."
    study.save()
    status, session = api(client, participant, "session")
    assert session["study"]["instructions_html"] == "<p>Our own instructions.</p>"


def test_a_text_is_rendered_once_and_its_html_given_to_every_participant(monkeypatch):
    rendered = []
    real = texts.markdown.markdown
    monkeypatch.setattr(texts.markdown, "markdown", lambda text, **kw: rendered.append(text) or real(text, **kw))
    text = f"**Consent** for study {uuid.uuid4()} <script>"
    first = texts.render_markdown(text)
    assert texts.render_markdown(text) == first and len(rendered) == 1
    assert "<strong>Consent</strong>" in first and "&lt;script&gt;" in first
    assert texts.render_markdown(text + " edited") != first and len(rendered) == 2
