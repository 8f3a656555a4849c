"""Several datasets as one store: groups, merged meta, leave-one-group-out, name=path data paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_models.data import DatasetError, FaceStore, combine_stores, holdout_store, leave_out_group, load_dataset
from fer_models.data.loading import parse_data_paths


def _store(name: str, n: int, *, side: int = 48, meta: dict[str, np.ndarray] | None = None) -> FaceStore:
    return FaceStore(name=name, images=torch.full((n, side, side), n, dtype=torch.uint8),
                     labels=torch.arange(n) % 7, source=f"/data/{name}",
                     splits=torch.tensor([i % 3 for i in range(n)], dtype=torch.int8),
                     meta=meta or {})


@pytest.fixture()
def stores() -> dict[str, FaceStore]:
    return {
        "fer": _store("fer2013", 6, meta={"path": np.array([f"f{i}.jpg" for i in range(6)])}),
        "ck": _store("ckplus", 3, meta={"subject": np.array(["S1", "S1", "S2"]), "frame": np.array([1, 2, 1]),
                                        "sequence": np.array(["S1_1", "S1_1", "S2_1"])}),
        "jf": _store("jaffe", 2, meta={"subject": np.array(["KA", "KL"])}),
    }


def test_combining_concatenates_and_tags_every_sample_with_its_group(stores: dict[str, FaceStore]) -> None:
    combined = combine_stores(stores=stores)
    assert combined.name == "fer+ck+jf" and len(combined) == 11
    assert combined.meta["group"].tolist() == ["fer"] * 6 + ["ck"] * 3 + ["jf"] * 2
    assert combined.images[:, 0, 0].tolist() == [6] * 6 + [3] * 3 + [2] * 2
    assert combined.splits.tolist() == [s for st in stores.values() for s in st.splits.tolist()]
    assert combined.source == "fer=/data/fer2013,ck=/data/ckplus,jf=/data/jaffe"


def test_missing_meta_is_filled_and_ids_are_prefixed_with_the_group(stores: dict[str, FaceStore]) -> None:
    meta = combine_stores(stores=stores).meta
    assert meta["subject"].tolist() == [""] * 6 + ["ck/S1", "ck/S1", "ck/S2", "jf/KA", "jf/KL"]
    assert meta["sequence"].tolist() == [""] * 6 + ["ck/S1_1", "ck/S1_1", "ck/S2_1", "", ""]
    assert meta["frame"].tolist() == [-1] * 6 + [1, 2, 1, -1, -1]
    assert meta["path"].tolist()[5:7] == ["f5.jpg", ""]


def test_stores_that_are_not_48x48_cannot_be_combined(stores: dict[str, FaceStore]) -> None:
    with pytest.raises(DatasetError, match=r"/data/big \(big\): images are 64x64, expected 48x48"):
        combine_stores(stores={**stores, "big": _store("big", 2, side=64)})


def test_group_names_must_be_plain_words(stores: dict[str, FaceStore]) -> None:
    with pytest.raises(DatasetError, match=r"dataset name 'a/b' is invalid"):
        combine_stores(stores={"a/b": stores["fer"]})


def test_leave_out_group_trains_on_the_others_and_holds_out_all_of_the_group(stores) -> None:
    combined = combine_stores(stores=stores)
    train, held = leave_out_group(combined, group="jf")
    assert held.tolist() == [9, 10]
    assert train.tolist() == [i for i in range(9) if combined.splits[i] == 0]


def test_holdout_store_makes_the_left_out_group_the_whole_test_split(stores) -> None:
    out = holdout_store(combine_stores(stores=stores), group="ck")
    test = out.indices("test")
    assert set(out.meta["group"][test]) == {"ck"} and len(test) == 3
    assert "ck" not in set(out.meta["group"][out.indices("train")]) | set(out.meta["group"][out.indices("val")])
    assert len(out) == 11 - 2  # the other groups' own test samples are dropped (fer: 6 -> 4)


def test_leaving_out_an_unknown_group_or_a_store_without_groups_is_reported(stores) -> None:
    with pytest.raises(DatasetError, match=r"unknown group 'affectnet'.*expected one of ck, fer, jf"):
        leave_out_group(combine_stores(stores=stores), group="affectnet")
    with pytest.raises(DatasetError, match=r"has no dataset groups"):
        holdout_store(stores["fer"], group="fer")


def test_data_path_lists_are_parsed_and_bad_items_reported() -> None:
    assert parse_data_paths("a=x/y, b = /z") == [("a", "x/y"), ("b", "/z")]
    with pytest.raises(DatasetError, match=r"item 'x/y' is not name=path"):
        parse_data_paths("a=b,x/y")
    with pytest.raises(DatasetError, match=r"names dataset 'a' twice"):
        parse_data_paths("a=b,a=c")


def test_load_dataset_combines_a_name_path_list_and_leaves_one_out(tmp_path: Path, cache_dir: Path) -> None:
    for name in ("a", "b"):
        rows = []
        for i in range(6):
            Image.new("L", (48, 48), i).save(tmp_path / f"{name}{i}.png")
            rows.append(f"{name}{i}.png,{i % 7},{name}p{i % 3}")
        (tmp_path / f"{name}.csv").write_text("path,label,subject\n" + "\n".join(rows) + "\n")
    data_path = f"one={tmp_path / 'a.csv'},two={tmp_path / 'b.csv'}"
    store = load_dataset(data_path=data_path)
    assert store.name == "one+two" and len(store) == 12
    assert sorted(set(store.meta["group"])) == ["one", "two"]
    out = load_dataset(data_path=data_path, leave_out="two")
    assert set(out.meta["group"][out.indices("test")]) == {"two"} and len(out.indices("test")) == 6
    with pytest.raises(DatasetError, match=r"data-format 'csv' applies to a single path"):
        load_dataset(data_path=data_path, data_format="csv")
    with pytest.raises(DatasetError, match=r"leave-out 'two' needs several datasets"):
        load_dataset(data_path=str(tmp_path / "a.csv"), leave_out="two")


# --- real data ------------------------------------------------------------------------------------

def test_real_fer2013_ckplus_jaffe_combine_into_three_groups(shared_data: Path) -> None:
    data_path = ",".join(f"{g}={shared_data / p}" for g, p in
                         (("fer2013", "fer2013"), ("ckplus", "ckplus48"), ("jaffe", "jaffe")))
    store = load_dataset(data_path=data_path)  # each dataset disk-cached after its first decode
    groups, counts = np.unique(store.meta["group"], return_counts=True)
    assert dict(zip(groups.tolist(), counts.tolist())) == {"fer2013": 35_887, "ckplus": 927, "jaffe": 213}
    assert store.name == "fer2013+ckplus+jaffe" and store.image_size == (48, 48)
    out = load_dataset(data_path=data_path, leave_out="jaffe")
    assert len(out.indices("test")) == 213 and set(out.meta["group"][out.indices("test")]) == {"jaffe"}
    assert len(out.indices("train")) == 28_709 + 660  # FER2013 Training + CK+ train subjects
