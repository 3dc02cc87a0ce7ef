"""Figures (matplotlib, Agg backend): accuracy per condition with bootstrap CIs, per-unit
accuracy, response time and confidence per condition, machine against human accuracy per unit.
Each writes ``out_stem``.png and .svg."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.cbook
import matplotlib.ticker
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_accuracy", "plot_caterpillar", "plot_confidence", "plot_contrasts", "plot_machine_vs_human", "plot_rt",
           "plot_unit_accuracy"]


def plot_accuracy(table, out_stem, title: str = "Accuracy per condition") -> list[Path]:
    """Bar chart of ``accuracy_by_condition`` output; writes ``out_stem``.png and .svg."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.25 * max(len(table), 1), 3.6))
    x = range(len(table))
    acc = table["accuracy"].to_numpy()
    err = _error_bars(acc, table["ci_low"].to_numpy(), table["ci_high"].to_numpy())
    if "reference_type" in table.columns:
        # one colour per reference type: natural vs synthetic references read off one figure
        kinds = list(dict.fromkeys(table["reference_type"]))
        palette = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#9d755d", "#72b7b2"]
        for i, k in enumerate(kinds):
            at = np.flatnonzero(table["reference_type"].to_numpy() == k)
            ax.bar(at, acc[at], color=palette[i % len(palette)], width=0.6, label=f"{k} references")
    else:
        ax.bar(x, acc, color="#4c78a8", width=0.6)
    ax.errorbar(x, acc, yerr=err, fmt="none", ecolor="black", capsize=4, lw=1)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(list(x))
    _condition_labels(ax, table["condition"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion correct")
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    return _save(fig, out_stem)


def _error_bars(estimate, low, high) -> np.ndarray:
    """matplotlib's yerr from an interval: never negative (an interval that misses its estimate by a
    rounding draws as none on that side), and no bar where the interval is unknown."""
    estimate, low, high = (np.asarray(v, dtype=float) for v in (estimate, low, high))
    err = np.vstack([estimate - low, high - estimate])
    return np.clip(np.nan_to_num(err, nan=0.0), 0.0, None)


#: PNG resolution: what journals ask of raster figures
PNG_DPI = 300


def _legend_outside(ax, **kw):
    """The legend to the right of the axes, never over the data (a legend inside covered a bar)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False, **kw)


def _save(fig, out_stem) -> list[Path]:
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        p = out_stem.with_suffix("." + ext)
        # bbox "tight" grows the canvas to hold a legend outside the axes; a fixed date keeps the SVG
        # byte-identical between runs
        fig.savefig(p, dpi=PNG_DPI, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)
        paths.append(p)
    plt.close(fig)
    return paths


def _groups(df: pd.DataFrame, value: str, by: str):
    names, data = [], []
    for g, d in df.groupby(by, sort=True):
        v = pd.to_numeric(d[value], errors="coerce").dropna().to_numpy(float)
        if len(v):
            names.append(str(g))
            data.append(v)
    return names, data


#: characters per line of a condition's name under its bar: within the 1.25 inch each group gets, at 8 pt
LABEL_CHARS = 14


def wrap_label(name, width: int = LABEL_CHARS) -> str:
    """A condition's name on lines of at most ``width`` characters, broken after ``_ . / : -`` or spaces
    where it can be (long names such as ``layer4.2.conv3_principal_components`` otherwise run into
    their neighbours); a part longer than a line is cut."""
    parts = re.findall(r"[^_./:\- ]*[_./:\- ]?", str(name))
    lines, line = [], ""
    for part in filter(None, parts):
        while len(part) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(part[:width])
            part = part[width:]
        if len(line) + len(part) > width:
            lines.append(line)
            line = ""
        line += part
    if line:
        lines.append(line)
    return "\n".join(lines)


def _condition_labels(ax, names) -> None:
    # horizontal and wrapped: rotated long names overlapped one another and the next figure
    ax.set_xticklabels([wrap_label(n) for n in names], rotation=0, ha="center", fontsize=8)


def _figure(n_groups: int):
    return plt.subplots(figsize=(1.6 + 1.25 * max(n_groups, 1), 3.6))


def plot_unit_accuracy(units: pd.DataFrame, out_stem, by: str = "condition",
                       title: str = "Per-unit accuracy per condition") -> list[Path]:
    """Box plot with every unit's accuracy as a jittered point (``unit_accuracy`` output)."""
    names, data = _groups(units, "accuracy", by)
    fig, ax = _figure(len(names))
    if data:
        ax.boxplot(data, positions=range(len(data)), widths=0.5, showfliers=False,
                   medianprops={"color": "black"})
        rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
        for i, v in enumerate(data):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=10, alpha=0.6,
                       color="#4c78a8", lw=0)
    ax.axhline(0.5, color="grey", ls="--", lw=1, label="chance")
    ax.set_xticks(range(len(names)))
    _condition_labels(ax, names)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("proportion correct per unit")
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    return _save(fig, out_stem)


def plot_rt(main: pd.DataFrame, out_stem, by: str = "condition",
            title: str = "Response time per condition") -> list[Path]:
    """Box plots of RT in seconds on a log axis, the box's statistics computed on log RT (quartiles,
    whiskers at 1.5 IQR of log RT; outliers not drawn): on the linear scale a right-skewed RT's lower
    fence is negative, and the whisker ran to the fastest answer (4 ms in Borowski et al.'s data).
    RTs ≤ 0 cannot be drawn on a log axis and are left out."""
    names, data = _groups(main.assign(rt_s=pd.to_numeric(main["rt_ms"], errors="coerce") / 1000),
                          "rt_s", by)
    data = [v[v > 0] for v in data]
    fig, ax = _figure(len(names))
    if data:
        stats = []
        for v in data:
            (s,) = matplotlib.cbook.boxplot_stats(np.log(v), whis=1.5)
            stats.append({k: (np.exp(x) if k in ("med", "q1", "q3", "whislo", "whishi", "mean") else x)
                          for k, x in s.items()})
        ax.bxp(stats, positions=range(len(data)), widths=0.5, showfliers=False,
               medianprops={"color": "black"}, patch_artist=True, boxprops={"facecolor": "#c6dbef"})
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(range(len(names)))
    _condition_labels(ax, names)
    ax.set_ylabel("response time (s)")
    ax.set_title(title, fontsize=10)
    return _save(fig, out_stem)


def plot_confidence(main: pd.DataFrame, out_stem, by: str = "condition",
                    title: str = "Confidence per condition") -> list[Path]:
    """Stacked proportions of each confidence rating per condition."""
    d = main.assign(confidence=pd.to_numeric(main["confidence"], errors="coerce")).dropna(
        subset=["confidence"])
    counts = pd.crosstab(d[by].astype(str), d["confidence"])
    prop = counts.div(counts.sum(axis=1), axis=0)
    fig, ax = _figure(len(prop))
    bottom = np.zeros(len(prop))
    colours = plt.get_cmap("Blues")(np.linspace(0.3, 0.9, max(len(prop.columns), 1)))
    for c, colour in zip(prop.columns, colours):
        label = str(int(c)) if float(c).is_integer() else str(c)
        ax.bar(range(len(prop)), prop[c].to_numpy(), bottom=bottom, width=0.6, color=colour,
               label=label)
        bottom += prop[c].to_numpy()
    ax.set_xticks(range(len(prop)))
    _condition_labels(ax, prop.index)
    ax.set_ylim(0, 1)
    ax.set_ylabel("proportion of responses")
    ax.set_title(title, fontsize=10)
    ax.legend(title="rating", fontsize=8, title_fontsize=8, frameon=False,
              loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, out_stem)


def plot_machine_vs_human(units: pd.DataFrame, out_stem, x: str = "machine_accuracy",
                          y: str = "human_accuracy", by: str = "basis",
                          title: str = "Machine observer vs people, per unit") -> list[Path]:
    """One point per unit (``MachineObserverResult.units``): the machine's predicted accuracy against
    people's, with people's interval as a vertical bar, coloured by ``by``, and the identity line."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    d = units.dropna(subset=[x, y])
    groups = [(str(g), part) for g, part in d.groupby(by, sort=True)] if by in d.columns else [("", d)]
    colours = plt.get_cmap("tab10")
    for i, (name, part) in enumerate(groups):
        colour = colours(i % 10)
        if {"human_ci_low", "human_ci_high"} <= set(part.columns) and y == "human_accuracy":
            ax.errorbar(part[x], part[y], yerr=_error_bars(part[y], part["human_ci_low"], part["human_ci_high"]),
                        fmt="none", ecolor=colour, alpha=0.35, lw=0.8)
        ax.scatter(part[x], part[y], s=18, color=colour, label=name or None, lw=0)
    values = np.concatenate([d[x].to_numpy(float), d[y].to_numpy(float)]) if len(d) else np.array([0.5, 1])
    low = max(0.0, min(0.45, float(np.nanmin(values)) - 0.03))
    ax.plot([low, 1], [low, 1], color="grey", lw=1, ls="--", label="identity")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.axvline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlim(low, 1.01)
    ax.set_ylim(low, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("machine: predicted proportion correct")
    ax.set_ylabel("people: proportion correct")
    ax.set_title(title, fontsize=10)
    _legend_outside(ax)
    return _save(fig, out_stem)


def plot_contrasts(contrasts: pd.DataFrame, out_stem, by=(), odds_ratio: bool = True,
                   title: str = "Pairwise contrasts of the estimated marginal means") -> list[Path]:
    """Forest plot of ``analysis.emmeans`` contrasts: one row per contrast (within its by group),
    the estimate and its (adjusted) interval; odds ratios on a log axis with the null at 1 for a
    GLMM, differences with the null at 0 otherwise."""
    labels = [" | ".join([str(r["contrast"])] + [f"{b} = {r[b]}" for b in by])
              for r in contrasts.to_dict(orient="records")]
    if odds_ratio:
        est, lo, hi, null = (contrasts["odds_ratio"], contrasts["odds_ratio_ci_low"],
                             contrasts["odds_ratio_ci_high"], 1.0)
    else:
        est, lo, hi, null = contrasts["estimate"], contrasts["ci_low"], contrasts["ci_high"], 0.0
    n = len(contrasts)
    fig, ax = plt.subplots(figsize=(6.4, 1.0 + 0.38 * max(n, 1)))
    y = np.arange(n)[::-1]
    err = _error_bars(est, lo, hi)
    ax.errorbar(est, y, xerr=err, fmt="o", color="#4c78a8", ecolor="black", capsize=3, lw=1, ms=5)
    ax.axvline(null, color="grey", ls="--", lw=1)
    if odds_ratio:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yticks(y)
    ax.set_yticklabels([wrap_label(s, 40) for s in labels], fontsize=8)
    ax.set_xlabel("odds ratio (log scale)" if odds_ratio else "difference")
    ax.set_title(title, fontsize=10)
    return _save(fig, out_stem)


def plot_caterpillar(condvar: pd.DataFrame, out_stem, level: float = 0.95) -> list[Path]:
    """lme4's ``dotplot(ranef(fit, condVar = TRUE))``: per grouping factor and term, the levels'
    conditional modes sorted, each with mode ± z·(conditional SD), from ``MixedResult.ranef_condvar()``."""
    from scipy import stats

    z = stats.norm.isf((1 - level) / 2)
    panels = list(condvar.groupby(["group", "term"], sort=False))
    tallest = max((len(p) for _, p in panels), default=1)
    fig, axes = plt.subplots(1, max(len(panels), 1), squeeze=False,
                             figsize=(3.2 * max(len(panels), 1), 1.2 + 0.12 * min(tallest, 200)))
    for ax, ((group, term), part) in zip(axes[0], panels):
        part = part.sort_values("mode")
        y = np.arange(len(part))
        ax.errorbar(part["mode"], y, xerr=z * part["condsd"].to_numpy(), fmt="o", ms=3, color="#4c78a8",
                    ecolor="grey", lw=0.8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y if len(part) <= 40 else [])
        if len(part) <= 40:
            ax.set_yticklabels(part["level"], fontsize=6)
        ax.set_title(f"{group}: {term}", fontsize=9)
        ax.set_xlabel("conditional mode")
    return _save(fig, out_stem)
