"""Sobol-SBSA benchmark: masked forward passes per second against a bare forward pass of the same batch.

    .venv/bin/python bench/bench_sobol.py [--batch 64] [--repeat 5] [--samples 32] [--grid 4] [--pipeline-images 20]

Rows: the demo network on 8x8 digits, and torchvision's resnet18 with random weights at 224x224. A
"bare" pass is the network on a ready batch; a "masked" pass also builds the batch from QMC mask values
(gather of region values, blend with the perturbed baseline), as ``stimuli.measures.sobol.region_sobol`` does;
"region_sobol" is the whole call (design, baseline, forwards, estimators) per forward pass it makes.
With ``--pipeline-images N`` a last table gives the cost of ``sobol_images = N`` in a demo stimulus job
(the pipeline's "sobol" stage, at the config's default 256 samples and at ``--samples``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _rate(fn, n_items: int, repeat: int, device) -> float:
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return n_items / best


def bench(name: str, model, x, batch: int, grid: int, samples: int, repeat: int, device) -> dict:
    import numpy as np
    import torch

    from stimuli.measures.sobol import grid_labels, masked_outputs, perturbed_baseline, region_sobol, saltelli_points

    model = model.to(device).eval()
    x = x.to(device)
    xb = x.unsqueeze(0).repeat(batch, 1, 1, 1)
    H, W = x.shape[-2:]
    labels = grid_labels(H, W, grid)
    baseline = perturbed_baseline(x, "inpaint-blur")
    points = saltelli_points(grid * grid, 16, seed=0)[:batch]
    with torch.inference_mode():
        bare = _rate(lambda: model(xb), batch, repeat, device)
    masked = _rate(lambda: masked_outputs(model, x, baseline, labels, points, 0, batch_size=batch), len(points),
                   repeat, device)
    start = time.perf_counter()
    res = region_sobol(model, x, None, 0, grid=grid, n_samples=samples, device=device, batch_size=batch,
                       n_boot=0)
    _sync(device)
    whole = res.n_forwards / (time.perf_counter() - start)
    return {"network": name, "input": f"{tuple(x.shape)}", "batch": batch, "bare_per_s": bare,
            "masked_per_s": masked, "ratio": masked / bare, "region_sobol_per_s": whole,
            "n_forwards": res.n_forwards, "interaction_share": res.interaction_share,
            "finite": bool(np.isfinite(res.ST).all())}


def pipeline_stage(n_images: int, samples: int, grid: int, device) -> dict:
    """Wall time of the demo pipeline's "sobol" stage for ``n_images`` images."""
    import tempfile

    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    marks: dict[str, float] = {}

    def progress(stage: str, fraction: float) -> None:
        if stage == "sobol":
            marks.setdefault("start", time.perf_counter())
            marks["end"] = time.perf_counter()

    config = StimulusConfig.of(bases=["neuron"], n_units=1, completeness=False, sobol_images=n_images,
                            sobol_grid=grid, sobol_n_samples=samples, device=str(device))
    with tempfile.TemporaryDirectory() as tmp:
        run(config, Path(tmp) / "a", progress=progress)
    seconds = marks["end"] - marks["start"]
    return {"n_images": n_images, "samples": samples, "seconds": seconds, "per_image_ms": 1000 * seconds / n_images}


def main() -> int:
    import torch
    import torchvision

    from stimuli.datasets import load_dataset
    from stimuli.networks import load_demo, resolve_device

    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--samples", type=int, default=32, help="Sobol base sample size for the whole-call row")
    p.add_argument("--grid", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--pipeline-images", type=int, default=0,
                   help="also time the demo pipeline's sobol stage with sobol_images = N")
    args = p.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    rows = []
    net = load_demo()
    x = net.preprocess(load_dataset("digits").load(0))
    rows.append(bench("demo", net.model, x, args.batch, args.grid, args.samples, args.repeat, device))
    resnet = torchvision.models.resnet18(weights=None)
    x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(0))
    big_batch = min(args.batch, 16) if device.type == "cpu" else args.batch
    rows.append(bench("resnet18 (random)", resnet, x, big_batch, args.grid,
                      args.samples if device.type == "cuda" else 8, max(1, args.repeat // 2), device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}")
    head = f"{'network':<18} {'input':<14} {'batch':>5} {'bare/s':>10} {'masked/s':>10} {'ratio':>6} " \
           f"{'sobol/s':>10} {'forwards':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['network']:<18} {r['input']:<14} {r['batch']:>5} {r['bare_per_s']:>10.1f} "
              f"{r['masked_per_s']:>10.1f} {r['ratio']:>6.2f} {r['region_sobol_per_s']:>10.1f} {r['n_forwards']:>9}")
    if args.pipeline_images:
        print(f"\ndemo pipeline, sobol stage ({args.grid}x{args.grid} grid)")
        print(f"{'images':>6} {'samples':>7} {'seconds':>8} {'ms/image':>9}")
        for samples in sorted({256, args.samples}):
            r = pipeline_stage(args.pipeline_images, samples, args.grid, device)
            print(f"{r['n_images']:>6} {r['samples']:>7} {r['seconds']:>8.2f} {r['per_image_ms']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
