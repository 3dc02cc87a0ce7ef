"""A Sobol region analysis's work: the row → `stimuli.measures.regions.analyse_image` → result and pictures. Its
lifecycle (claim, heartbeat, progress, cancel, failure) is `lifecycle`'s."""
import hashlib
from pathlib import Path

from django.conf import settings

from . import lifecycle
from .models import ImageSet, Network, SobolAnalysis


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
    """Analyse the row's image; the result's dictionary. Raises lifecycle.JobBusy when another live worker
    holds the analysis."""
    return lifecycle.run(SobolAnalysis, analysis_id, _analyse)


def _analyse(analysis, progress):
    from stimuli.measures.regions import analyse_image

    network, image_set = analysis.network, analysis.image_set
    outcome = analyse_image(
        network.checkpoint if network.source == Network.Source.CHECKPOINT else network.name,
        "digits" if image_set.source == ImageSet.Source.BUILTIN else image_set.path,
        analysis.image_index, weights=network.weights or None, target_class=analysis.target_class,
        grid=analysis.grid, n_samples=analysis.n_samples, perturbation=analysis.perturbation,
        seed=analysis.seed, progress=lambda fraction: progress("sobol", fraction),
    )
    result = outcome.to_dict()
    SobolAnalysis.objects.filter(pk=analysis.pk).update(
        result=result, image=_save_png(outcome.image_png), overlay=_save_png(outcome.overlay_png))
    return result
