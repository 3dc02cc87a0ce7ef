"""Command line: ``python -m stimuli generate|layers|influence|sobol|essence|ablate|surrogate …``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

# every choice comes from the module that owns it, so the help cannot drift from what the code takes
from .bases import basis_names
from .config import SECTIONS, StimulusConfig
from .measures.sobol import PERTURBATIONS as SOBOL_PERTURBATIONS
from .sections import add_flags, flags_given
from .settings.activations import ACTIVATIONS, POOLINGS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stimuli", description="Stimulus generation for unit psychophysics.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a stimulus artifact (manifest.json + images/)")
    g.add_argument("config", nargs="?", help="a JSON configuration file; flags override its values")
    g.add_argument("--out", required=True, help="artifact folder to create")
    g.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    # the flags of the configuration's sections (their fields' cli metadata): a new option appears here by itself
    add_flags(g, StimulusConfig)
    for name, section in SECTIONS.items():
        add_flags(g, section, prefix=f"{name}.")
    g.add_argument("--quiet", action="store_true", help="no progress bar")

    l = sub.add_parser("layers", help="list a network's hookable layers")
    l.add_argument("--network", default="demo")
    l.add_argument("--weights")
    l.add_argument("--architecture")
    l.add_argument("--checkpoint", help="weights file for the network (a state dict or a whole module)")
    l.add_argument("--offline", dest="allow_download", action="store_false", default=True)

    def layer_measure(name, help_text, class_help, class_required):
        """A subcommand measuring one layer's units per basis: the flags influence, essence, ablate and
        surrogate share."""
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--network", default="demo")
        p.add_argument("--weights")
        p.add_argument("--checkpoint")
        p.add_argument("--architecture")
        p.add_argument("--dataset", default="digits")
        p.add_argument("--max-images", dest="max_images", type=int)
        p.add_argument("--layer", required=True)
        p.add_argument("--bases", default="neuron,pca,nmf", help=f"comma separated, among: {', '.join(basis_names())}")
        p.add_argument("--components", dest="n_components", type=int, help="components per basis (default: all)")
        p.add_argument("--class", dest="cls", type=int, required=class_required, help=class_help)
        p.add_argument("--distribution", choices=["class", "all"], default="class",
                       help="images of the class (labels, or predictions when the dataset's classes are not "
                            "the network's) or all images")
        p.add_argument("--pooling", choices=POOLINGS, default="mean")
        p.add_argument("--activation", choices=ACTIVATIONS, default="post_relu")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--batch-size", dest="batch_size", type=int, default=256)
        p.add_argument("--device", default="auto")
        p.add_argument("--offline", dest="allow_download", action="store_false", default=True)
        return p

    i = layer_measure("influence", "distributional influence of a layer's units on a class, per basis",
                      "class of interest (its logit)", True)
    i.add_argument("--versus", type=int, help="a second class: the quantity is the logit difference")
    i.add_argument("--top", type=int, default=5)
    i.add_argument("--json", action="store_true", help="print JSON")

    for name, text in (("essence", "accuracy on a class's decision with the top-k units by influence, by variance "
                                   "and in random orders (Leino et al.)"),
                       ("ablate", "per unit: the accuracy drop and mean |target logit change| with the unit at "
                                  "its mean code"),
                       ("surrogate", "decision trees on the top-k units' codes that predict the network's decision, "
                                     "and the best tree's rules")):
        d = layer_measure(name, text, "class of interest" + ("" if name == "essence" else
                                                              ": units ordered by influence on it (else by variance)"),
                          name == "essence")
        d.add_argument("--versus", type=int, help="a second class: the decision is class vs versus")
        if name in ("essence", "surrogate"):
            d.add_argument("--k", dest="ks", help="comma separated unit counts (default: 1, 2, 4, …)")
        if name == "essence":
            d.add_argument("--random-orders", dest="n_random", type=int, default=5)
        if name == "surrogate":
            d.add_argument("--depth", dest="depths", default="1,2,3,4,5", help="comma separated tree depths")
        if name == "ablate":
            d.add_argument("--units", help="comma separated unit indices (default: all)")

    s = sub.add_parser("sobol", help="Sobol-SBSA indices of image regions for the network's decision")
    s.add_argument("--network", default="demo")
    s.add_argument("--weights")
    s.add_argument("--checkpoint")
    s.add_argument("--architecture")
    s.add_argument("--dataset", default="digits")
    s.add_argument("--image-index", dest="image_index", default="0",
                   help="image index, or comma separated indices (then the interaction share is aggregated)")
    s.add_argument("--class", dest="cls", type=int, help="target class (default: the prediction)")
    s.add_argument("--grid", type=int, default=4)
    s.add_argument("--samples", type=int, default=256, help="base sample size N (rounded up to a power of 2)")
    s.add_argument("--perturbation", choices=SOBOL_PERTURBATIONS, default="inpaint-blur")
    s.add_argument("--output", choices=["logit", "probability"], default="logit")
    s.add_argument("--no-second-order", dest="second_order", action="store_false", default=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", dest="batch_size", type=int, default=256)
    s.add_argument("--device", default="auto")
    s.add_argument("--offline", dest="allow_download", action="store_false", default=True)
    s.add_argument("--json", action="store_true", help="print JSON")
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
    # each section given a flag is read from the file's flat keys, changed, and written back
    data.update(flags_given(args, StimulusConfig))
    for name, section in SECTIONS.items():
        given = flags_given(args, section, prefix=f"{name}.")
        if given:
            data.update(dataclasses.replace(section.from_flat(data), **given).flat())
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
    from .layers import layer_layouts
    from .networks import load_network, probe_input

    net = load_network(args.network, weights=args.weights, architecture=args.architecture,
                       checkpoint=args.checkpoint, allow_download=args.allow_download)
    # one blank image through the network's own preprocessing: the shapes at its input size
    for name, layout in layer_layouts(net.model, probe_input(net)).items():
        print(name if layout is None else f"{name}\t{layout.kind}\t{layout.n_channels}")
    return 0


def _influence(args: argparse.Namespace) -> int:
    from .activations import extract
    from .bases import make_basis
    from .datasets import load_dataset
    from .measures.influence import class_influence_report
    from .networks import load_network, resolve_device

    device = resolve_device(args.device)
    net = load_network(args.network, weights=args.weights, architecture=args.architecture,
                       checkpoint=args.checkpoint, allow_download=args.allow_download)
    images = load_dataset(args.dataset, max_images=args.max_images, seed=args.seed)
    net = net.for_classes(images.class_names)
    names = [b.strip() for b in args.bases.split(",") if b.strip()]
    acts = extract(net.model, images, net.preprocess, [args.layer], pooling=args.pooling,
                   activation=args.activation, device=device, batch_size=args.batch_size)
    if len(acts.indices) < len(images):
        images = images.subset(acts.indices)
    A = acts.values[args.layer]
    bases = {n: make_basis(n, n_components=args.n_components, random_state=args.seed).fit(A) for n in names}
    labels = images.labels if images.labels is not None and net.class_names \
        and images.class_names == net.class_names else None
    quantity = {"class": args.cls, "versus": args.versus}
    report = class_influence_report(net.model, images, net.preprocess, args.layer, bases, quantity, top=args.top,
                                    activation=args.activation, pooling=args.pooling,
                                    distribution=args.distribution, labels=labels, device=device,
                                    batch_size=args.batch_size)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    q = f"logit {args.cls}" + (f" - logit {args.versus}" if args.versus is not None else "")
    print(f"influence on {q}, layer {args.layer}, {report['n_images']} images ({args.distribution})")
    for name, r in report["bases"].items():
        print(f"\n{name} ({r['n_components']} units)")
        print("  unit  influence  per unit direction")
        for u in r["top_units"]:
            print(f"  {u['index']:4d}  {u['influence']:+10.4f}  {u['influence_direction']:+10.4f}")
        curve = "  ".join(f"k={k}: {v:.3f}" for k, v in zip(r["concentration"]["k"], r["concentration"]["share"]))
        print(f"  concentration  {curve}")
    return 0


def _sobol(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .measures.sobol import interaction_share, region_sobol
    from .networks import load_network, resolve_device

    device = resolve_device(args.device)
    net = load_network(args.network, weights=args.weights, architecture=args.architecture,
                       checkpoint=args.checkpoint, allow_download=args.allow_download)
    images = load_dataset(args.dataset)
    net = net.for_classes(images.class_names)
    try:
        indices = [int(v) for v in args.image_index.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--image-index takes integers, not {args.image_index!r}") from None
    bad = [i for i in indices if not 0 <= i < len(images)]
    if not indices or bad:
        raise ValueError(f"image index out of range 0…{len(images) - 1}: {bad or args.image_index}")
    kwargs = dict(grid=args.grid, n_samples=args.samples, perturbation=args.perturbation, device=device,
                  batch_size=args.batch_size, output=args.output, second_order=args.second_order, seed=args.seed)
    if len(indices) == 1:
        res = region_sobol(net.model, images.load(indices[0]), net.preprocess, args.cls, **kwargs)
        if args.json:
            print(json.dumps({"image_index": indices[0], **res.to_dict()}, indent=2))
        else:
            print(f"image {indices[0]}")
            print(res.summary())
        return 0
    classes = None if args.cls is None else [args.cls] * len(indices)
    agg = interaction_share(net.model, images, net.preprocess, indices, classes, **kwargs)
    if args.json:
        print(json.dumps(agg, indent=2))
    else:
        for i, c, v in zip(agg["indices"], agg["target_classes"], agg["interaction_share"]):
            print(f"image {i:5d}  class {c:4d}  interaction share {v:.3f}")
        print(f"mean {agg['mean']:.3f}  median {agg['median']:.3f}  sd {agg['sd']:.3f}  ({agg['n_images']} images)")
    return 0


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma separated integers, not {text!r}") from None


def _decision(args: argparse.Namespace) -> int:
    from .measures.decisions import layer_report

    report = layer_report(
        args.command, network=args.network, dataset=args.dataset, layer=args.layer,
        bases=tuple(b.strip() for b in args.bases.split(",") if b.strip()), cls=args.cls, versus=args.versus,
        weights=args.weights, architecture=args.architecture, allow_download=args.allow_download,
        max_images=args.max_images, n_components=args.n_components, distribution=args.distribution,
        pooling=args.pooling, activation=args.activation, seed=args.seed,
        ks=_ints(getattr(args, "ks", None), "--k"), depths=_ints(getattr(args, "depths", None), "--depth"),
        units=_ints(getattr(args, "units", None), "--units"), n_random=getattr(args, "n_random", 5),
        device=args.device, batch_size=args.batch_size, checkpoint=args.checkpoint)
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    commands = {"generate": _generate, "layers": _layers, "influence": _influence, "sobol": _sobol,
                "essence": _decision, "ablate": _decision, "surrogate": _decision}
    try:
        return commands[args.command](args)
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
