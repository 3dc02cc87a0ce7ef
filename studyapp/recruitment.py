"""Recruitment parameters in the participant link, and the keyed hash that stands in for a person's id.

Prolific appends PROLIFIC_PID, STUDY_ID and SESSION_ID; MTurk appends workerId, assignmentId and hitId.
Only an HMAC of the person's id is stored, so the database alone cannot be joined to platform accounts.
"""
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from urllib.parse import quote

PLATFORM_PARAMETERS = {
    "prolific": ("PROLIFIC_PID", ("STUDY_ID", "SESSION_ID")),
    "mturk": ("workerId", ("assignmentId", "hitId", "turkSubmitTo")),
}
# What a study recruited on a platform requires of an arrival's link, and the parameter naming the
# platform's session (a Prolific submission, an MTurk assignment), which a resume must match.
REQUIRED_PARAMETERS = {"prolific": ("STUDY_ID", "SESSION_ID"), "mturk": ("assignmentId", "hitId")}
SESSION_PARAMETER = {"prolific": "SESSION_ID", "mturk": "assignmentId"}
_MTURK_SUBMIT = re.compile(r"https://(www|workersandbox)\.mturk\.com/?")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
MAX_PARAMETER_LENGTH = 100


@dataclass(frozen=True)
class Arrival:
    platform: str  # prolific | mturk | link
    external_id: str | None
    info: dict = field(default_factory=dict)


def parse_arrival(params):
    """Which platform sent the participant, their id on it, and the study/session ids beside it."""
    for platform, (id_key, info_keys) in PLATFORM_PARAMETERS.items():
        external_id = (params.get(id_key) or "").strip()
        if external_id:
            if any("\x00" in (params.get(k) or "") for k in (id_key, *info_keys)):
                raise ValueError("the link contains a NUL character")
            if len(external_id) > MAX_PARAMETER_LENGTH:
                raise ValueError(f"{id_key} is longer than {MAX_PARAMETER_LENGTH} characters")
            info = {k: params.get(k, "")[:MAX_PARAMETER_LENGTH] for k in info_keys if params.get(k)}
            if "turkSubmitTo" in info and not _MTURK_SUBMIT.fullmatch(info["turkSubmitTo"]):
                # It becomes the start of the completion redirect: only MTurk's own hosts may stand there.
                raise ValueError("turkSubmitTo is not an MTurk address")
            return Arrival(platform, external_id, info)
    return Arrival("link", None, {})


def hash_external_id(key, platform, external_id):
    message = f"{platform}:{external_id}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def completion_url(template, info, code):
    """The study's completion URL with `{code}` and the arrival's parameters filled in, e.g. MTurk's
    `{turkSubmitTo}/mturk/externalSubmit?assignmentId={assignmentId}`. Unknown placeholders stay as
    they are, so a typo shows in the link rather than vanishing."""
    values = {**info, "code": code}

    def fill(match):
        name = match.group(1)
        if name not in values:
            return match.group(0)
        # turkSubmitTo is a base URL and must stay one; everything else is a query value.
        return values[name] if name == "turkSubmitTo" else quote(str(values[name]), safe="")

    return _PLACEHOLDER.sub(fill, template or "")
