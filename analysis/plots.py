"""Figures (matplotlib, Agg backend): accuracy per condition with bootstrap CIs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_accuracy"]


def plot_accuracy(table, out_stem, title: str = "Accuracy per condition") -> list[Path]:
    """Bar chart of ``accuracy_by_condition`` output; writes ``out_stem``.png and .svg."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * max(len(table), 1), 3.6))
    x = range(len(table))
    acc = table["accuracy"].to_numpy()
    err = [acc - table["ci_low"].to_numpy(), table["ci_high"].to_numpy() - acc]
    ax.bar(x, acc, color="#4c78a8", width=0.6)
    ax.errorbar(x, acc, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(list(x))
    ax.set_xticklabels(table["condition"], rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion correct")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_suffix("." + ext)
        fig.savefig(p, dpi=150)
        paths.append(p)
    plt.close(fig)
    return paths
