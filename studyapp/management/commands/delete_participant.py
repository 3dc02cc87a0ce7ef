from django.core.management.base import BaseCommand, CommandError

from studyapp import withdrawal
from studyapp.models import Study


class Command(BaseCommand):
    help = (
        "Delete a participant who withdrew, found by their Prolific id or MTurk worker id (hashed with the "
        "study's key, as stored): their row, trials, responses and recorded Prolific actions. The study's "
        "change log records that a deletion happened, without the id."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--prolific-pid", help="the participant's Prolific id (PROLIFIC_PID)")
        which.add_argument("--worker-id", help="the participant's MTurk worker id (workerId)")

    def handle(self, study, prolific_pid, worker_id, **options):
        try:
            study_row = Study.objects.get(slug=study)
        except Study.DoesNotExist:
            raise CommandError(f"no study with slug {study!r}") from None
        platform, external_id = ("prolific", prolific_pid) if prolific_pid else ("mturk", worker_id)
        found = list(withdrawal.find(study_row, external_id, platforms=(platform,)))
        if not found:
            raise CommandError(f"study {study}: no participant with this {platform} id (nothing deleted)")
        for participant in found:
            removed = withdrawal.delete_participant(participant)
            self.stdout.write(
                f"deleted a participant of {participant.study.slug}: "
                + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in removed.items())
            )
