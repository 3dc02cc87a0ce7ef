from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.export import write_export
from studyapp.models import Study


class Command(BaseCommand):
    help = "Write a study's responses, one row per response (the contract with analysis/)."

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
        parser.add_argument("--out", help="output file (default: <slug>-responses.<format>)")

    def handle(self, study, format, out, **options):
        try:
            study_row = Study.objects.get(slug=study)
        except Study.DoesNotExist:
            known = ", ".join(Study.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no study with slug {study!r} (known: {known})") from None
        path = Path(out or f"{study}-responses.{format}")
        n = write_export(study_row, path, format)
        self.stdout.write(f"wrote {n} responses to {path}")
