"""The embedded SYNTHETIC faces: deterministic, balanced, identity-disjoint, clearly marked."""

from __future__ import annotations

import numpy as np
import torch

from fer_models.common.labels import EMOTIONS
from fer_models.data import SPLIT_NAMES, generate_synthetic, load_dataset, synthetic


def test_same_seed_gives_the_same_bytes() -> None:
    a = generate_synthetic(seed=3, per_class=6, eval_per_class=3)
    b = generate_synthetic(seed=3, per_class=6, eval_per_class=3)
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert a.labels.equal(b.labels) and a.splits.equal(b.splits)
    assert list(a.meta["subject"]) == list(b.meta["subject"])


def test_different_seeds_give_different_faces() -> None:
    a = generate_synthetic(seed=0, per_class=6, eval_per_class=3)
    b = generate_synthetic(seed=1, per_class=6, eval_per_class=3)
    assert not a.images.equal(b.images)


def test_default_shapes_dtypes_and_balanced_splits() -> None:
    store = generate_synthetic()
    assert store.images.shape == (7 * (240 + 60 + 60), 48, 48)
    dtypes = (store.images.dtype, store.labels.dtype, store.splits.dtype)
    assert dtypes == (torch.uint8, torch.int64, torch.int8)
    assert store.class_counts("train") == {e: 240 for e in EMOTIONS}
    assert store.class_counts("val") == {e: 60 for e in EMOTIONS}
    assert store.class_counts("test") == {e: 60 for e in EMOTIONS}
    assert int(store.images.min()) < 40 and int(store.images.max()) > 215, "uses the full grey range"


def test_custom_sizes_are_respected() -> None:
    store = generate_synthetic(seed=0, per_class=5, eval_per_class=2, size=32)
    assert store.image_size == (32, 32)
    assert [len(store.indices(s)) for s in SPLIT_NAMES] == [35, 14, 14]


def test_subjects_are_disjoint_across_splits() -> None:
    store = generate_synthetic(seed=0, per_class=8, eval_per_class=4)
    subjects = {s: set(store.meta["subject"][store.indices(s)]) for s in SPLIT_NAMES}
    assert subjects["train"].isdisjoint(subjects["val"])
    assert subjects["train"].isdisjoint(subjects["test"])
    assert subjects["val"].isdisjoint(subjects["test"])
    assert all(sid.startswith("syn-train-") for sid in subjects["train"])


def test_images_are_not_constant_within_a_class() -> None:
    store = generate_synthetic(seed=0, per_class=6, eval_per_class=2)
    happy = store.images[store.labels == EMOTIONS.index("happy")].float()
    assert float(happy.std(dim=0).mean()) > 5.0


def test_store_is_marked_synthetic_everywhere() -> None:
    store = generate_synthetic(seed=2, per_class=4, eval_per_class=2)
    assert store.synthetic and store.name == "synthetic"
    assert store.source == "synthetic(seed=2, per_class=4, eval_per_class=2)"
    assert "SYNTHETIC" in store.describe()
    assert "SYNTHETIC" in synthetic.describe() and "SYNTHETIC" in (synthetic.__doc__ or "")


def test_load_dataset_without_a_path_is_synthetic_and_memoised() -> None:
    a = load_dataset(seed=5, synthetic_per_class=4, synthetic_eval_per_class=2)
    b = load_dataset(data_path="", data_format="synthetic", seed=5, synthetic_per_class=4,
                     synthetic_eval_per_class=2)
    assert a.synthetic and a is b
    fresh = generate_synthetic(seed=5, per_class=4, eval_per_class=2)
    assert np.array_equal(a.images.numpy(), fresh.images.numpy())
