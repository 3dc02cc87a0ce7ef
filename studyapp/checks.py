"""System checks (`manage.py check`) for settings the code cannot repair at run time."""
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, Warning, register


@register()
def artifacts_are_not_served(app_configs, **kwargs):
    """The artifacts hold the answer key (manifest.json): a MEDIA_ROOT around them would let a proxy that
    serves MEDIA_ROOT serve it too."""
    media = Path(settings.MEDIA_ROOT).resolve()
    artifacts = Path(settings.ARTIFACT_ROOT).resolve()
    if artifacts == media or media in artifacts.parents or artifacts in media.parents:
        return [Error(f"ARTIFACT_ROOT ({artifacts}) and MEDIA_ROOT ({media}) overlap",
                      hint="Point ARTIFACT_ROOT at a folder outside MEDIA_ROOT: the artifacts' manifests "
                           "map every shown image to its role.", id="studyapp.E001")]
    return []


def sharding_without_result_backend():
    """The check's message when stimulus jobs would be sharded but cannot be; None when all is well."""
    from .shards import result_backend_missing

    if settings.STIMULUS_SHARD_IMAGES and result_backend_missing():
        return (f"STIMULUS_SHARD_IMAGES is {settings.STIMULUS_SHARD_IMAGES} but CELERY_RESULT_BACKEND is not set: "
                "Celery needs a result backend to run a sharded job's shards and callback, so every stimulus job "
                "runs as one task on one GPU worker")
    return None


@register()
def shards_need_a_result_backend(app_configs, **kwargs):
    message = sharding_without_result_backend()
    if message:
        return [Warning(message, hint="Set CELERY_RESULT_BACKEND (e.g. redis://redis:6379/2, as docker-compose.yml "
                                      "does), or STIMULUS_SHARD_IMAGES=0 to run every job as one task.",
                        id="studyapp.W001")]
    return []
