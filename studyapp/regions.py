"""Running a Sobol region analysis: the row → `stimuli.regions.analyse_image` → result and pictures."""
import hashlib
import logging
import time
import traceback
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .models import ImageSet, Network, SobolAnalysis, StimulusJob

log = logging.getLogger(__name__)


def _save_png(data):
    name = f"regions/{hashlib.sha256(data).hexdigest()[:20]}.png"
    # Researchers' pictures: kept with the artifacts, out of what participants are served.
    path = Path(settings.ARTIFACT_ROOT) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return name


def run_analysis(analysis_id):
    from stimuli.regions import analyse_image

    analysis = SobolAnalysis.objects.select_related("network", "image_set").get(pk=analysis_id)
    if analysis.status == StimulusJob.Status.SUCCEEDED:
        return analysis.result
    SobolAnalysis.objects.filter(pk=analysis.pk).update(status=StimulusJob.Status.RUNNING, error="", progress=0)
    network, image_set = analysis.network, analysis.image_set
    last = [0.0]

    def progress(fraction):
        if time.monotonic() - last[0] > 0.5 or fraction >= 1:
            last[0] = time.monotonic()
            SobolAnalysis.objects.filter(pk=analysis.pk).update(progress=round(100 * fraction, 1))

    try:
        outcome = analyse_image(
            network.checkpoint if network.source == Network.Source.CHECKPOINT else network.name,
            "digits" if image_set.source == ImageSet.Source.BUILTIN else image_set.path,
            analysis.image_index, weights=network.weights or None, target_class=analysis.target_class,
            grid=analysis.grid, n_samples=analysis.n_samples, perturbation=analysis.perturbation,
            seed=analysis.seed, progress=progress,
        )
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        SobolAnalysis.objects.filter(pk=analysis.pk).update(
            status=StimulusJob.Status.FAILED, error=f"{detail}\n\n{traceback.format_exc()[-4000:]}",
            finished=timezone.now())
        log.exception("Sobol analysis %s failed", analysis.pk)
        raise
    result = outcome.to_dict()
    SobolAnalysis.objects.filter(pk=analysis.pk).update(
        status=StimulusJob.Status.SUCCEEDED, result=result, progress=100.0, finished=timezone.now(),
        image=_save_png(outcome.image_png), overlay=_save_png(outcome.overlay_png),
    )
    return result
