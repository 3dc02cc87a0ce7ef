"""Recruitment parameters in the participant link, and the keyed hash that stands in for a person's id.

Prolific appends PROLIFIC_PID, STUDY_ID and SESSION_ID; MTurk appends workerId, assignmentId and hitId.
Only an HMAC of the person's id is stored, so the database alone cannot be joined to platform accounts.
"""
import hashlib
import hmac
from dataclasses import dataclass, field

PLATFORM_PARAMETERS = {
    "prolific": ("PROLIFIC_PID", ("STUDY_ID", "SESSION_ID")),
    "mturk": ("workerId", ("assignmentId", "hitId")),
}
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
            if len(external_id) > MAX_PARAMETER_LENGTH:
                raise ValueError(f"{id_key} is longer than {MAX_PARAMETER_LENGTH} characters")
            info = {k: params.get(k, "")[:MAX_PARAMETER_LENGTH] for k in info_keys if params.get(k)}
            return Arrival(platform, external_id, info)
    return Arrival("link", None, {})


def hash_external_id(key, platform, external_id):
    message = f"{platform}:{external_id}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
