"""Adding a basis takes one module (tests/stimuli/toy_basis.py) and one registration line: the toy basis
then runs through configuration (its own parameters under its own key included), the whole pipeline
(fit, unit choice, exemplars, completeness, decision measures, attribution) and the manifest, with no
other file knowing its name."""

import json

import numpy as np
import pytest

from stimuli.bases import basis_names, make_basis, register, unregister
from stimuli.config import StimulusConfig
from stimuli.pipeline import run

from .toy_basis import RotationBasis


@pytest.fixture
def rotation():
    register(RotationBasis)
    yield RotationBasis
    unregister(RotationBasis.name)


def test_an_unregistered_basis_is_refused():
    assert "rotation" not in basis_names()
    with pytest.raises(ValueError, match="unknown basis 'rotation'"):
        StimulusConfig.of(bases=["rotation"])


def test_a_name_is_registered_once(rotation):
    class Other(RotationBasis):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register(Other)


def test_the_toy_basis_is_a_basis(rotation):
    A = np.random.default_rng(0).standard_normal((200, 6)) @ np.diag([3.0, 2, 1, 1, 0.5, 0.1])
    basis = make_basis("rotation", random_state=1).fit(A)
    # a rotation keeps all the variance, and the base class's least-squares shares see it
    assert basis.explained_variance_ratio_.shape == (6,)
    assert np.allclose(basis.inverse_transform(basis.transform(A)), A)
    # the base class's readout (central differences) recovers the linear code's gradient, the atom
    assert np.allclose(basis.readout(A[0], 2), basis.components_[2], atol=1e-6)


def test_the_toy_basis_brings_its_own_configuration_key(rotation):
    """Its parameters are the job configuration's `rotation` key, read, checked and written back with no
    other file naming it; unregistered, the key is unknown."""
    config = StimulusConfig.of(bases=["rotation", "pca"], rotation={"reflect": True})
    assert config.bases.own_params("rotation") == {"reflect": True}
    params = RotationBasis.params_from_settings(config.bases, seed=4)
    assert params == {"n_components": None, "random_state": 4, "reflect": True}
    A = np.random.default_rng(0).standard_normal((50, 4))
    plain = make_basis("rotation", **{**params, "reflect": False}).fit(A)
    assert np.allclose(make_basis("rotation", **params).fit(A).components_, -plain.components_)
    flat = config.to_dict()
    assert flat["rotation"] == {"reflect": True} and StimulusConfig.from_dict(flat) == config
    assert StimulusConfig.of(bases=["pca"]).to_dict()["rotation"] == {}
    with pytest.raises(ValueError, match="unknown rotation parameter"):
        StimulusConfig.of(bases=["rotation"], rotation={"angle": 1})
    with pytest.raises(ValueError, match="rotation.reflect must be true or false"):
        StimulusConfig.of(bases=["rotation"], rotation={"reflect": "yes"})
    unregister(RotationBasis.name)
    try:
        with pytest.raises(ValueError, match="unknown configuration key"):
            StimulusConfig.of(bases=["pca"], rotation={"reflect": True})
    finally:
        register(RotationBasis)


def test_the_toy_basis_runs_through_the_pipeline(rotation, tmp_path):
    config = StimulusConfig.of(bases=["rotation", "pca"], rotation={"reflect": True}, n_units=2, max_images=300,
                               decision_max_images=64,
                            influence_class=3, attribution_overlays=True, surrogate_depth=[1, 2])
    path = run(config, tmp_path / "toy")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["parameters"]["rotation"] == {"reflect": True}
    entries = {entry["basis"]: entry for entry in manifest["layers"]}
    assert set(entries) == {"rotation", "pca"}
    rot = entries["rotation"]
    assert len(rot["units"]) == 2 and rot["n_components"] == rot["n_channels"]
    for unit in rot["units"]:
        assert unit["references_max"] and unit["attribution_overlays_max"]
        assert "ablation_accuracy_drop" in unit["measures"] and "influence" in unit["measures"]
    # completeness projected the toy basis's codes (the base class's exact codes: its own transform);
    # with every unit kept, the network's accuracy is its own
    top = rot["completeness"]["accuracy"]
    assert all(0 <= a <= 1 for a in top) and top[-1] == entries["pca"]["completeness"]["accuracy"][-1]
    assert "decisions_error" not in rot and rot["essence"] and rot["surrogate"]
