"""Canonical emotion labels shared by every dataset reader, model and report.

The order is FER2013's original CSV order (``emotion`` column): every reader maps its own
class names onto these indices, so a label ``3`` means *happy* whatever the source.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES: int = len(EMOTIONS)
#: Side of the square face crops: FER2013's 48x48. Every reader resizes to it and every model defaults to it.
IMAGE_SIDE: int = 48

# Folder names seen in the wild, mapped onto the canonical names.
_ALIASES: dict[str, str] = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
}


class UnknownLabelError(ValueError):
    """A class name that maps onto none of the 7 canonical emotions."""


def label_index(name: str) -> int:
    """Return the canonical index of an emotion name (case-insensitive, common aliases allowed)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    try:
        return EMOTIONS.index(key)
    except ValueError:
        raise UnknownLabelError(
            f"unknown emotion {name!r}: expected one of {', '.join(EMOTIONS)}"
            f" (or an alias: {', '.join(sorted(_ALIASES))})"
        ) from None
