"""How the run folder's plots are written: PNG at one resolution, atomically."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fer_models.common.atomic import atomic_write_bytes

DPI = 100


def save_png(fig: Figure, path: Path) -> Path:
    """Render ``fig`` with the Agg backend and write it to ``path`` (all or nothing)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)
