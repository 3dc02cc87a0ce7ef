"""Networks from timm and open_clip registered in the admin: by name (random or hub weights), or as a
checkpoint network whose name is the library model and whose file holds its weights."""

import pytest

from studyapp import jobs
from studyapp.models import ImageSet, Network, StimulusJob


def _job(network, layer):
    image_set = ImageSet.objects.create(name="digits")
    return StimulusJob.objects.create(network=network, image_set=image_set, layer=layer, bases="neuron")


@pytest.mark.django_db
def test_a_checkpoint_network_named_after_a_library_model_loads_by_name_with_its_file(tmp_path):
    network = Network.objects.create(
        name="timm:convnext_tiny", source=Network.Source.CHECKPOINT, checkpoint=str(tmp_path / "convnext.pt")
    )
    config = jobs.pipeline_config(_job(network, "stages.1"))
    assert config.network.name == "timm:convnext_tiny" and config.network.checkpoint == str(tmp_path / "convnext.pt")
    assert config.network.architecture is None
    assert jobs.network_spec(network) == ("timm:convnext_tiny", None)


@pytest.mark.django_db
def test_a_torchvision_checkpoint_keeps_the_file_and_architecture_form(tmp_path):
    network = Network.objects.create(
        name="vit_b_32", source=Network.Source.CHECKPOINT, checkpoint=str(tmp_path / "vit.pt")
    )
    config = jobs.pipeline_config(_job(network, "encoder.layers.encoder_layer_6"))
    assert config.network.name == str(tmp_path / "vit.pt") and config.network.architecture == "vit_b_32"
    assert config.network.checkpoint is None


def test_the_layers_of_an_open_clip_tower_are_listed_without_weights():
    layers = jobs._list_layers("open_clip:RN50", None)
    assert "visual.layer3" in layers and "visual.attnpool" in layers
