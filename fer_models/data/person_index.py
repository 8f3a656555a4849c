"""The person as the privacy unit: samples grouped by subject id.

Under ``privacy-unit = person`` the Poisson sampler draws *persons*, every sample of a drawn
person enters the step, and the per-sample gradients of one person are averaged before Opacus
clips them (:func:`fer_models.config.recipe.average_rows`), so a person with k images contributes one
clipped gradient: the accountant's epsilon then protects the whole person. Plain PyTorch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PersonIndex:
    """Samples ordered by person: person ``p`` holds ``samples[offsets[p]:offsets[p + 1]]``."""

    offsets: torch.Tensor  # int64 (P + 1,)
    samples: torch.Tensor  # int64 (S,)
    singletons: int = 0  # samples without a subject id, each counted as a person of its own

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    def expand(self, persons: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample indices, position in ``persons`` of each sample's person) for a batch of persons."""
        persons = persons.reshape(-1).long()
        starts, ends = self.offsets[persons], self.offsets[persons + 1]
        counts = ends - starts
        group = torch.arange(len(persons)).repeat_interleave(counts)
        base = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
        rows = self.samples[base + torch.arange(int(counts.sum()))]
        return rows, group


def person_index(subjects: np.ndarray) -> PersonIndex:
    """Group sample positions by subject id; a sample with an empty id is a person of its own."""
    subjects = np.asarray(subjects).astype(str)
    missing = subjects == ""
    keys = np.where(missing, np.char.add("#sample", np.arange(len(subjects)).astype(str)), subjects)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    order = np.argsort(inverse, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(counts)])
    if missing.any():
        logger.warning("%d of %d samples have no subject id: each counts as a person of its own",
                       int(missing.sum()), len(subjects))
    return PersonIndex(torch.from_numpy(offsets).long(), torch.from_numpy(order).long(), int(missing.sum()))
