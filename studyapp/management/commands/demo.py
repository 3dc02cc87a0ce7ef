import os

from django.core.management.base import BaseCommand, CommandError

from studyapp import demo, golive, tasks
from studyapp.management.progress import wait_for_job
from studyapp.models import Frozen


class Command(BaseCommand):
    help = "Set up the embedded demo: stimuli for the demo network in three bases, a live study, an admin."

    def add_arguments(self, parser):
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--slug", default="demo")

    def handle(self, base_url, slug, **options):
        job, new = demo.demo_job()
        if new:
            self.stdout.write(f"Generating stimuli: demo network, layer {job.layer}, bases {job.bases} ...")
            tasks.launch(job)
        wait_for_job(job)
        try:
            study = demo.demo_study(job, slug=slug)
        except golive.GoLiveRefused as exc:
            raise CommandError("\n  ".join([f"The demo study '{slug}' cannot go live:", *exc.problems])) from None
        except Frozen as exc:  # an existing demo study with answers, whose conditions would change
            raise CommandError(" ".join(exc.messages)) from None
        password = demo.admin_account(password=os.environ.get("DEMO_ADMIN_PASSWORD"))
        units = job.units.count()
        base = base_url.rstrip("/")
        self.stdout.write(self.style.SUCCESS(
            f"\nDemo study '{study.slug}' is live with {study.conditions.count()} conditions over {units} units.\n"
        ))
        self.stdout.write(f"  Participant link:  {base}/s/{study.slug}/"
                          f"?PROLIFIC_PID=demo-{os.getpid()}&STUDY_ID=demo&SESSION_ID=1")
        self.stdout.write(f"  Plain link:        {base}/s/{study.slug}/")
        self.stdout.write(f"  Admin:             {base}/admin/   user: admin   password: {password}")
        self.stdout.write(f"  Export:            .venv/bin/python manage.py export_responses {study.slug} --format csv")
        self.stdout.write(f"  Analyse:           .venv/bin/python -m analysis report {study.slug}-responses.csv\n")
