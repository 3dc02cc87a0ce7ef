"""Stimulus pipeline benchmark: pipeline wall time vs a bare forward pass over the same images.

    .venv/bin/python bench/bench_stimuli.py [--dataset digits] [--units 6] [--repeat 3]

Each measurement runs in a fresh process, so the peak RSS printed is that run's own. The demo network is
trained (and cached) before any timing.
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


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bare_forward(dataset: str, batch_size: int) -> dict:
    import torch

    from stimuli.activations import batches
    from stimuli.datasets import load_dataset
    from stimuli.networks import load_demo, resolve_device

    device = resolve_device("auto")
    net = load_demo()
    model = net.model.to(device).eval()
    images = load_dataset(dataset)
    start = time.perf_counter()
    with torch.inference_mode():
        for _, x, _ in batches(images, net.preprocess, batch_size):
            model(x.to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "n_images": len(images), "rss_mib": _peak_rss_mib()}


def pipeline(dataset: str, bases: list[str], units: int, batch_size: int, completeness: bool) -> dict:
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    config = StimulusConfig(dataset=dataset, bases=bases, n_units=units, batch_size=batch_size,
                            completeness=completeness)
    stages: dict[str, float] = {}
    state = {"stage": None, "t": time.perf_counter()}

    def progress(stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if state["stage"] is not None:
            stages[state["stage"]] = stages.get(state["stage"], 0.0) + now - state["t"]
        state["stage"], state["t"] = stage, now

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run(config, Path(tmp) / "artifact", progress=progress)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "stages": stages, "rss_mib": _peak_rss_mib()}


def _in_child(fn, *args):
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--units", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()

    from stimuli.networks import demo_cache_path, load_demo_checkpoint

    import torch

    t = time.perf_counter()
    existed = demo_cache_path().exists()
    ckpt = load_demo_checkpoint()
    print(f"demo network: {'cached' if existed else f'trained in {time.perf_counter() - t:.1f} s'}; "
          f"test accuracy {ckpt['test_accuracy']:.4f}; training took {ckpt['train_seconds']:.1f} s")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {'cuda: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
          f"cpus {os.cpu_count()}")

    def best(fn, *a):
        runs = [_in_child(fn, *a) for _ in range(args.repeat)]
        return min(runs, key=lambda r: r["seconds"])

    fwd = best(bare_forward, args.dataset, args.batch_size)
    n = fwd["n_images"]
    print(f"\n{n} images, best of {args.repeat}, each run in a fresh process")
    print(f"{'run':<34}{'wall s':>8}{'ratio':>8}{'img/s':>10}{'peak RSS MiB':>14}")
    print(f"{'bare forward pass':<34}{fwd['seconds']:>8.2f}{1.0:>8.1f}{n / fwd['seconds']:>10.0f}{fwd['rss_mib']:>14.0f}")
    for label, bases, comp in [("pipeline neuron+pca", ["neuron", "pca"], True),
                               ("pipeline nmf", ["nmf"], True),
                               ("pipeline neuron+pca+nmf", ["neuron", "pca", "nmf"], True),
                               ("pipeline neuron+pca+nmf, no compl.", ["neuron", "pca", "nmf"], False)]:
        r = best(pipeline, args.dataset, bases, args.units, args.batch_size, comp)
        stages = "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
        print(f"{label:<34}{r['seconds']:>8.2f}{r['seconds'] / fwd['seconds']:>8.1f}"
              f"{n / r['seconds']:>10.0f}{r['rss_mib']:>14.0f}")
        print(f"    stages (s): {stages}")


if __name__ == "__main__":
    main()
