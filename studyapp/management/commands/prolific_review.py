import os
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp import prolific, prolific_api
from studyapp.models import Study


class Command(BaseCommand):
    help = (
        "Decide on a study's Prolific submissions (approve, reject, return, review) and their bonuses, and "
        "write decisions.csv, approve.txt and bonuses.csv. With PROLIFIC_API_TOKEN set, --apply sends the "
        "approvals, rejections and return requests and --pay-bonuses sets up and pays one bulk bonus; "
        "without them nothing is sent and the requests that would be are printed."
    )

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument(
            "--submissions",
            help="the submissions CSV exported from Prolific's web app; "
            "without it, the submissions are listed through the API",
        )
        parser.add_argument("--out", default=None, help="folder for the three files (default: <slug>-review)")
        parser.add_argument("--apply", action="store_true", help="approve, reject and request returns on Prolific")
        parser.add_argument("--pay-bonuses", action="store_true", help="set up and pay one bulk bonus on Prolific")
        parser.add_argument(
            "--confirm-paid",
            metavar="BULK_ID",
            help="a payment whose outcome was unknown was made (checked on Prolific): record it",
        )
        parser.add_argument(
            "--confirm-unpaid",
            metavar="BULK_ID",
            help="a payment whose outcome was unknown was not made (checked on Prolific): the "
            "next --pay-bonuses sends it again",
        )

    def handle(self, study, submissions, out, apply, pay_bonuses, confirm_paid, confirm_unpaid, **options):
        try:
            study_row = Study.objects.get(slug=study)
        except Study.DoesNotExist:
            raise CommandError(f"no study with slug {study!r}") from None
        if confirm_paid or confirm_unpaid:
            try:
                prolific_api.confirm_payment(study_row, confirm_paid or confirm_unpaid, paid=bool(confirm_paid))
            except prolific_api.ProlificError as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(
                f"recorded bulk bonus {confirm_paid or confirm_unpaid} as {'paid' if confirm_paid else 'not paid'}"
            )
            return
        token = os.environ.get(prolific_api.TOKEN_VARIABLE, "")
        if (apply or pay_bonuses) and not token:
            raise CommandError(f"--apply and --pay-bonuses act on Prolific: set {prolific_api.TOKEN_VARIABLE}")
        try:
            client = prolific_api.Client(token) if token else None
            if submissions:
                try:
                    text = Path(submissions).read_text(encoding="utf-8")
                except OSError as exc:
                    raise CommandError(f"cannot read {submissions}: {exc}") from None
                rows = prolific.read_submissions(text)
            elif client is not None:
                prolific_id = prolific_api.prolific_study_id(study_row)
                if not prolific_id:
                    raise CommandError(
                        "the study's Prolific id is unknown: set prolific_study_id on the study, or pass --submissions"
                    )
                rows = client.submissions(prolific_id)
            else:
                raise CommandError(
                    f"pass --submissions FILE (Prolific's export), or set "
                    f"{prolific_api.TOKEN_VARIABLE} to list the submissions through the API"
                )
            decisions = prolific.decide(study_row, rows)
            paths = prolific.write_review(decisions, Path(out or f"{study}-review"))
            counts = {
                kind: sum(d.decision == kind for d in decisions)
                for kind in (prolific.APPROVE, prolific.REJECT, prolific.RETURN, prolific.REVIEW)
            }
            self.stdout.write(f"{len(decisions)} submissions: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
            self.stdout.write("wrote " + ", ".join(str(p) for p in paths.values()))
            reviewer = prolific_api.Reviewer(study_row, client, out=self.stdout.write)
            if not (apply or pay_bonuses):
                self.stdout.write("dry run: nothing is sent (--apply, --pay-bonuses act)")
            reviewer.transitions(decisions, send=apply)
            reviewer.bonuses(decisions, send=pay_bonuses)
        except prolific.SubmissionsFileError as exc:
            raise CommandError(str(exc)) from None
        except prolific_api.ProlificError as exc:
            raise CommandError(str(exc)) from None
        report = reviewer.report
        if apply or pay_bonuses:
            self.stdout.write(
                f"sent {len(report.sent)}, skipped {len(report.skipped)} done before, "
                f"refused {len(report.failed)}, outcome unknown {len(report.unknown)}"
            )
        if report.unknown:
            raise CommandError(
                "some requests have no known outcome (see above); run again to retry the "
                "approvals and returns, and check the bonus payments named on Prolific"
            )
