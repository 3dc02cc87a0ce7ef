"""The artifact's curves drawn as SVG figures (matplotlib): per layer, the bases side by side on the
cumulative explained variance, the network's completeness (Dey et al.), the essence of the class of
interest (Leino et al.) and the surrogate trees' fidelity — the figures a researcher reads for their
own network, and the ones the job's admin page and the analysis report show.

Drawn from the manifest's layer entries alone (no network, no images), with matplotlib's object API
(no pyplot state, so a worker thread can draw) and a fixed SVG hash salt and no date, so the same
numbers give the same file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIGURES_DIR = "figures"
KINDS = ("explained_variance", "completeness", "essence", "surrogate")
TITLES = {"explained_variance": "cumulative explained variance", "completeness": "accuracy with the top-k units",
          "essence": "essence of the class", "surrogate": "surrogate fidelity"}


def _figure(ncols: int = 1):
    import matplotlib
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "stimuli"
    # fixed margins: constrained layout solves the layout again on every draw, and doubled the time
    fig = Figure(figsize=(4.2 * ncols, 3.4))
    fig.subplots_adjust(left=0.8 / (4.2 * ncols), right=1 - 0.1 / ncols, bottom=0.15, top=0.83, wspace=0.3)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _log_k(*axes) -> None:
    """k doubles (1, 2, 4, …): a base-2 log axis with the counts written out."""
    from matplotlib.ticker import FormatStrFormatter

    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))


def _explained_variance(entries):
    fig, (ax,) = _figure()
    for e in entries:
        curve = e.get("cumulative_explained_variance") or []
        ax.plot(range(1, len(curve) + 1), curve, label=e["basis"])
    ax.set(xlabel="units kept (k)", ylabel="explained variance", ylim=(0, 1.02))
    _log_k(ax)
    ax.legend(fontsize="small")
    return fig


def _completeness(entries):
    fig, (ax,) = _figure()
    for e in entries:
        c = e.get("completeness")
        if not c:
            continue
        line, = ax.plot(c["k"], c["accuracy"], marker="o", ms=3, label=f"{e['basis']} top-k")
        ax.plot(c["k"], c["accuracy_reverse"], ls="--", color=line.get_color(), label=f"{e['basis']} bottom-k")
    ax.set(xlabel="units kept (k)", ylabel="network accuracy", ylim=(0, 1.02))
    _log_k(ax)
    ax.legend(fontsize="x-small")
    return fig


def _essence(entries):
    fig, axes = _figure(len(entries))
    for ax, e in zip(axes, entries):
        s = e["essence"]
        k = s["k"]
        ax.plot(k, s["accuracy_influence"], marker="o", ms=3, label="by influence")
        ax.plot(k, s["accuracy_variance"], marker="s", ms=3, label="by variance")
        if s.get("accuracy_random_mean"):
            lo = [m - d for m, d in zip(s["accuracy_random_mean"], s["accuracy_random_sd"])]
            hi = [m + d for m, d in zip(s["accuracy_random_mean"], s["accuracy_random_sd"])]
            ax.plot(k, s["accuracy_random_mean"], color="grey", label="random (mean ± sd)")
            ax.fill_between(k, lo, hi, color="grey", alpha=0.25)
        ax.axhline(s["baseline_accuracy"], color="black", lw=0.8, ls=":", label="network")
        versus = "rest" if s.get("versus") is None else f"class {s['versus']}"
        ax.set(title=f"{e['basis']}: class {s['class']} vs {versus}", xlabel="units kept (k)",
               ylabel="balanced accuracy", ylim=(0.4, 1.02))
        _log_k(ax)
        ax.legend(fontsize="x-small")
    return fig


def _surrogate(entries):
    fig, (by_k, by_depth) = _figure(2)
    for e in entries:
        s = e["surrogate"]
        by_k.plot(s["ks"], s["fidelity_by_k"], marker="o", ms=3, label=f"{e['basis']} (depth {s['depth']})")
        by_depth.plot(s["depths"], s["fidelity_by_depth"], marker="o", ms=3, label=f"{e['basis']} (k = {s['k']})")
    by_k.set(xlabel="units (k)", ylabel="fidelity (held-out agreement)", ylim=(0, 1.02))
    by_depth.set(xlabel="tree depth", ylabel="fidelity (held-out agreement)", ylim=(0, 1.02))
    _log_k(by_k)
    by_k.legend(fontsize="x-small")
    by_depth.legend(fontsize="x-small")
    return fig


def _has(kind: str, entry: dict) -> bool:
    key = {"explained_variance": "cumulative_explained_variance"}.get(kind, kind)
    return bool(entry.get(key))


DRAW = {"explained_variance": _explained_variance, "completeness": _completeness, "essence": _essence,
        "surrogate": _surrogate}


def draw_figures(layer_entries: Sequence[dict[str, Any]], folder: str | Path) -> list[dict[str, str]]:
    """Write ``figures/<layer>-<kind>.svg`` under ``folder`` for every layer and kind with data; return
    the manifest's ``figures`` list (``layer``, ``kind``, ``title``, ``file`` relative to ``folder``)."""
    folder = Path(folder)
    layers = list(dict.fromkeys(e["layer"] for e in layer_entries))
    out = []
    for layer in layers:
        entries = [e for e in layer_entries if e["layer"] == layer]
        for kind in KINDS:
            have = [e for e in entries if _has(kind, e)]
            if not have:
                continue
            fig = DRAW[kind](have)
            fig.suptitle(f"{layer}: {TITLES[kind]}", fontsize="medium")
            name = f"{FIGURES_DIR}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}-{kind}.svg"
            (folder / FIGURES_DIR).mkdir(exist_ok=True)
            fig.savefig(folder / name, format="svg", metadata={"Date": None})
            out.append({"layer": layer, "kind": kind, "title": f"{layer}: {TITLES[kind]}", "file": name})
    return out
