"""The one exception type for bad dataset input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset path, file or row that cannot be read.

    The message always names the file (and the 1-based line or the image where it applies) and
    says what was expected, so the user can fix the input without reading the code.
    """
