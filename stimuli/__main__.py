"""Command line: ``python -m stimuli generate …`` and ``python -m stimuli layers …``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import StimulusConfig


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stimuli", description="Stimulus generation for unit psychophysics.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a stimulus artifact (manifest.json + images/)")
    g.add_argument("config", nargs="?", help="a JSON configuration file; flags override its values")
    g.add_argument("--out", required=True, help="artifact folder to create")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    g.add_argument("--network", help="'demo', a torchvision architecture, or a checkpoint path")
    g.add_argument("--weights", help="torchvision weights enum name, e.g. DEFAULT or IMAGENET1K_V1")
    g.add_argument("--architecture", help="architecture of a state-dict checkpoint")
    g.add_argument("--layer", "--layers", dest="layers", help="layer name(s), comma separated")
    g.add_argument("--bases", help="comma separated: neuron,pca,nmf,dictionary")
    g.add_argument("--units", dest="n_units", type=int, help="units per basis")
    g.add_argument("--components", dest="n_components", type=int, help="components per basis (default: all)")
    g.add_argument("--dataset", help="'digits' or an image folder (ImageFolder layout)")
    g.add_argument("--max-images", dest="max_images", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--pooling", choices=["mean", "max"])
    g.add_argument("--activation", choices=["post_relu", "pre_relu"])
    g.add_argument("--selection", dest="unit_selection", choices=["random", "top_variance"])
    g.add_argument("--queries", dest="n_queries", type=int)
    g.add_argument("--percentile", dest="query_percentile", type=float)
    g.add_argument("--batch-size", dest="batch_size", type=int)
    g.add_argument("--device")
    g.add_argument("--no-completeness", dest="completeness", action="store_false", default=None)
    g.add_argument("--offline", dest="allow_download", action="store_false", default=None,
                   help="never download weights")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    l = sub.add_parser("layers", help="list a network's hookable layers")
    l.add_argument("--network", default="demo")
    l.add_argument("--weights")
    l.add_argument("--architecture")
    l.add_argument("--offline", dest="allow_download", action="store_false", default=True)
    return p


def _config(args: argparse.Namespace) -> StimulusConfig:
    data = {}
    if args.config:
        path = Path(args.config)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"configuration file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"configuration file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"configuration file {path} must hold a JSON object")
    keys = ("network", "weights", "architecture", "layers", "bases", "n_units", "n_components", "dataset",
            "max_images", "seed", "pooling", "activation", "unit_selection", "n_queries", "query_percentile",
            "batch_size", "device", "completeness", "allow_download")
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            data[key] = value
    return StimulusConfig.from_dict(data)


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import STAGES, run

    config = _config(args)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(STAGES) * 100, unit="%", bar_format="{desc:<12} {bar} {percentage:3.0f}% {elapsed}",
                   file=sys.stderr)

    def progress(stage: str, fraction: float) -> None:
        if bar is not None:
            if bar.desc != stage:
                bar.set_description_str(stage, refresh=False)
            bar.update(int(round((STAGES.index(stage) + fraction) * 100)) - bar.n)

    try:
        path = run(config, args.out, progress=progress, overwrite=args.overwrite)
    finally:
        if bar is not None:
            bar.close()
    print(path)
    return 0


def _layers(args: argparse.Namespace) -> int:
    from .networks import list_layers, load_network

    net = load_network(args.network, weights=args.weights, architecture=args.architecture,
                       allow_download=args.allow_download)
    for name in list_layers(net.model):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _generate(args) if args.command == "generate" else _layers(args)
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
