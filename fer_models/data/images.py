"""Decoding one image file to a grayscale ``uint8`` array, for the dataset readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fer_models.data.errors import DatasetError

#: What Pillow raises for a missing, truncated, unknown or oversized image.
DECODE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_grayscale(path: Path, *, expected: str, where: str | None = None) -> np.ndarray:
    """Decode ``path`` to a 2-D ``uint8`` array (any mode, "P" palette included, converted to "L").

    Raises :class:`DatasetError` naming the file when Pillow cannot read it: ``"<path>: cannot
    decode image (<reason>); expected a readable <expected>"``, or, with ``where`` (e.g. ``"m.csv
    line 2"``), ``"<where>: cannot decode image <path> (<reason>); ..."``.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except DECODE_ERRORS as exc:
        what = f"{path}: cannot decode image" if where is None else f"{where}: cannot decode image {path}"
        raise DatasetError(f"{what} ({exc}); expected a readable {expected}") from None


__all__ = ["decode_grayscale", "DECODE_ERRORS"]
