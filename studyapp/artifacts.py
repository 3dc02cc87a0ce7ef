"""Importing a stimulus artifact (docs/contracts.md, section 1) into Unit and Exemplar rows."""
import json
from pathlib import Path

from django.conf import settings
from django.db import transaction

from .models import Exemplar, Unit

SUPPORTED_SCHEMA_VERSIONS = {1}
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


def artifact_dir(job):
    return Path(settings.MEDIA_ROOT) / "artifacts" / f"job-{job.pk}"


def load_manifest(folder):
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"no manifest.json in the artifact folder {Path(folder).name}") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"manifest.json is not valid JSON: {exc}") from None
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise ArtifactError(f"manifest schema_version {version!r} is not supported "
                            f"(this version reads {sorted(SUPPORTED_SCHEMA_VERSIONS)})")
    return manifest


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
    prefix = folder.relative_to(settings.MEDIA_ROOT).as_posix()
    job.units.all().delete()
    exemplars = []
    created = 0
    for entry in manifest["layers"]:
        for spec in entry["units"]:
            measures = dict(spec.get("measures", {}))
            unit = Unit.objects.create(job=job, layer=entry["layer"], basis=entry["basis"], index=spec["index"],
                                       measures=measures)
            created += 1
            slots = [(role, 0, spec.get(key, [])) for role, key in ROLE_LISTS.items()]
            slots += [(Exemplar.Role.STRIP, group, strip) for group, strip in enumerate(unit_strips(spec))]
            for role, group, images in slots:
                for position, image in enumerate(images):
                    if not (folder / image).is_file():
                        raise ArtifactError(f"unit {unit.key}: {image} is listed but missing from the artifact")
                    exemplars.append(Exemplar(unit=unit, role=role, group=group, position=position,
                                              image=f"{prefix}/{image}"))
    Exemplar.objects.bulk_create(exemplars, batch_size=2000)
    job.artifact = prefix
    job.summary = {
        **{k: v for k, v in manifest.items() if k != "layers"},
        "layers": [{k: v for k, v in entry.items() if k != "units"} for entry in manifest["layers"]],
    }
    job.save(update_fields=["artifact", "summary"])
    return created
