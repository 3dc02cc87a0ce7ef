"""How close the stimulus measures are to their definitions, with the time each takes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_stimuli_numerics.py [--skip lrp,codes,completeness,shares]

* ``lrp``: LRP conservation on torchvision's ResNet-18 with random weights (nothing is downloaded):
  the relative gap ``|Σ input relevance − unit value| / |unit value|`` for channels of ``layer1`` …
  ``layer4`` on random 224 x 224 inputs, with the default batch-norm statistics (merged biases 0,
  where LRP's rules conserve relevance) and with random running statistics (merged biases absorb some).
* ``codes``: the completeness codes of the demo's conv2 NMF at every spatial position against
  scipy's exact NNLS (relative Frobenius error), and the time to compute them.
* ``completeness``: the demo's conv2 NMF accuracy-vs-k curve (all 1797 digits) and its wall time.
* ``shares``: the explained-variance ratios of demo conv1's NMF and dictionary bases (their sum and
  range) and the first points of the cumulative curve.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _lrp() -> None:
    from torchvision.models import resnet18

    from stimuli.bases import NeuronBasis
    from stimuli.measures.attribution import unit_attribution

    for stats in ("default", "random"):
        torch.manual_seed(0)
        model = resnet18(weights=None).eval()
        if stats == "random":
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.2, 0.2)
                        m.running_var.uniform_(0.5, 2.0)
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.1, 0.1)
        gaps = []
        for layer, c in (("layer1", 64), ("layer2", 128), ("layer3", 256), ("layer4", 512)):
            basis = NeuronBasis().fit(np.eye(c))
            for seed in range(3):
                x = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(seed))
                with torch.no_grad():
                    feats = {}
                    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o, feats=feats: feats.update(t=o))
                    model(x[None])
                    h.remove()
                pooled = torch.relu(feats["t"]).mean((2, 3))[0]
                unit = int(pooled.argmax())
                value = float(pooled[unit])
                t0 = time.perf_counter()
                heat = unit_attribution(model, x, layer, basis, unit, "lrp")
                dt = time.perf_counter() - t0
                gaps.append(abs(heat.sum() - value) / abs(value))
            print(f"lrp resnet18 ({stats} BN statistics) {layer}: relative conservation gap "
                  f"median {np.median(gaps[-3:]):.2e}, max {max(gaps[-3:]):.2e} ({dt:.2f} s per map)")


def _demo_conv2():
    from stimuli import activations
    from stimuli.bases import NMF_DEFAULTS, NMFBasis
    from stimuli.datasets import load_dataset
    from stimuli.networks import load_demo

    net = load_demo()
    images = load_dataset("digits")
    acts = activations.extract(net.model, images, net.preprocess, ["conv2"])
    basis = NMFBasis(random_state=0, **NMF_DEFAULTS).fit(acts.values["conv2"])
    return net, images, basis


def _codes(net, images, basis) -> None:
    from scipy.optimize import nnls

    from stimuli.measures.completeness import _Projector

    feats = []
    h = net.model.get_submodule("conv2").register_forward_hook(lambda m, i, o: feats.append(o))
    with torch.no_grad():
        net.model(torch.stack([net.preprocess(images.load(i)) for i in range(len(images))]))
    h.remove()
    X = torch.relu(feats[0]).movedim(1, -1).reshape(-1, feats[0].shape[1]).float()
    W = np.asarray(basis.components_)
    print(f"codes: {X.shape[0]} positions x {W.shape[0]} atoms, condition number of W Wᵀ "
          f"{np.linalg.cond(W @ W.T):.0f}")
    projector = _Projector(basis, torch.device("cpu"))
    t0 = time.perf_counter()
    H = projector.codes(X).double().numpy()
    dt = time.perf_counter() - t0
    rows = np.random.default_rng(0).choice(len(X), size=2000, replace=False)
    Xd = X.double().numpy()
    exact = np.stack([nnls(W.T, Xd[r], maxiter=50 * W.shape[0])[0] for r in rows])
    err = np.linalg.norm(H[rows] - exact) / np.linalg.norm(exact)
    print(f"codes: relative error against scipy.optimize.nnls (2000 positions) {err:.2e}; "
          f"{dt:.2f} s for all positions")


def _completeness(net, images, basis) -> None:
    from stimuli.measures.completeness import network_completeness

    t0 = time.perf_counter()
    out = network_completeness(net.model, images, net.preprocess, "conv2", basis, labels=images.labels)
    dt = time.perf_counter() - t0
    print(f"completeness nmf conv2 ({dt:.1f} s): k {out['k']}")
    print(f"  accuracy         {out['accuracy']}")
    print(f"  accuracy_reverse {out['accuracy_reverse']}  (baseline {out['baseline_accuracy']})")


def _shares() -> None:
    from stimuli import activations
    from stimuli.bases import DICTIONARY_DEFAULTS, NMF_DEFAULTS, DictionaryBasis, NMFBasis
    from stimuli.datasets import load_dataset
    from stimuli.measures.completeness import cumulative_explained_variance
    from stimuli.networks import load_demo

    net = load_demo()
    images = load_dataset("digits")
    A = activations.extract(net.model, images, net.preprocess, ["conv1"]).values["conv1"]
    for basis in (NMFBasis(random_state=0, **NMF_DEFAULTS), DictionaryBasis(random_state=0, **DICTIONARY_DEFAULTS)):
        basis.fit(A)
        r = np.asarray(basis.explained_variance_ratio_)
        cum = cumulative_explained_variance(basis, A)
        print(f"shares {basis.name} conv1: ratios in [{r.min():.3f}, {r.max():.3f}], sum {r.sum():.3f}; "
              f"cumulative {np.round(cum[:4], 3).tolist()} … {cum[-1]:.3f}, "
              f"monotone {bool(np.all(np.diff(cum) >= -1e-12))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="comma-separated parts to skip")
    skip = set(filter(None, parser.parse_args().skip.split(",")))
    torch.set_num_threads(1)
    if "lrp" not in skip:
        _lrp()
    if not {"codes", "completeness"} <= skip:
        net, images, basis = _demo_conv2()
        if "codes" not in skip:
            _codes(net, images, basis)
        if "completeness" not in skip:
            _completeness(net, images, basis)
    if "shares" not in skip:
        _shares()


if __name__ == "__main__":
    main()
