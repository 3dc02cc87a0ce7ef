import io

import numpy as np
import pytest
from PIL import Image

from stimuli.measures.regions import analyse_image


def test_one_image_of_the_demo_gets_region_indices_and_an_overlay(demo):
    analysis = analyse_image("demo", "digits", 0, grid=2, n_samples=64)
    result = analysis.to_dict()
    assert result["n_regions"] == 4 and len(result["ST"]) == 4
    assert result["label"] == 0 and result["image_id"] == "digits:0"
    assert np.all(np.asarray(result["ST"]) >= -0.1)
    overlay = Image.open(io.BytesIO(analysis.overlay_png))
    assert overlay.size == (224, 224) and overlay.mode == "RGB"
    assert analysis.image_png != analysis.overlay_png


def test_an_index_outside_the_dataset_is_refused(demo):
    with pytest.raises(ValueError, match="out of range"):
        analyse_image("demo", "digits", 10_000, grid=2, n_samples=16)
