"""Importing a stimulus artifact (docs/contracts.md, section 1) into Unit and Exemplar rows.

The artifact folder (manifest and images) is written under ARTIFACT_ROOT, which the web never serves:
the manifest says which image is a unit's maximally or minimally activating query, the answer to every
trial. What participants are shown is published on import into MEDIA_ROOT, flat, each image under the
hash of its bytes: a name that tells nothing but the content the participant sees anyway, in a folder
without subfolders, listings or manifests, whatever serves it (the media view or a proxy).
"""
import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from stimuli.artifact import ManifestError, occlusion_trials, query_candidates, read_manifest

from .models import Exemplar, Unit

ROLE_LISTS = {
    Exemplar.Role.REFERENCE_MAX: "references_max",
    Exemplar.Role.REFERENCE_MIN: "references_min",
    Exemplar.Role.QUERY_MAX: "queries_max",
    Exemplar.Role.QUERY_MIN: "queries_min",
    Exemplar.Role.OVERLAY_MAX: "attribution_overlays_max",
    Exemplar.Role.SYNTHETIC_MAX: "synthetic_max",
    Exemplar.Role.SYNTHETIC_MIN: "synthetic_min",
}


class ArtifactError(Exception):
    pass


# Published images share one modification time: written in import order, their times would tell which
# were a unit's maximal references and which its minimal ones to anyone reading Last-Modified headers.
PUBLISHED_MTIME = 946684800  # 2000-01-01
PUBLISHED_NAME = r"[0-9a-f]{20}\.png"


def artifact_dir(job):
    return Path(settings.ARTIFACT_ROOT) / f"job-{job.pk}"


def published_name(data):
    """An image's name in MEDIA_ROOT: the artifact's own content name (stimuli.render.content_name), so a
    manifest and the published images name the same image alike."""
    return f"{hashlib.sha256(data).hexdigest()[:20]}.png"


def publish_image(data):
    """Put an image's bytes into MEDIA_ROOT under its content name (atomically; once); returns the name."""
    name = published_name(data)
    root = Path(settings.MEDIA_ROOT)
    path = root / name
    if not path.is_file():
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".publish-", dir=root)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.utime(tmp, (PUBLISHED_MTIME, PUBLISHED_MTIME))
        os.replace(tmp, path)
    return name


def load_manifest(folder):
    """The artifact's manifest, read and validated by the stimuli package that wrote it."""
    try:
        return read_manifest(Path(folder))
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None


def unit_strips(spec):
    """The unit's ordered strips: `strips` where the artifact has several, else its single `strip`."""
    if spec.get("strips"):
        return spec["strips"]
    return [spec["strip"]] if spec.get("strip") else []


@transaction.atomic
def import_artifact(job, folder):
    """Replace the job's units with those of the artifact, in one transaction: a retried job never
    leaves duplicates, and a failed import leaves the previous units in place."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    published = {}
    job.units.all().delete()
    exemplars = []
    occluded = []
    created = 0
    for entry in manifest["layers"]:
        for spec in entry["units"]:
            measures = dict(spec.get("measures", {}))
            try:
                pairs = [(kind, pair) for kind, key in (("main", "occlusion_trials"), ("catch", "occlusion_catch_trials"))
                         for pair in occlusion_trials(spec, key)]
            except ValueError as exc:
                raise ArtifactError(str(exc)) from None
            unit = Unit.objects.create(job=job, layer=entry["layer"], basis=entry["basis"], index=spec["index"],
                                       measures=measures)
            created += 1
            try:
                candidates = query_candidates(spec, f"unit {unit.key}")
            except ManifestError as exc:
                raise ArtifactError(str(exc)) from None
            percentiles = {Exemplar.Role.QUERY_MAX: candidates.max_percentiles,
                           Exemplar.Role.QUERY_MIN: candidates.min_percentiles}
            # only the two occluded copies are shown; the unoccluded query stays in the artifact
            for _kind, pair in pairs:
                for image in (pair.a, pair.b):
                    if not (folder / image).is_file():
                        raise ArtifactError(f"unit {unit.key}: {image} is listed but missing from the artifact")
                    published.setdefault(image, None)
            if pairs:
                occluded.append((unit, pairs))
            slots = [(role, 0, spec.get(key, [])) for role, key in ROLE_LISTS.items()]
            slots += [(Exemplar.Role.STRIP, group, strip) for group, strip in enumerate(unit_strips(spec))]
            for role, group, images in slots:
                for position, image in enumerate(images):
                    if not (folder / image).is_file():
                        raise ArtifactError(f"unit {unit.key}: {image} is listed but missing from the artifact")
                    published.setdefault(image, None)
                    percentile = percentiles[role][position] if percentiles.get(role) is not None else None
                    exemplars.append(Exemplar(unit=unit, role=role, group=group, position=position, image=image,
                                              percentile=percentile))
    # In name order, not the manifest's (roles, unit by unit): nothing about the files keeps that order.
    for image in sorted(published):
        published[image] = publish_image((folder / image).read_bytes())
    for exemplar in exemplars:
        exemplar.image = published[exemplar.image]
    Exemplar.objects.bulk_create(exemplars, batch_size=2000)
    for unit, pairs in occluded:
        unit.occlusion_trials = [{"kind": kind, "a": published[p.a], "b": published[p.b], "correct": p.correct,
                                  "delta_a": p.delta_a, "delta_b": p.delta_b} for kind, p in pairs]
    Unit.objects.bulk_update([unit for unit, _ in occluded], ["occlusion_trials"], batch_size=500)
    job.artifact = folder.name
    job.summary = {
        **{k: v for k, v in manifest.items() if k != "layers"},
        "layers": [{k: v for k, v in entry.items() if k != "units"} for entry in manifest["layers"]],
    }
    job.save(update_fields=["artifact", "summary"])
    return created


def relocate_legacy_layout(StimulusJob, Exemplar, Trial, SobolAnalysis):
    """Move what earlier versions kept under MEDIA_ROOT (MEDIA_ROOT/artifacts/job-N with its manifest,
    MEDIA_ROOT/regions) to ARTIFACT_ROOT, publish the images trials show, and rename the stored image
    paths (exemplars and the trial lists built from them) to the published names. Takes the models as
    a migration's historical ones; a second run finds nothing to do."""
    import shutil

    media, private = Path(settings.MEDIA_ROOT), Path(settings.ARTIFACT_ROOT)
    for job in StimulusJob.objects.filter(artifact__startswith="artifacts/"):
        old, new = media / job.artifact, private / Path(job.artifact).name
        if old.is_dir() and not new.exists():
            new.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(old), str(new))
        renamed = {}
        for exemplar in Exemplar.objects.filter(unit__job=job, image__startswith=job.artifact + "/"):
            if exemplar.image not in renamed:
                source = new / exemplar.image[len(job.artifact) + 1:]
                if not source.is_file():
                    continue
                renamed[exemplar.image] = publish_image(source.read_bytes())
            exemplar.image = renamed[exemplar.image]
            exemplar.save(update_fields=["image"])
        for trial in Trial.objects.filter(unit__job=job):
            for field in ("references_min", "references_max", "strip_a", "strip_b"):
                setattr(trial, field, [renamed.get(p, p) for p in getattr(trial, field)])
            trial.query_a, trial.query_b = renamed.get(trial.query_a, trial.query_a), renamed.get(trial.query_b,
                                                                                                    trial.query_b)
            trial.save(update_fields=["references_min", "references_max", "strip_a", "strip_b", "query_a", "query_b"])
        job.artifact = new.name
        job.save(update_fields=["artifact"])
    for analysis in SobolAnalysis.objects.exclude(image=""):
        for name in (analysis.image, analysis.overlay):
            old, new = media / name, private / name
            if name and old.is_file() and not new.exists():
                new.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(old), str(new))
    for folder in ("artifacts", "regions"):
        with_nothing_left = media / folder
        if with_nothing_left.is_dir() and not any(with_nothing_left.rglob("*.png")):
            shutil.rmtree(with_nothing_left, ignore_errors=True)
