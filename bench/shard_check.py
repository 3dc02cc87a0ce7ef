"""A sharded activation pass against the unsharded one, on the machine's device (CUDA when present).

    .venv/bin/python bench/shard_check.py [--n-images 1024] [--shards 3] [--batch-size 128] [--network resnet50]

Each shard and the unsharded pass run in a fresh process, as the workers of a sharded job do, over one
folder of photograph-like JPEGs (bench_stimuli.make_photo_folder) with a seeded random-init checkpoint of
the network (nothing downloaded), layers layer2, layer3, layer4. The shards cover whole batches
(stimuli.shards.shard_ranges), so every batch holds the same images as in the unsharded pass, has the
same shape and runs the same kernels: the pooled activations are expected to be **bit-identical**, on
CUDA (nvJPEG decoding, bfloat16 autocast) as on the CPU. Where they are not, the check accepts a
difference within one bfloat16 rounding of the layer's largest value (2**-8 of it): cuDNN's heuristics
may pick another algorithm in a process that has another amount of free workspace, which changes the
order of float sums but not what is computed. Anything beyond that fails (exit 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYERS = ["layer2", "layer3", "layer4"]
BFLOAT16_STEP = 2.0**-8


def _config(args_dict: dict):
    from stimuli.config import StimulusConfig

    return StimulusConfig.of(**args_dict)


def _shard(config_dict: dict, index: int, n: int, folder: str) -> float:
    from stimuli.shards import extract_shard

    start = time.perf_counter()
    extract_shard(_config(config_dict), index, n, folder)
    return time.perf_counter() - start


def _unsharded(config_dict: dict, folder: str) -> tuple[dict, float]:
    from stimuli import activations as act
    from stimuli.pipeline import load_inputs
    from stimuli.shards import listed_images

    config = _config(config_dict)
    inputs = load_inputs(config, lambda s, f: None, images=listed_images(config, folder))
    s = config.activations
    start = time.perf_counter()
    acts = act.extract(
        inputs.net.model,
        inputs.images,
        inputs.net.preprocess,
        s.layers,
        pooling=s.pooling,
        activation=s.activation,
        device=inputs.device,
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        decode=s.decode,
    )
    return {"values": acts.values, "indices": acts.indices, "n_failed": acts.n_failed}, time.perf_counter() - start


def _child(fn, *args):
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(fn, *args).result()


def main() -> int:
    import numpy as np
    import torch
    from bench_stimuli import make_photo_folder
    from torchvision.models import get_model

    from stimuli.shards import merge_shards, write_listing

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-images", type=int, default=1024)
    p.add_argument("--shards", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--network", default="resnet50")
    args = p.parse_args()
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_photo_folder(tmp / "photos", args.n_images)
        torch.manual_seed(0)
        ckpt = tmp / f"{args.network}.pt"
        torch.save(get_model(args.network, weights=None).state_dict(), ckpt)
        config = {
            "network": str(ckpt),
            "architecture": args.network,
            "dataset": str(folder),
            "layers": LAYERS,
            "batch_size": args.batch_size,
        }
        shards = tmp / "shards"
        write_listing(_config(config), shards)
        times = [_child(_shard, config, i, args.shards, str(shards)) for i in range(args.shards)]
        merged = merge_shards(shards, args.shards, _config(config))
        whole, seconds = _child(_unsharded, config, str(shards))
    print(
        f"{args.network} on {device}: {args.n_images} images, batch {args.batch_size}; unsharded pass "
        f"{seconds:.1f} s, {args.shards} shards {' + '.join(f'{t:.1f}' for t in times)} s (each with its start-up)"
    )
    ok = np.array_equal(merged.indices, whole["indices"]) and merged.n_failed == whole["n_failed"]
    if not ok:
        print("FAIL: the shards kept other images than the unsharded pass")
        return 1
    verdict = "bit-identical"
    for layer in LAYERS:
        a, b = merged.values[layer], whole["values"][layer]
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        scale = float(np.abs(b).max()) if b.size else 0.0
        same = np.array_equal(a, b)
        print(
            f"  {layer}: {a.shape[0]} x {a.shape[1]}, {'bit-identical' if same else 'differs'}; "
            f"max |difference| {diff:.3g} (largest value {scale:.3g})"
        )
        if not same:
            if diff > BFLOAT16_STEP * scale:
                print(f"FAIL: {layer} differs by more than one bfloat16 rounding of its largest value")
                return 1
            verdict = "within one bfloat16 rounding (not bit-identical)"
    print(f"PASS: sharded and unsharded activations {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
