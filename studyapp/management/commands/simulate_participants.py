import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from studyapp.models import Study
from studyapp.simulation import AnswerOracle, Behaviour, parse_accuracy, result_to_json, simulate


class Command(BaseCommand):
    help = ("Run simulated participants through a live study over HTTP, as browsers would, answering with "
            "planted accuracies per condition or basis; prints throughput and latency per endpoint.")

    def add_arguments(self, parser):
        parser.add_argument("study", help="study slug")
        parser.add_argument("--n", type=int, default=20, help="participants")
        parser.add_argument("--accuracy", default="",
                            help="main-trial accuracy by condition name or basis, e.g. neuron=0.7,pca=0.8,nmf=0.85 "
                                 "(a bare number applies to the rest)")
        parser.add_argument("--default-accuracy", type=float, default=0.75)
        parser.add_argument("--catch-accuracy", type=float, default=0.97)
        parser.add_argument("--practice-accuracy", type=float, default=0.9)
        parser.add_argument("--concurrency", type=int, default=8, help="participants in flight (threads)")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--reload-rate", type=float, default=0.1)
        parser.add_argument("--double-submit-rate", type=float, default=0.05)
        parser.add_argument("--return-rate", type=float, default=0.05)
        parser.add_argument("--think-ms", type=float, default=0.0,
                            help="mean real pause before each answer (0: as fast as the server allows)")
        parser.add_argument("--reading-ms", type=float, default=35_000.0, help="median instruction reading time")
        parser.add_argument("--fetch-images", action="store_true", help="GET every image once, as the preload does")
        parser.add_argument("--max-seconds", type=float, default=600.0, help="no participant starts after this")
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
        parser.add_argument("--forwarded-for", action="store_true",
                            help="send a distinct X-Forwarded-For address per participant, as the proxy would "
                                 "(counts only where the server runs with TRUSTED_PROXY_COUNT=1)")
        parser.add_argument("--no-oracle", action="store_true", help="answer at random (a pure load test)")
        parser.add_argument("--pid-prefix", default=None, help="PROLIFIC_PID prefix (default: random per run)")
        parser.add_argument("--json", dest="json_path", default=None, help="also write the summary to this file")

    def handle(self, study, **o):
        try:
            study_row = Study.objects.get(slug=study)
        except Study.DoesNotExist:
            raise CommandError(f"no study with slug {study!r}") from None
        try:
            accuracy = parse_accuracy(o["accuracy"])
        except ValueError as exc:
            raise CommandError(f"--accuracy: {exc}") from None
        oracle = None if o["no_oracle"] else AnswerOracle.from_study(study_row)
        if oracle is not None:
            known = {c.name for c in oracle.conditions} | {u.basis for u in oracle.units} | {"*"}
            unknown = sorted(set(accuracy) - known)
            if unknown:
                raise CommandError(f"--accuracy names {', '.join(unknown)}, which are neither a condition nor a "
                                   f"basis of study {study!r} (known: {', '.join(sorted(known - {'*'}))})")
        behaviour = Behaviour(
            accuracy=accuracy, default_accuracy=o["default_accuracy"], catch_accuracy=o["catch_accuracy"],
            practice_accuracy=o["practice_accuracy"], reload_rate=o["reload_rate"],
            double_submit_rate=o["double_submit_rate"], return_rate=o["return_rate"], think_ms=o["think_ms"],
            reading_ms_median=o["reading_ms"], fetch_images=o["fetch_images"],
        )
        result = simulate(o["base_url"], study, o["n"], behaviour=behaviour, oracle=oracle,
                          concurrency=o["concurrency"], seed=o["seed"], max_seconds=o["max_seconds"],
                          timeout=o["timeout"], pid_prefix=o["pid_prefix"], forwarded_for=o["forwarded_for"])
        self.stdout.write(result.format_summary())
        if o["json_path"]:
            Path(o["json_path"]).write_text(json.dumps(result_to_json(result), indent=2))
            self.stdout.write(f"\nwrote {o['json_path']}")
