from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.studyfile import StudyFileError, import_study, loads, parse_bindings


class Command(BaseCommand):
    help = ("Make a draft study from a study file (docs/contracts.md, section 5). Its stimulus jobs are found "
            "here by content hash, or bound with --job; a bad file is refused whole, with the field at fault.")

    def add_arguments(self, parser):
        parser.add_argument("file", help="the study file (JSON)")
        parser.add_argument("--slug", help="the new study's link name instead of the file's")
        parser.add_argument("--job", action="append", default=[], metavar="[KEY=]ID",
                            help="use stimulus job ID for the file's job KEY (job-1 …; KEY may be left out when "
                                 "the file has one job); it must be of the same network and layer")

    def handle(self, file, slug, job, **options):
        path = Path(file)
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
        try:
            data = loads(path.read_bytes())
            imported = import_study(data, slug=slug, bindings=parse_bindings(job, data))
        except StudyFileError as exc:
            raise CommandError(f"{path}: {exc}") from None
        study = imported.study
        self.stdout.write(f"imported study {study.slug!r} as a draft with {study.conditions.count()} condition(s)")
        for key, (stimulus_job, how) in sorted(imported.jobs.items()):
            self.stdout.write(f"  {key} -> stimulus job {stimulus_job.pk} ({stimulus_job}), {how}")
        self.stdout.write("It goes live through the go-live checks (the admin's action \"Go live\").")
