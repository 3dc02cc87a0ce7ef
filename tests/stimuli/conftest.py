import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def stimuli_cache(tmp_path_factory):
    """A private cache, so the suite trains the demo network once and never touches the user's cache."""
    previous = os.environ.get("STIMULI_CACHE_DIR")
    path = tmp_path_factory.mktemp("stimuli-cache")
    os.environ["STIMULI_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("STIMULI_CACHE_DIR", None)
    else:
        os.environ["STIMULI_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def demo(stimuli_cache):
    from stimuli.networks import load_demo

    return load_demo()


@pytest.fixture(scope="session")
def digits():
    from stimuli.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def demo_activations(demo, digits):
    from stimuli.activations import extract

    return extract(demo.model, digits, demo.preprocess, ["conv2", "fc1"], batch_size=512)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, stimuli_cache):
    """One full demo pipeline run shared by the manifest tests."""
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    out = tmp_path_factory.mktemp("artifacts") / "demo"
    calls = []
    config = StimulusConfig.of(n_units=3, bases=["neuron", "pca", "nmf"])
    path = run(config, out, progress=lambda s, f: calls.append((s, f)))
    return config, path, calls
