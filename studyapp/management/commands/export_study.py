from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.models import Study
from studyapp.studyfile import StudyFileError, dumps, export_study


class Command(BaseCommand):
    help = "Write a study as a file (docs/contracts.md, section 5): its design, never participants or secrets."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the study's slug")
        parser.add_argument("--out", help="output file (default: <slug>.study.json; '-' for standard output)")

    def handle(self, slug, out, **options):
        study = Study.objects.filter(slug=slug).first()
        if study is None:
            known = ", ".join(Study.objects.order_by("slug").values_list("slug", flat=True)) or "none"
            raise CommandError(f"no study with slug {slug!r} (known: {known})")
        try:
            text = dumps(export_study(study))
        except StudyFileError as exc:
            raise CommandError(str(exc)) from None
        if out == "-":
            self.stdout.write(text, ending="")
            return
        path = Path(out or f"{slug}.study.json")
        path.write_text(text, encoding="utf-8")
        self.stdout.write(f"wrote study {slug!r} to {path}")
