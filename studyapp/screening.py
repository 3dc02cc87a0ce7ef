"""Eligibility and the participant's screen: who is screened out, where they go, and what the virtual
chinrest measured.

A participant who fails an eligibility check (a window too small after the allowed retries, a phone or
tablet in a desktop-only study, a browser the study does not support, a viewing distance outside the
study's range) is screened out: their status becomes `screened_out`, which frees their slot at once (only
active and completed participants occupy one, studyapp.assignment), and they are sent to the study's
screen-out URL with Prolific's screen-out code, so that Prolific pays them its fixed screen-out amount
instead of asking them to return the study.

The virtual chinrest is jsPsych's plugin (@jspsych/plugin-virtual-chinrest; Li, Joo, Yeatman & Reinecke
2020, Sci. Rep. 10:1): a credit card's width on screen gives pixels per cm, and the blind spot, 13.5°
temporal to fixation, gives the viewing distance. From both, the size of the query image in degrees of
visual angle, and the pixel size that gives the study's fixed visual angle.
"""

import math
import re

from django.utils import timezone

from .models import Participant
from .recruitment import completion_url

REASONS = {
    "window_too_small": "the browser window stayed smaller than the study's minimum",
    "mobile_device": "a phone or tablet in a desktop-only study",
    "unsupported_browser": "a browser the study does not support",
    "chinrest_failed": "a viewing distance outside the study's range",
}
BROWSERS = ("chrome", "firefox", "edge", "safari", "opera")
# What a person's screen and eyes can plausibly give: outside these the measurement itself failed.
PX_PER_CM_RANGE = (5.0, 500.0)
VIEWING_DISTANCE_RANGE_CM = (5.0, 500.0)
IMAGE_PX_RANGE = (1.0, 10_000.0)
# Phones and tablets by their user agent, for a desktop-only study's check on the server: jsPsych's
# browser check tests /Mobi/ alone, which misses Android tablets and iPads that announce themselves.
_MOBILE_AGENT = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Tablet|Silk|Kindle|PlayBook", re.IGNORECASE)


class ScreeningError(ValueError):
    """A screening request the participant's state or the study's settings refuse."""


def supported_browsers(study):
    return [b.strip().lower() for b in study.supported_browsers.split(",") if b.strip()]


def is_mobile_agent(user_agent):
    return bool(_MOBILE_AGENT.search(user_agent or ""))


def client_settings(study, participant=None):
    """What the participant's page needs to run the checks and the chinrest (the session payload's
    `screening`); `mobile_agent`: the server's reading of the participant's user agent, beside the
    browser's own check."""
    return {
        "desktop_only": study.desktop_only,
        "mobile_agent": is_mobile_agent(participant.user_agent) if participant is not None else False,
        "supported_browsers": supported_browsers(study),
        "virtual_chinrest": study.virtual_chinrest,
        "image_visual_angle_deg": study.image_visual_angle_deg,
        "screen_out": bool(study.screen_out_url),
    }


def screen_out_target(participant):
    """{"url", "code", "reason"} for a screened-out participant: the study's screen-out URL with the code
    and the link's parameters filled in (None without a URL); None for anyone else."""
    if participant.status != Participant.Status.SCREENED_OUT:
        return None
    study = participant.study
    url = completion_url(study.screen_out_url, participant.recruitment_info, study.screen_out_code) or None
    return {"url": url, "code": study.screen_out_code or None, "reason": participant.screen_out_reason}


def screen_out(participant, reason):
    """Screen the participant out for `reason` (a key of REASONS); returns `screen_out_target`. Only an
    active participant who has not answered a main trial can be: a check runs before the trials, and a
    participant already screened out gets the same answer again."""
    if not isinstance(reason, str) or reason not in REASONS:
        raise ScreeningError(f"unknown screening reason {reason!r}; one of {', '.join(REASONS)}")
    if participant.status == Participant.Status.SCREENED_OUT:
        return screen_out_target(participant)
    if participant.status != Participant.Status.STARTED:
        raise ScreeningError("this session has ended")
    if participant.answered > participant.practice_end:
        raise ScreeningError("the main trials have begun; eligibility is checked before them")
    if reason == "mobile_device" and not participant.study.desktop_only:
        raise ScreeningError("this study admits phones and tablets")
    if reason == "unsupported_browser" and not supported_browsers(participant.study):
        raise ScreeningError("this study admits every browser")
    now = timezone.now()
    # The status moves only from started: of two requests at once, one writes.
    Participant.objects.filter(pk=participant.pk, status=Participant.Status.STARTED).update(
        status=Participant.Status.SCREENED_OUT, screen_out_reason=reason, finished_at=now
    )
    participant.refresh_from_db(fields=["status", "screen_out_reason", "finished_at"])
    return screen_out_target(participant)


def _in(value, bounds, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScreeningError(f"'{name}' must be a number")
    low, high = bounds
    if not low <= value <= high:
        raise ScreeningError(f"'{name}' must be between {low:g} and {high:g}")
    return float(value)


def record_calibration(participant, px_per_cm, viewing_distance_cm, image_px=None):
    """Store what the virtual chinrest measured (and the query image's width in CSS pixels as the page
    shows it); screen the participant out when the study bounds the viewing distance and it falls
    outside. Returns the screen-out target, or None when the participant goes on."""
    study = participant.study
    if not study.virtual_chinrest:
        raise ScreeningError("this study has no virtual-chinrest step")
    if participant.status != Participant.Status.STARTED:
        raise ScreeningError("this session has ended")
    participant.px_per_cm = _in(px_per_cm, PX_PER_CM_RANGE, "px_per_cm")
    participant.viewing_distance_cm = _in(viewing_distance_cm, VIEWING_DISTANCE_RANGE_CM, "viewing_distance_cm")
    participant.image_px = None if image_px is None else _in(image_px, IMAGE_PX_RANGE, "image_px")
    participant.save(update_fields=["px_per_cm", "viewing_distance_cm", "image_px"])
    low, high = study.min_viewing_distance_cm, study.max_viewing_distance_cm
    distance = participant.viewing_distance_cm
    if (low is not None and distance < low) or (high is not None and distance > high):
        return screen_out(participant, "chinrest_failed")
    return None


def visual_angle_deg(size_px, px_per_cm, viewing_distance_cm):
    """The visual angle (degrees) of `size_px` CSS pixels at the measured scale and distance; None where
    a measure is missing."""
    if not size_px or not px_per_cm or not viewing_distance_cm:
        return None
    return math.degrees(2 * math.atan(size_px / px_per_cm / 2 / viewing_distance_cm))


def pixels_for_angle(angle_deg, px_per_cm, viewing_distance_cm):
    """CSS pixels that subtend `angle_deg` at the measured scale and distance (the inverse of
    `visual_angle_deg`); what the page scales query images to when the study fixes their visual angle."""
    return 2 * viewing_distance_cm * math.tan(math.radians(angle_deg) / 2) * px_per_cm
