import os
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from studyapp import demo, jobs
from studyapp.models import StimulusJob

POLL_SECONDS = 0.3


class Command(BaseCommand):
    help = "Set up the embedded demo: stimuli for the demo network in three bases, a live study, an admin."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--slug", default="demo")

    def handle(self, base_url, slug, **options):
        job, new = demo.demo_job()
        if new:
            self.stdout.write(f"Generating stimuli: demo network, layer {job.layer}, bases {job.bases} ...")
            jobs.enqueue(job)
        self._wait(job)
        study = demo.demo_study(job, slug=slug)
        password = demo.admin_account(password=os.environ.get("DEMO_ADMIN_PASSWORD"))
        units = job.units.count()
        base = base_url.rstrip("/")
        self.stdout.write(self.style.SUCCESS(
            f"\nDemo study '{study.slug}' is live with {study.conditions.count()} conditions over {units} units.\n"
        ))
        self.stdout.write(f"  Participant link:  {base}/s/{study.slug}/?PROLIFIC_PID=demo-{os.getpid()}&STUDY_ID=demo&SESSION_ID=1")
        self.stdout.write(f"  Plain link:        {base}/s/{study.slug}/")
        self.stdout.write(f"  Admin:             {base}/admin/   user: admin   password: {password}")
        self.stdout.write(f"  Export:            .venv/bin/python manage.py export_responses {study.slug} --format csv")
        self.stdout.write(f"  Analyse:           .venv/bin/python -m analysis report {study.slug}-responses.csv\n")

    def _wait(self, job):
        shown = None
        with tqdm(total=100, unit="%", desc="queued", bar_format="{desc:<12} {bar} {n:.0f}%") as bar:
            while True:
                job.refresh_from_db()
                if (job.stage, job.progress) != shown:
                    shown = (job.stage, job.progress)
                    bar.set_description_str(job.stage or job.status, refresh=False)
                    bar.n = job.progress
                    bar.refresh()
                if job.status == StimulusJob.Status.SUCCEEDED:
                    return
                if job.status in (StimulusJob.Status.FAILED, StimulusJob.Status.CANCELLED):
                    raise CommandError(f"stimulus job {job.pk} {job.status}: {job.error.splitlines()[0] if job.error else ''}")
                time.sleep(POLL_SECONDS)
