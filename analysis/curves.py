"""The network's curves beside people's accuracy per basis, for the HTML report.

The response export carries no figures, so the report takes the stimulus artifact's folder (or its
``figures/`` folder) as an optional input: the SVG figures the stimulus job drew (cumulative explained
variance, completeness, essence, surrogate fidelity) are embedded next to a table of people's accuracy
per basis. Only files are read — the artifact's ``manifest.json`` for the figures' titles where it is
there, else every ``*.svg`` in the folder — so the analysis still imports nothing of the stimulus code.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Curve:
    title: str
    svg: bytes


def read_curves(folder: str | Path) -> list[Curve]:
    """The figures of an artifact folder (titles from its manifest) or of a folder of SVG files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no such folder for the network's curves: {folder}")
    manifest = folder / "manifest.json"
    if manifest.is_file():
        try:
            listed = json.loads(manifest.read_text(encoding="utf-8")).get("figures") or []
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest} is not valid JSON: {exc}") from None
        curves = [Curve(f.get("title") or f["file"], (folder / f["file"]).read_bytes())
                  for f in listed if (folder / f["file"]).is_file()]
        if curves:
            return curves
        folder = folder / "figures" if (folder / "figures").is_dir() else folder
    return [Curve(p.stem.replace("-", ": ").replace("_", " "), p.read_bytes()) for p in sorted(folder.glob("*.svg"))]


def accuracy_per_basis(main: pd.DataFrame) -> pd.DataFrame:
    """People's accuracy on main trials per basis (and layer where the export has one)."""
    if main.empty or "basis" not in main.columns:
        return pd.DataFrame()
    keys = [c for c in ("layer", "basis") if c in main.columns and main[c].notna().any()]
    return (main.groupby(keys, sort=True)
            .agg(trials=("correct", "size"), units=("unit", "nunique"), accuracy=("correct", "mean"))
            .reset_index())


def curves_html(curves: list[Curve], per_basis: pd.DataFrame, table_html) -> str:
    """The report's section: people's accuracy per basis, then the network's curves (inline SVG as data
    URIs, so the report stays one self-contained file)."""
    esc = html.escape
    figures = "".join(
        f'<figure><img alt="{esc(c.title)}" src="data:image/svg+xml;base64,{base64.b64encode(c.svg).decode()}">'
        f"<figcaption>{esc(c.title)}</figcaption></figure>" for c in curves)
    return ("<p>People's accuracy per basis (main trials), beside the stimulus job's curves for the same "
            "network: how much of the layer and of the decision each basis's top units carry.</p>"
            + table_html(per_basis) + figures)
