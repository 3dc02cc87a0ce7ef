"""Stimulus generation: from a vision network to units, exemplars and a stimulus artifact.

A Django-free library. The entry point is :func:`stimuli.pipeline.run`; the command line is
``python -m stimuli``. Importing this package does not import torch, so the web app can read
configurations and manifests cheaply.
"""

__version__ = "0.1.0"
