"""Benchmark: feature visualizations (stimuli.featurevis), seconds per unit for its max and min sets.

Two cases, each timed around :func:`stimuli.featurevis.visualize_units` alone (network, image set and
basis are ready before the clock starts):

- the demo network (conv2, neuron basis), images optimised at the digits' display size (96 px),
  ``--demo-steps`` steps, ``--refs`` images per set, all units of a basis in one batch;
- torchvision's ResNet-18 (random weights, no download), layer3, neuron basis, images optimised at
  224 px and passed through its 256/224 preprocessing, ``--resnet-steps`` steps (the figure per unit is
  also given scaled to 256 steps, the default).

The batch (units × 2 sets × refs images) is stated with each figure. CUDA is used when present.

    python bench/bench_featurevis.py [--units 4] [--refs 1] [--demo-steps 256] [--resnet-steps 8]
"""

from __future__ import annotations

import argparse
import time


def case(name, net, images, layer, units, refs, steps, size, device):
    from stimuli.activations import extract
    from stimuli.bases import make_basis
    from stimuli.featurevis import visualize_units

    A = extract(net.model, images, net.preprocess, [layer], device=device).values[layer]
    basis = make_basis("neuron").fit(A)
    fv = {"method": "fourier", "steps": steps, "lr": 0.1, "seed": 0}
    # imports (horama, torchvision's ops) and the layer's FX trace happen once per process: warm them up
    visualize_units(net, images, layer, basis, [0], 1, {**fv, "steps": 1}, None, size, "warm-up", device=device)
    t0 = time.perf_counter()
    visualize_units(net, images, layer, basis, list(range(units)), refs, fv, None, size, f"{layer}:neuron",
                    device=device)
    dt = time.perf_counter() - t0
    per_unit = dt / units
    print(f"{name}: {per_unit:.2f} s per unit ({steps} steps, {size} px, batch {units * 2 * refs} images = "
          f"{units} units x 2 sets x {refs}); {per_unit * 256 / steps:.1f} s per unit at 256 steps; {device}")


def main() -> None:
    import torch

    from stimuli.datasets import load_dataset
    from stimuli.networks import load_network, resolve_device

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=4)
    p.add_argument("--refs", type=int, default=1)
    p.add_argument("--demo-steps", type=int, default=256)
    p.add_argument("--resnet-steps", type=int, default=8)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = resolve_device(args.device)
    print(f"torch threads: {torch.get_num_threads()}")
    digits = load_dataset("digits")
    case("demo conv2", load_network("demo"), digits, "conv2", args.units, args.refs, args.demo_steps, 96, device)
    torch.manual_seed(0)
    net = load_network("resnet18", weights=None, allow_download=False)
    case("resnet18 layer3", net, load_dataset("digits", max_images=64), "layer3", args.units, args.refs,
         args.resnet_steps, 224, device)


if __name__ == "__main__":
    main()
