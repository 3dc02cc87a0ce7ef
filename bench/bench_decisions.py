"""Decision measures benchmark: a stimulus job's wall time with the measures of stimuli.measures.decisions
(essence, ablation, label purity, surrogate rules) and their figures, over the same job without them.

    .venv/bin/python bench/bench_decisions.py [--case demo,resnet18] [--n-images 1000] [--repeat 1]

* ``demo``: the demo job as ``manage.py demo`` launches it (studyapp/demo.py): the built-in digits CNN
  over the 1797 digits, layer ``conv2``, neuron, PCA and NMF, machine scores from ``relu3``, attribution
  overlays, completeness on, class of interest 3.
* ``resnet18``: torchvision's ResNet-18 with random weights (nothing is downloaded) over an ImageFolder
  of generated 256 x 256 JPEGs (bench_stimuli's generator), layer ``layer4``, neurons + PCA, the class
  the (seeded) random network predicts most as class of interest over all images, completeness off —
  the configuration whose forward pass dominates, so the measures' own cost shows most.

Each job runs in a fresh process, after the imports. The target: "with" at most 1.5x "without"
(:data:`TARGET_RATIO`). On a shared machine the figures move with the other load: compare rows of one
run only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_RATIO = 1.5
OFF = {"essence": False, "ablation": False, "surrogate": False, "label_entropy_top_n": 0, "figures": False}


def job(config: dict) -> dict:
    import torch
    from bench_stimuli import _warm_imports, timed_run

    _warm_imports()
    # the same random ResNet-18 in every process, so that both jobs and the class chosen below agree
    torch.manual_seed(0)
    from stimuli import figures  # noqa: F401  (imported before the clock, as a worker would)
    from stimuli.measures import decisions  # noqa: F401

    seconds, stages, _ = timed_run(config)
    return {"seconds": seconds, "stages": stages}


def _best(config: dict, repeat: int) -> dict:
    """The fastest of ``repeat`` runs, each in a fresh process (bench_stimuli's ``_best``)."""
    from bench_stimuli import _best as best_in_fresh_processes

    return best_in_fresh_processes(repeat, job, config)


def run_case(name: str, config: dict, repeat: int) -> float:
    without = _best({**config, **OFF}, repeat)
    with_ = _best(config, repeat)
    ratio = with_["seconds"] / without["seconds"]
    print(f"\n== {name}: layer {config['layers'][0]}, bases {','.join(config['bases'])}, "
          f"completeness {'on' if config.get('completeness', True) else 'off'}")
    for label, r in (("without decision measures", without), ("with decision measures", with_)):
        print(f"{label:<28}{r['seconds']:>9.2f} s   stages: "
              + "  ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()))
    print(f"{'ratio':<28}{ratio:>9.2f}    (target <= {TARGET_RATIO})")
    return ratio


def _most_predicted_class(folder: str, n: int = 64) -> int:
    """The class the seeded random ResNet-18 predicts most often: a class of interest it ever decides."""
    import numpy as np
    import torch

    from stimuli.datasets import load_dataset
    from stimuli.networks import load_network

    torch.manual_seed(0)
    net = load_network("resnet18", allow_download=False)
    images = load_dataset(folder)
    x = torch.stack([net.preprocess(images.load(i)) for i in range(min(n, len(images)))])
    with torch.inference_mode():
        return int(np.bincount(net.model.eval()(x).argmax(1).numpy()).argmax())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="demo,resnet18", help="comma separated: demo, resnet18")
    p.add_argument("--n-images", type=int, default=1000, help="generated images for the resnet18 case")
    p.add_argument("--repeat", type=int, default=1, help="runs of each job (the fastest is shown)")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    cases = [c.strip() for c in args.case.split(",") if c.strip()]

    import torch

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    ratios = {}
    if "demo" in cases:
        from stimuli.networks import load_demo_checkpoint

        load_demo_checkpoint()
        ratios["demo"] = run_case("demo", {"layers": ["conv2"], "bases": ["neuron", "pca", "nmf"], "n_units": 6,
                                           "mis_layer": "relu3", "attribution_overlays": True,
                                           "influence_class": 3}, args.repeat)
    if "resnet18" in cases:
        from bench_stimuli import make_image_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = make_image_folder(Path(tmp) / "images", args.n_images)
            cls = _most_predicted_class(str(folder))
            ratios["resnet18"] = run_case(
                f"resnet18 (weights=None), {args.n_images} images, class of interest {cls}",
                {"network": "resnet18", "dataset": str(folder), "layers": ["layer4"], "bases": ["neuron", "pca"],
                 "n_units": 6, "influence_class": cls, "influence_distribution": "all", "completeness": False,
                 "batch_size": args.batch_size, "allow_download": False}, args.repeat)
    print("\n" + "  ".join(f"{k}: {v:.2f}x" for k, v in ratios.items())
          + f"   {'ok' if all(v <= TARGET_RATIO for v in ratios.values()) else 'OVER'} (target <= {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
