import json

from django.core.management.base import BaseCommand, CommandError

from studyapp import jobs, tasks
from studyapp.management.progress import wait_for_job
from studyapp.models import ImageSet, Network, StimulusJob


class Command(BaseCommand):
    help = "Queue a stimulus job (the same as launching one in the admin) and optionally wait for it."

    def add_arguments(self, parser):
        parser.add_argument("--network", default="demo", help="'demo', a torchvision name, or a Network row's name")
        parser.add_argument("--weights", default="", help="torchvision weights enum, e.g. IMAGENET1K_V1")
        parser.add_argument("--images", default="digits", help="'digits' or an ImageFolder path")
        parser.add_argument("--layer", default="conv2")
        parser.add_argument("--bases", default="neuron,pca,nmf")
        parser.add_argument("--units", type=int, default=6)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--parameters", default="{}", help="further pipeline parameters as JSON")
        parser.add_argument("--wait", action="store_true", help="show progress until the job ends")

    def handle(self, network, weights, images, layer, bases, units, seed, parameters, wait, **options):
        try:
            extra = json.loads(parameters)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--parameters is not valid JSON: {exc}") from None
        source = Network.Source.BUILTIN if network == "demo" else Network.Source.TORCHVISION
        network_row, _ = Network.objects.get_or_create(name=network, defaults={"source": source, "weights": weights})
        if images == "digits":
            image_set, _ = ImageSet.objects.get_or_create(name="digits", defaults={"source": ImageSet.Source.BUILTIN})
        else:
            image_set, _ = ImageSet.objects.get_or_create(name=images, defaults={"source": ImageSet.Source.FOLDER,
                                                                                  "path": images})
        job = StimulusJob.objects.create(network=network_row, image_set=image_set, layer=layer, bases=bases,
                                         n_units=units, seed=seed, parameters=extra)
        try:
            jobs.pipeline_config(job)
        except ValueError as exc:
            job.delete()
            raise CommandError(f"invalid job: {exc}") from None
        tasks.launch(job)
        self.stdout.write(f"queued stimulus job {job.pk}")
        if wait:
            wait_for_job(job)
            self.stdout.write(f"stimulus job {job.pk} succeeded: {job.units.count()} units")
