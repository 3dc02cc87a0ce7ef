"""Stimulus pipeline benchmark: pipeline wall time vs a bare forward pass over the same images.

    .venv/bin/python bench/bench_stimuli.py [--case demo,resnet18,resnet50,vit_b_16] [--n-images 1000] [--repeat 2]

Two cases:

* ``demo``: the built-in digits CNN over the 1797 digits. The forward pass takes milliseconds, so the
  ratio measures the pipeline's fixed costs (imports, tracing, fitting, rendering), not its scaling.
* ``resnet18``: torchvision's ResNet-18 with random weights (nothing is downloaded) over an ImageFolder
  of generated 256 x 256 JPEGs, preprocessed as ImageNet weights are (resize 256, centre crop 224),
  layer ``layer4`` by default. The forward pass dominates, as it does in real jobs; this is the case
  the ratio target (neurons + PCA, completeness off, at most 1.15) is about.

"bare forward" decodes, preprocesses and runs the whole network over the images with the pipeline's
own loader and batch size; "ratio" is a run's wall time over that. Both clocks start after the
imports (printed separately for the pipeline): they are a worker's start-up cost, not a job's. The
pipeline's clock includes loading the network, scanning the folder, fitting, rendering and writing.
``resnet50`` (the research-scale case) compares against torchvision's canonical loop instead, so that
a slow loader cannot hide in both numbers: ``DataLoader(ImageFolder(root, weights.transforms()),
batch_size, num_workers, pin_memory)`` and ``model(x)`` under ``torch.inference_mode()``, on the same
folder of photograph-like 500 x 375 JPEGs (jittered crops of scikit-learn's sample photographs, so
decoding costs what it costs on real photographs), with the same worker count, in the same run. The
pipeline reads three layers (layer2, layer3, layer4) with neuron + PCA bases; the decision measures and
completeness are off (``essence``, ``ablation``, ``surrogate``, ``figures`` false,
``label_entropy_top_n`` 0, ``completeness`` false), as they are extra forward passes by design.
``--sizes 5000,20000`` runs it at several folder sizes to show how peak RSS grows with N, and the last
line checks the memory goal (peak RSS at the largest size within the smallest size's figure plus the
pooled matrices' growth, plus 10 %): PASS or FAIL. ``--pipeline-only 20000`` skips the baseline at
that size, for the memory figure without doubling the run.

``vit_b_16`` is the same comparison for a vision transformer: torchvision's ViT-B/16 (random weights, the
transforms of its ImageNet weights, resize 256 and centre crop 224) against torchvision's loop, on the same
kind of folder (``--sizes``, 5,000 images for the issue's figure), the pipeline reading three encoder
blocks (``encoder_layer_3``, ``_7``, ``_11``: (B, 197, 768) tokens, units over the 768 channels, the mean
over the 196 patch tokens) with neuron + PCA.

Two cases measure what the measures cost (issue 33), each against its own baseline in the same run:

* ``small``: the 48-image ResNet-18 job a researcher tries settings with (``--network resnet18
  --layer layer1.0.add --bases neuron --units 2``, every other option at its default: completeness and
  the decision measures on), on 48 photograph-like JPEGs, against a bare torchvision forward pass over
  the same images: the model built (``get_model`` and the same state dict), the folder read and
  transformed by ``ImageFolder`` with the weights' transforms, and one forward pass. The network is a
  seeded random-init checkpoint the script writes (nothing is downloaded), so runs compare. Goal:
  within 3x (``SMALL_TARGET``).
* ``resnet50-defaults``: the ``resnet50`` case's job with the defaults (completeness, the decision
  measures, and Sobol for ``--sobol-images`` images) against the same job with them off, in the same
  run. Goal: at most 1.5x (``DEFAULTS_TARGET``). ``--layers`` narrows the layers where a full run
  would not fit the machine. Both cases print each stage's seconds and the measures' parts (the
  manifest's ``timings``, where the code records them).

Every measurement runs in a fresh process, so its peak RSS is its own; the best of ``--repeat`` runs
is shown for the bare pass and for neurons + PCA, one run for the slower bases. On a shared machine
the figures move with the other load: compare rows of one run only.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 1.15
SMALL_TARGET = 3.0
DEFAULTS_TARGET = 1.5


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_image_folder(root: Path, n: int, size: int = 256, n_classes: int = 10, seed: int = 0) -> Path:
    """``n`` JPEGs of random oriented gratings plus noise, in ``n_classes`` class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        folder = root / f"class{i % n_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        freq, phase = rng.uniform(2, 12, size=3), rng.uniform(0, 6.3, size=3)
        rgb = np.stack([np.sin(2 * np.pi * f * (xx * np.cos(p) + yy * np.sin(p)) + p) for f, p in zip(freq, phase)], -1)
        rgb += 0.2 * rng.normal(size=rgb.shape)
        Image.fromarray(np.clip((rgb + 1) * 127.5, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def make_photo_folder(root: Path, n: int, size: tuple[int, int] = (500, 375), n_classes: int = 10,
                      seed: int = 0) -> Path:
    """``n`` JPEGs of ``size`` cut from scikit-learn's two sample photographs: a random crop (half to
    all of the width), a random colour gain, noise, a random mirror and a random JPEG quality, so every
    file decodes like a distinct photograph."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(p) for p in load_sample_images().images]
    w, h = size
    for i in range(n):
        folder = root / f"class{i % n_classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        src = photos[i % len(photos)]
        cw = int(src.width * rng.uniform(0.5, 1.0))
        ch = min(int(cw * h / w), src.height)
        x0, y0 = rng.integers(0, src.width - cw + 1), rng.integers(0, src.height - ch + 1)
        im = src.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.float32) * rng.uniform(0.8, 1.2, size=3) + rng.normal(0, 6, size=(h, w, 3))
        if rng.random() < 0.5:
            a = a[:, ::-1]
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg",
                                                                   quality=int(rng.integers(75, 95)))
    return root


def torchvision_loop(case: dict) -> dict:
    """torchvision's canonical inference loop over the folder (the ``resnet50`` case's baseline)."""
    import torch
    import torchvision
    from torchvision.models import get_model, get_model_weights

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = get_model(case["network"], weights=None).to(device).eval()
    # the transforms of the ImageNet weights, read from their metadata: nothing is downloaded
    transforms = get_model_weights(case["network"]).DEFAULT.transforms()
    start = time.perf_counter()
    dataset = torchvision.datasets.ImageFolder(case["dataset"], transforms)
    loader = torch.utils.data.DataLoader(dataset, batch_size=case["batch_size"], num_workers=case["num_workers"],
                                         pin_memory=device.type == "cuda")
    with torch.inference_mode():
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "n_images": len(dataset), "rss_mib": _peak_rss_mib()}


def run_research_case(name: str, case: dict, baseline: bool = True) -> dict:
    """The torchvision loop (unless ``baseline`` is false) and the pipeline on one folder, printed as
    rows; returns the figures the closing lines compare."""
    base = _best(case["repeat"], torchvision_loop, case) if baseline else None
    r = _best(case["repeat"], pipeline, case, ["neuron", "pca"], False)
    n = r["n_images"]
    print(f"\n== {name}: {case['description']}; {n} images, layers {', '.join(case['layers'])}, "
          f"batch {case['batch_size']}, loader workers {case['num_workers']} (both)")
    print(f"{'run':<34}{'runs':>5}{'wall s':>9}{'ratio':>8}{'img/s':>9}{'peak RSS MiB':>14}")
    if base is not None:
        print(f"{'torchvision loop (baseline)':<34}{case['repeat']:>5}{base['seconds']:>9.2f}{1.0:>8.2f}"
              f"{n / base['seconds']:>9.1f}{base['rss_mib']:>14.0f}")
    else:
        print(f"{'torchvision loop (baseline)':<34}{'skipped (--pipeline-only)':>45}")
    ratio = r["seconds"] / base["seconds"] if base is not None else None
    shown = f"{ratio:>8.2f}" if ratio is not None else f"{'-':>8}"
    print(f"{'pipeline neuron+pca':<34}{case['repeat']:>5}{r['seconds']:>9.2f}{shown}"
          f"{n / r['seconds']:>9.1f}{r['rss_mib']:>14.0f}")
    print("      stages s: " + "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items() if k != "end")
          + f"   (imports before the clock {r['imports']:.2f})")
    return {"n": n, "ratio": ratio, "rss": r["rss_mib"], "base_rss": None if base is None else base["rss_mib"],
            "images_per_s": n / r["seconds"], "pooled_mib": r["pooled_mib"]}


def _network(case: dict):
    import torch

    from stimuli.networks import load_demo, load_network

    if case["network"] == "demo":
        return load_demo()
    torch.manual_seed(0)
    return load_network(case["network"])


def bare_forward(case: dict, channels_last: bool = False) -> dict:
    import torch

    from stimuli.activations import batches
    from stimuli.datasets import load_dataset
    from stimuli.networks import resolve_device

    device = resolve_device("auto")
    net = _network(case)
    model = net.model.to(device).eval()
    images = load_dataset(case["dataset"])
    start = time.perf_counter()
    with torch.inference_mode():
        for _, x, _ in batches(images, net.preprocess, case["batch_size"], case["num_workers"]):
            x = x.to(device, non_blocking=True)
            model(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "n_images": len(images), "rss_mib": _peak_rss_mib()}


def _warm_imports() -> float:
    """Import what a job imports lazily (torchvision pulls in torch._dynamo, scikit-learn its utils:
    about 3 s on a 2-core machine). A worker process pays this once, not per job, so the timed run
    starts after it; the figure is printed on its own."""
    start = time.perf_counter()
    import sklearn.decomposition  # noqa: F401
    import torchvision.models.feature_extraction  # noqa: F401
    from PIL import PngImagePlugin  # noqa: F401

    from stimuli import activations, artifact, bases, datasets, exemplars, networks, render, selection  # noqa: F401  # noqa: F401
    from stimuli.measures import completeness  # noqa: F401
    return time.perf_counter() - start


def pipeline(case: dict, bases: list[str], completeness: bool) -> dict:
    imports = _warm_imports()
    from stimuli.config import StimulusConfig

    layers = case.get("layers") or [case["layer"]]
    config = StimulusConfig.of(network=case["network"], dataset=case["dataset"], layers=layers, bases=bases,
                            n_units=case["units"], batch_size=case["batch_size"], num_workers=case["num_workers"],
                            completeness=completeness, **case.get("extra", {}))
    seconds, stages, seen = timed_run(config, _artifact_figures)
    return {"seconds": seconds, "stages": stages, "rss_mib": _peak_rss_mib(), "imports": imports, **seen}


def _artifact_figures(out: Path) -> dict:
    """What the benchmark reads from an artifact: the PNGs written, the images read and the size of
    the pooled N x C float32 matrices (every layer's channels, from the manifest)."""
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    n = manifest["dataset"]["n_images"]
    channels = sum({e["layer"]: e["n_channels"] for e in manifest["layers"]}.values())
    return {"n_png": len(list((out / "images").iterdir())), "n_images": n, "pooled_mib": n * channels * 4 / 2**20}


def timed_run(config, inspect=None) -> tuple[float, dict[str, float], object]:
    """One stimulus job on ``config`` in a temporary folder: its wall seconds, the seconds of each
    progress stage, and ``inspect(artifact folder)`` (None without it) read before the folder goes."""
    from stimuli.pipeline import run

    stages: dict[str, float] = {}
    state = {"stage": None, "t": time.perf_counter()}

    def progress(stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if state["stage"] is not None:
            stages[state["stage"]] = stages.get(state["stage"], 0.0) + now - state["t"]
        state["stage"], state["t"] = stage, now

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = run(config, Path(tmp) / "artifact", progress=progress)
        seconds = time.perf_counter() - start
        seen = inspect(out) if inspect is not None else None
    progress("end", 0.0)
    return seconds, stages, seen


def _in_child(fn, *args):
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def _best(n: int, fn, *args) -> dict:
    return min((_in_child(fn, *args) for _ in range(n)), key=lambda r: r["seconds"])


def run_case(name: str, case: dict, runs: list[tuple[str, list[str], bool, int]]) -> list[tuple]:
    fwd = _best(case["repeat"], bare_forward, case)
    n = fwd["n_images"]
    print(f"\n== {name}: {case['description']}; {n} images, layer {case['layer']}, batch {case['batch_size']}, "
          f"loader workers {case['num_workers']}")
    print(f"{'run':<32}{'runs':>5}{'wall s':>9}{'ratio':>8}{'img/s':>9}{'PNGs':>6}{'peak RSS MiB':>14}")
    print(f"{'bare forward pass':<32}{case['repeat']:>5}{fwd['seconds']:>9.2f}{1.0:>8.2f}"
          f"{n / fwd['seconds']:>9.1f}{'':>6}{fwd['rss_mib']:>14.0f}")
    if case["network"] != "demo":
        # the pipeline feeds CNNs channels-last batches (stimuli.activations.uses_channels_last); the
        # same trick on the bare pass, for the ratio against the fastest plain forward pass too
        cl = _best(case["repeat"], bare_forward, case, True)
        case["bare_cl"] = cl["seconds"]
        print(f"{'bare forward, channels-last':<32}{case['repeat']:>5}{cl['seconds']:>9.2f}"
              f"{cl['seconds'] / fwd['seconds']:>8.2f}{n / cl['seconds']:>9.1f}{'':>6}{cl['rss_mib']:>14.0f}")
    rows = []
    for label, bases, comp, repeat in runs:
        r = _best(repeat, pipeline, case, bases, comp)
        ratio = r["seconds"] / fwd["seconds"]
        print(f"{label:<32}{repeat:>5}{r['seconds']:>9.2f}{ratio:>8.2f}{n / r['seconds']:>9.1f}{r['n_png']:>6}"
              f"{r['rss_mib']:>14.0f}")
        print("      stages s: " + "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items() if k != "end")
              + f"   (imports before the clock {r['imports']:.2f})")
        rows.append((name, label, ratio, r["seconds"] / case["bare_cl"] if "bare_cl" in case else None))
    return rows


def write_checkpoint(path: Path, architecture: str, seed: int = 0) -> Path:
    """A seeded random-init state dict of a torchvision ``architecture``: the same network in every
    process and run, with nothing downloaded."""
    import torch
    from torchvision.models import get_model

    torch.manual_seed(seed)
    torch.save(get_model(architecture, weights=None).state_dict(), path)
    return path


def torchvision_single_pass(case: dict) -> dict:
    """The ``small`` case's baseline: model built from the checkpoint, the folder read and transformed
    by torchvision, one forward pass over all of it."""
    import torch
    import torchvision
    from torchvision.models import get_model, get_model_weights

    start = time.perf_counter()
    model = get_model(case["architecture"], weights=None)
    model.load_state_dict(torch.load(case["network"], map_location="cpu", weights_only=True))
    model.eval()
    transforms = get_model_weights(case["architecture"]).DEFAULT.transforms()
    dataset = torchvision.datasets.ImageFolder(case["dataset"], transforms)
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    with torch.inference_mode():
        model(x)
    return {"seconds": time.perf_counter() - start, "n_images": len(dataset), "rss_mib": _peak_rss_mib()}


def _timings(out: Path) -> dict:
    """The manifest's ``timings`` (absent on code older than the stage times), and the images read."""
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    return {"timings": manifest.get("timings"), "n_images": manifest["dataset"]["n_images"]}


def job(case: dict, extra: dict) -> dict:
    """One stimulus job of ``case`` with the flat options ``extra``: wall seconds after the imports, the
    stage seconds from the progress calls and the manifest's timings."""
    imports = _warm_imports()
    from stimuli.config import StimulusConfig

    config = StimulusConfig.of(network=case["network"], dataset=case["dataset"], layers=case["layers"],
                               **case.get("config", {}), **extra)
    seconds, stages, seen = timed_run(config, _timings)
    return {"seconds": seconds, "stages": stages, "rss_mib": _peak_rss_mib(), "imports": imports, **seen}


def _stage_lines(r: dict) -> str:
    line = "      stages s: " + "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items() if k != "end") \
        + f"   (imports before the clock {r['imports']:.2f})"
    if r.get("timings") and r["timings"].get("measures"):
        line += "\n      measures s: " + "  ".join(f"{k} {v:.2f}" for k, v in r["timings"]["measures"].items())
    return line


def small_case(args) -> tuple[float, float]:
    """Issue 33's small job against a bare torchvision pass; returns (ratio, target)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_photo_folder(Path(tmp) / "photos48", 48)
        ckpt = write_checkpoint(Path(tmp) / "resnet18.pt", "resnet18")
        case = {"network": str(ckpt), "architecture": "resnet18", "dataset": str(folder),
                "layers": ["layer1.0.add"],
                "config": {"architecture": "resnet18", "bases": ["neuron"], "n_units": 2}}
        base = _best(args.repeat, torchvision_single_pass, case)
        r = _in_child(job, case, {})
    n = base["n_images"]
    ratio = r["seconds"] / base["seconds"]
    print(f"\n== small: ResNet-18 (seeded random init), layer1.0.add, neuron, 2 units, defaults; {n} images")
    print(f"{'run':<34}{'runs':>5}{'wall s':>9}{'ratio':>8}{'peak RSS MiB':>14}")
    print(f"{'torchvision: build, read, forward':<34}{args.repeat:>5}{base['seconds']:>9.2f}{1.0:>8.2f}"
          f"{base['rss_mib']:>14.0f}")
    print(f"{'stimulus job, defaults':<34}{1:>5}{r['seconds']:>9.2f}{ratio:>8.2f}{r['rss_mib']:>14.0f}")
    print(_stage_lines(r))
    return ratio, SMALL_TARGET


def defaults_case(args) -> list[tuple[int, float]]:
    """The research-scale job with the defaults against the same job with the measures off, per size."""
    from stimuli.activations import MAX_AUTO_WORKERS, usable_cores

    workers = args.num_workers if args.num_workers is not None else min(usable_cores(), MAX_AUTO_WORKERS)
    layers = [s for s in args.layers.split(",") if s]
    off = {"completeness": False, "essence": False, "ablation": False, "surrogate": False,
           "label_entropy_top_n": 0, "sobol_images": 0}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(args.folder) if args.folder else Path(tmp)
        ckpt = write_checkpoint(Path(tmp) / "resnet50.pt", "resnet50")
        for n in _sizes(args.sizes):
            folder = home / f"photos{n}"
            if not folder.is_dir():
                make_photo_folder(folder, n)
            case = {"network": str(ckpt), "dataset": str(folder), "layers": layers,
                    "config": {"architecture": "resnet50", "bases": ["neuron", "pca"], "n_units": args.units,
                               "batch_size": args.batch_size, "num_workers": workers}}
            bare = _in_child(job, case, off)
            full = _in_child(job, case, {"sobol_images": args.sobol_images})
            ratio = full["seconds"] / bare["seconds"]
            print(f"\n== resnet50-defaults x {n}: layers {', '.join(layers)}, neuron + pca, batch {args.batch_size}, "
                  f"workers {workers}")
            print(f"{'run':<44}{'wall s':>9}{'ratio':>8}{'img/s':>9}{'peak RSS MiB':>14}")
            print(f"{'measures off':<44}{bare['seconds']:>9.2f}{1.0:>8.2f}{n / bare['seconds']:>9.1f}"
                  f"{bare['rss_mib']:>14.0f}")
            print(_stage_lines(bare))
            label = f"defaults (sobol_images {args.sobol_images})"
            print(f"{label:<44}{full['seconds']:>9.2f}{ratio:>8.2f}{n / full['seconds']:>9.1f}{full['rss_mib']:>14.0f}")
            print(_stage_lines(full))
            results.append((n, ratio))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="demo,resnet18",
                   help="comma separated: demo, resnet18, resnet50, vit_b_16, small, resnet50-defaults")
    p.add_argument("--sizes", default="5000,20000", help="folder sizes of the resnet50 case")
    p.add_argument("--folder", default=None,
                   help="where the resnet50 case keeps its generated folders (kept between runs); default a temporary one")
    p.add_argument("--n-images", type=int, default=1000, help="generated images for the resnet18 case")
    p.add_argument("--layer", default="layer4", help="resnet18 layer")
    p.add_argument("--units", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers, for both passes (default: 0, and for resnet50 the pipeline's own "
                        "automatic count, stimuli.activations.auto_num_workers)")
    p.add_argument("--repeat", type=int, default=2, help="runs of the bare pass and of neurons + PCA")
    p.add_argument("--pipeline-only", default=None, metavar="SIZES",
                   help="resnet50 sizes (comma separated, or 'all') run without the torchvision baseline, e.g. "
                        "the larger size when only its peak RSS is wanted")
    p.add_argument("--layers", default="layer2,layer3,layer4", help="layers of the resnet50-defaults case")
    p.add_argument("--sobol-images", type=int, default=4,
                   help="images with region Sobol indices in the resnet50-defaults case's default job")
    args = p.parse_args()
    cases = [c.strip() for c in args.case.split(",") if c.strip()]

    import torch

    from stimuli.networks import demo_cache_path, load_demo_checkpoint

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"cpus {os.cpu_count()}")
    rows = []
    if "demo" in cases:
        t = time.perf_counter()
        existed = demo_cache_path().exists()
        ckpt = load_demo_checkpoint()
        print(f"demo network: {'cached' if existed else f'trained in {time.perf_counter() - t:.1f} s'}; "
              f"test accuracy {ckpt['test_accuracy']:.4f}")
        case = {"network": "demo", "dataset": "digits", "layer": "conv2", "units": args.units, "batch_size": 256,
                "num_workers": 0, "repeat": args.repeat, "description": "digits CNN (fixed costs dominate)",
                "extra": {"sae": {"epochs": 100}}}
        rows += run_case("demo", case, [
            ("neuron+pca, completeness", ["neuron", "pca"], True, args.repeat),
            ("neuron+pca", ["neuron", "pca"], False, args.repeat),
            ("nmf", ["nmf"], False, 1),
            ("sae", ["sae"], False, 1),
        ])
    if "resnet18" in cases:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            folder = make_image_folder(Path(tmp) / "gratings", args.n_images)
            print(f"\ngenerated {args.n_images} 256x256 JPEGs in {time.perf_counter() - t:.1f} s")
            case = {"network": "resnet18", "dataset": str(folder), "layer": args.layer, "units": args.units,
                    "batch_size": args.batch_size, "num_workers": args.num_workers or 0, "repeat": args.repeat,
                    "description": "ResNet-18, random weights, 224x224 inputs",
                    "extra": {"n_components": {"nmf": 64, "sae": 1024}}}
            rows += run_case("resnet18", case, [
                ("neuron+pca", ["neuron", "pca"], False, args.repeat),
                ("nmf (64 atoms)", ["nmf"], False, 1),
                ("sae (1024 latents)", ["sae"], False, 1),
            ])
    if "resnet50" in cases:
        research(args)
    if "vit_b_16" in cases:
        research(args, "vit_b_16", [f"encoder.layers.encoder_layer_{i}" for i in (3, 7, 11)],
                 "ViT-B/16, random weights, 224x224 inputs, 197 tokens")
    verdicts = []
    if "small" in cases:
        ratio, target = small_case(args)
        verdicts.append(f"small: job / bare torchvision pass {ratio:.2f} ({'PASS' if ratio <= target else 'FAIL'} "
                        f"<= {target})")
    if "resnet50-defaults" in cases:
        for n, ratio in defaults_case(args):
            verdicts.append(f"resnet50-defaults x {n}: defaults / measures off {ratio:.2f} "
                            f"({'PASS' if ratio <= DEFAULTS_TARGET else 'FAIL'} <= {DEFAULTS_TARGET})")
    if verdicts:
        print("\n" + "\n".join(verdicts))
    main_rows = [r for r in rows if r[1] == "neuron+pca"]
    if main_rows:
        print()
        for case_name, _, ratio, ratio_cl in main_rows:
            verdict = "meets" if ratio <= TARGET_RATIO else "misses"
            extra = f"; {ratio_cl:.2f} against the channels-last bare pass" if ratio_cl else ""
            print(f"{case_name}: neuron+pca, completeness off: ratio {ratio:.2f} ({verdict} the target "
                  f"<= {TARGET_RATIO}){extra}")


def memory_verdict(small: dict, large: dict) -> tuple[float, bool]:
    """Issue 17's memory goal: peak RSS at the larger size within the smaller size's figure plus the
    pooled matrices' growth, plus 10 %. Returns the allowance (MiB) and whether it is met."""
    allowed = 1.1 * (small["rss"] + large["pooled_mib"] - small["pooled_mib"])
    return allowed, large["rss"] <= allowed


def _sizes(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def research(args, network: str = "resnet50", layers: list[str] | None = None,
             description: str = "ResNet-50, random weights, 224x224 inputs") -> None:
    from stimuli.activations import MAX_AUTO_WORKERS, usable_cores

    workers = args.num_workers if args.num_workers is not None else min(usable_cores(), MAX_AUTO_WORKERS)
    layers = layers or ["layer2", "layer3", "layer4"]
    sizes = _sizes(args.sizes)
    no_baseline = set(sizes) if args.pipeline_only == "all" else set(_sizes(args.pipeline_only or ""))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(args.folder) if args.folder else Path(tmp)
        for n in sizes:
            folder = home / f"photos{n}"
            if not folder.is_dir():
                t = time.perf_counter()
                make_photo_folder(folder, n)
                print(f"\ngenerated {n} 500x375 JPEGs in {time.perf_counter() - t:.1f} s")
            case = {"network": network, "dataset": str(folder), "layers": layers, "layer": layers[0],
                    "units": args.units, "batch_size": args.batch_size, "num_workers": workers,
                    "repeat": args.repeat, "description": description,
                    "extra": {"essence": False, "ablation": False, "surrogate": False, "figures": False,
                              "label_entropy_top_n": 0}}
            results.append(run_research_case(f"{network} x {n}", case, baseline=n not in no_baseline))
    print()
    for r in results:
        if r["ratio"] is None:
            versus = "baseline skipped"
        else:
            versus = f"pipeline / torchvision loop {r['ratio']:.2f} " \
                     f"({'PASS' if r['ratio'] <= TARGET_RATIO else 'FAIL'} <= {TARGET_RATIO})"
        baseline = "" if r["base_rss"] is None else f" (baseline {r['base_rss']:.0f})"
        print(f"{network} x {r['n']}: {r['images_per_s']:.1f} img/s; {versus}; peak RSS {r['rss']:.0f} MiB{baseline}; "
              f"pooled matrix {r['pooled_mib']:.0f} MiB")
    if len(results) > 1:
        small, large = results[0], results[-1]
        allowed, met = memory_verdict(small, large)
        print(f"memory: {'PASS' if met else 'FAIL'}: peak RSS at {large['n']} images {large['rss']:.0f} MiB <= "
              f"({small['rss']:.0f} at {small['n']} + pooled growth {large['pooled_mib'] - small['pooled_mib']:.0f}) "
              f"x 1.1 = {allowed:.0f} MiB")


if __name__ == "__main__":
    main()
