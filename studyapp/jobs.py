"""A stimulus job's work: the job row → a pipeline config → an artifact → Unit rows. Its lifecycle
(claim, heartbeat, progress, cancel, failure) is `lifecycle`'s.

Called by the Celery task (a GPU worker) and, in the embedded default with no broker, in process.
"""
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from . import lifecycle
from .artifacts import artifact_dir, import_artifact
from .models import StimulusJob

log = logging.getLogger(__name__)


# Parameters of the job, not of the pipeline: "shards", how many parts its activation pass is split into
# (1: one task; absent: STIMULUS_SHARD_IMAGES decides).
JOB_PARAMETERS = ("shards",)


def requested_shards(job):
    """The job's own shard count, or None to leave it to STIMULUS_SHARD_IMAGES; ValueError if it is not a
    positive integer."""
    n = job.parameters.get("shards")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"shards must be a positive integer, not {n!r}")
    return n


def pipeline_config(job):
    """The pipeline's configuration of the job (its parameters checked, the job's own ones included)."""
    from stimuli.config import StimulusConfig

    requested_shards(job)

    network = job.network
    image_set = job.image_set
    values = {
        "network": network.name if network.source != network.Source.CHECKPOINT else network.checkpoint,
        "dataset": "digits" if image_set.source == image_set.Source.BUILTIN else image_set.path,
        "layers": [job.layer],
        "bases": job.basis_list,
        "n_units": job.n_units,
        "seed": job.seed,
        **{k: v for k, v in job.parameters.items() if k not in JOB_PARAMETERS},
    }
    if network.source == network.Source.TORCHVISION and network.weights:
        values["weights"] = network.weights
    if network.source == network.Source.CHECKPOINT:
        if _library_model(network.name):
            # a timm or open_clip model with its weights file: the library builds it by name
            values.update(network=network.name, checkpoint=network.checkpoint)
        else:
            values["architecture"] = job.parameters.get("architecture", network.name)
    return StimulusConfig.from_dict(values)


def _library_model(name):
    """Whether a network's name is a timm or open_clip model (stimuli.networks' `timm:` and `open_clip:`)."""
    return name.startswith(("timm:", "open_clip:"))


def run_job(job_id):
    """Generate (unless a complete artifact is already in place from an earlier attempt) and import; the
    number of units imported. Raises lifecycle.JobBusy when another live worker holds the job."""
    return lifecycle.run(StimulusJob, job_id, generate_and_import)


def generate_and_import(job, progress, given=None):
    """The job's artifact generated (unless complete from an earlier attempt) and imported; the number of
    units. `given(config)`, when given, returns what the pipeline starts from in place of its own work
    (a sharded job's image set from its listing and its merged shards: `pipeline.run`'s `images` and
    `activations`), asked for only when the artifact is to be generated."""
    from stimuli import pipeline
    from stimuli.artifact import MANIFEST

    out_dir = artifact_dir(job)
    if not (out_dir / MANIFEST).exists():
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        # A worker killed mid-job leaves its temporary folder behind; the artifact itself never is half.
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        config = pipeline_config(job)
        pipeline.run(config, out_dir, progress=progress, **(given(config) if given is not None else {}))
    StimulusJob.objects.filter(pk=job.pk).update(stage="import", progress=0)
    import_artifact(job, out_dir)
    n_units = job.units.count()
    log.info("stimulus job %s imported %d units", job.pk, n_units)
    return n_units


def network_spec(network):
    """What the pipeline loads for a Network row (as `pipeline_config` names it): the spec, and the
    architecture of a checkpoint."""
    if network.source == network.Source.CHECKPOINT and not _library_model(network.name):
        return network.checkpoint, network.name
    return network.name, None


def _list_layers(spec, architecture):
    from stimuli.layers import list_layers
    from stimuli.networks import DEMO_NAME, DemoNet, load_network, load_torchvision

    # Layer names depend on the architecture only, never on the weights: build it without them, so a
    # form lists the layers without training the demo network or reading a torchvision weights file.
    if spec == DEMO_NAME:
        model = DemoNet()
    elif architecture is None and _library_model(spec):
        model = load_network(spec, allow_download=False).model
    elif architecture is None:
        model = load_torchvision(spec, weights=None).model
    else:
        model = load_network(spec, architecture=architecture, allow_download=False).model
    return list_layers(model)


def _layers_cache_file(spec, architecture):
    """Where the layer list of a network is kept between processes: importing torch and tracing a network
    takes seconds (15 s on a loaded machine), too long for every web worker's first form. The file's name
    holds everything the list depends on: the network, the checkpoint file's version, the versions of
    torch and torchvision, and the stimuli modules that build and trace the network. The folder is the
    stimuli library's cache (stimuli.networks.cache_dir, which cannot be imported without torch)."""
    from importlib import metadata, util

    parts = [spec, architecture or ""]
    if architecture is not None and os.path.isfile(spec):
        parts.append(str(os.stat(spec).st_mtime_ns))
    parts += [metadata.version(name) for name in ("torch", "torchvision")]
    for module in ("stimuli.networks", "stimuli.layers"):
        stat = os.stat(util.find_spec(module).origin)
        parts += [str(stat.st_mtime_ns), str(stat.st_size)]
    digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
    folder = os.environ.get("STIMULI_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "stimuli")
    return Path(folder) / f"layers-{digest}.json"


@functools.lru_cache(maxsize=64)
def _layers_of(spec, architecture, stamp):
    path = _layers_cache_file(spec, architecture)
    try:
        return tuple(json.loads(path.read_text()))
    except (OSError, ValueError):
        pass
    layers = _list_layers(spec, architecture)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole and renamed, so a process reading it never sees half a list.
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".layers-", delete=False) as tmp:
            json.dump(layers, tmp)
        os.replace(tmp.name, path)
    except OSError:
        log.warning("could not keep the layer list of %s in %s", spec, path.parent)
    return tuple(layers)


def network_layers(network):
    """The names `python -m stimuli layers` prints for the network: what a job's layer may be.
    Raises ValueError (the loader's own words) when the network cannot be built here."""
    spec, architecture = network_spec(network)
    # A checkpoint file replaced in place is read again.
    stamp = os.stat(spec).st_mtime_ns if architecture is not None and os.path.isfile(spec) else None
    try:
        return list(_layers_of(spec, architecture, stamp))
    # stimuli.networks.NetworkLoadError is a ValueError; naming it would import torch.
    except (ValueError, OSError, RuntimeError) as exc:
        raise ValueError(f"the layers of network {network} cannot be listed: {exc}") from None


# The stages a stimulus job's row passes through, in order: a sharded job lists its image folder
# first ("listing", studyapp.shards), every job runs the pipeline's stages (stimuli.pipeline.STAGES,
# spelled out because importing the pipeline imports torch, too slow for a page that polls; a test
# keeps the two equal), and then imports.
JOB_STAGES = ("listing", "network", "activations", "bases", "exemplars", "render", "featurevis", "occlusion",
              "measures", "sobol", "write", "import")


def overall_progress(job, stages):
    """(stage number from 1, number of stages, overall percent) of a job whose row says it is at
    `job.stage` with `job.progress` percent of that stage done; every stage counts the same, since
    their durations depend on the network, the image set and the options. A job that skips a stage
    (an unsharded job's "listing") has done it. None for a stage outside `stages`."""
    if job.status == job.Status.SUCCEEDED:
        return len(stages), len(stages), 100.0
    if job.stage not in stages:
        return None
    i = stages.index(job.stage)
    return i + 1, len(stages), 100 * (i + job.progress / 100) / len(stages)
