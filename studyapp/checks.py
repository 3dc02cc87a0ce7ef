"""System checks (`manage.py check`) for settings the code cannot repair at run time."""
from pathlib import Path

from django.conf import settings
from django.core.checks import Error, register


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
