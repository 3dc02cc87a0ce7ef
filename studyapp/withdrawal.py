"""A participant's withdrawal: finding them by the recruitment id they know (their Prolific id or MTurk
worker id), which the platform holds only as a keyed hash, and deleting everything of theirs.

Deleting removes the participant row, their trials and responses (cascading from it), the Prolific actions
recorded for their submission (studyapp.prolific_api) and their line in any recorded bulk bonus; the
platform stores no files per participant (the questionnaire is a column of the row). One audit line in the
study's change log says a deletion happened and what it removed, never the id; counts (monitor, export)
follow because they are computed from the rows."""

import logging

from django.conf import settings
from django.db import transaction

from .models import Participant, ProlificAction, StudyChange
from .recruitment import SESSION_PARAMETER, hash_external_id

logger = logging.getLogger(__name__)
PLATFORMS = ("prolific", "mturk")


def find(study, external_id, platforms=PLATFORMS):
    """The participants of `study` (any of its versions) whose recruitment id on one of `platforms` is
    `external_id`, found by hashing it with the study's key."""
    external_id = (external_id or "").strip()
    if not external_id:
        return Participant.objects.none()
    digests = [hash_external_id(settings.PARTICIPANT_ID_KEY, p, external_id) for p in platforms]
    return Participant.objects.filter(study_id__in=study.version_ids(), external_id_hash__in=digests)


def search(queryset, external_id):
    """Participants of `queryset` (any study) with this recruitment id, on any platform: the admin's search."""
    external_id = (external_id or "").strip()
    digests = [hash_external_id(settings.PARTICIPANT_ID_KEY, p, external_id) for p in PLATFORMS]
    return queryset.filter(external_id_hash__in=digests)


def _forget_bonus(study, submission_id):
    """Take the submission out of the recorded bulk bonuses it was part of (a bulk set-up is shared by
    many people, so its row stays): its id and amount leave the record of what was sent."""
    for setup in ProlificAction.objects.filter(study=study, kind=ProlificAction.Kind.BONUS_SETUP):
        bonuses = dict((setup.request or {}).get("bonuses") or {})
        if submission_id not in bonuses:
            continue
        bonuses.pop(submission_id)
        body = dict(setup.request.get("body") or {})
        lines = [
            line for line in (body.get("csv_bonuses") or "").splitlines() if line.partition(",")[0] != submission_id
        ]
        body["csv_bonuses"] = "\n".join(lines)
        setup.request = {**setup.request, "bonuses": bonuses, "body": body, "withdrawn": True}
        setup.save(update_fields=["request"])


def delete_participant(participant, author=None):
    """Delete the participant and everything of theirs; returns what was removed, by kind."""
    with transaction.atomic():
        participant = Participant.objects.select_for_update().get(pk=participant.pk)
        study = participant.study
        removed = {"trials": participant.trials.count(), "responses": participant.responses.count()}
        key = SESSION_PARAMETER.get(participant.recruitment)
        session = (participant.recruitment_info or {}).get(key) if key else None
        actions = ProlificAction.objects.filter(study=study, submission_id=session) if session else None
        removed["prolific_actions"] = actions.delete()[0] if actions is not None else 0
        if session:
            _forget_bonus(study, session)
        participant.delete()
        removed["participants"] = 1
        summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in removed.items())
        StudyChange.objects.create(
            study=study,
            field="withdrawal",
            old="",
            new=f"a participant's data deleted ({summary})",
            author=author if getattr(author, "pk", None) is not None else None,
            author_name=author.get_username() if getattr(author, "pk", None) is not None else "",
        )
    logger.info("study %s: a participant's data deleted on withdrawal (%s)", study.slug, summary)
    return removed
