"""Small site data folders made at test time (FER2013 image-folder layout), for client-data=site tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fer_models.common.labels import EMOTIONS
from fer_models.data import generate_synthetic


def write_site(root: Path, *, seed: int, per_class: int = 6, classes: tuple[int, ...] = tuple(range(7))) -> Path:
    """A folder ``root/{train,test}/<class>/*.png`` of synthetic 48x48 faces (``per_class`` train, 2 test per class)."""
    store = generate_synthetic(seed=seed, per_class=per_class, eval_per_class=2)
    for split, folder in (("train", "train"), ("test", "test")):
        for i in store.indices(split):
            label = int(store.labels[i])
            if label not in classes:
                continue
            out = root / folder / EMOTIONS[label]
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(store.images[i].numpy(), dtype=np.uint8), "L").save(out / f"{split}_{i:05d}.png")
    return root


def count_images(root: Path, split: str) -> int:
    if root.suffix == ".csv":
        return sum(1 for line in root.read_text().splitlines()[1:] if line.endswith("," + split))
    return sum(1 for _ in (root / split).rglob("*.png"))


def write_manifest_site(root: Path, *, seed: int) -> Path:
    """A manifest CSV site (train rows first, then test rows) over a :func:`write_site` folder."""
    folder = write_site(root / "images", seed=seed, per_class=3)
    rows = [f"{p},{p.parent.name},{split}" for split in ("train", "test") for p in sorted((folder / split).rglob("*.png"))]
    (root / "home.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    return root / "home.csv"
