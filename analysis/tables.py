"""Plain fixed-width tables for the terminal, shared by every result's ``summary()`` and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["format_table"]


def format_table(df: pd.DataFrame, digits: int = 4) -> str:
    """A plain fixed-width table for the terminal."""
    if df.empty:
        return "(empty)"
    cells = [[str(c) for c in df.columns]]
    for row in df.itertuples(index=False):
        cells.append([
            f"{v:.{digits}g}" if isinstance(v, (float, np.floating)) else str(v) for v in row
        ])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
