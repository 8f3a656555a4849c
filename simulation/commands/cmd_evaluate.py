"""``fedfer evaluate MODEL_OR_RUN_DIR``: score a saved model on a dataset split.

Without ``--data`` the run's own dataset is used (the absolute source recorded in the run's
summary.json when there is one, else the saved config's data-path, or the same synthetic faces),
so ``fedfer evaluate RUN_DIR`` reproduces the run's final accuracy on its reported split.
"""

from __future__ import annotations

import argparse
import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_models.federation.run_folder import CONFUSION_FIGURE, EVALUATION_FILE, SUMMARY_FILE
from simulation.commands.cli_common import add_json_flag, print_json

if TYPE_CHECKING:  # numpy and the data package (torch) are imported by the handler, not by `fedfer --help`
    import numpy as np

    from fer_models.data import FaceStore

SPLITS = ("test", "val", "train", "all")


@cache
def _defaults() -> dict[str, Any]:
    from fer_models.config import RunConfig

    return RunConfig().to_flat()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a saved model (model.pt or run folder) on a dataset split")
    p.add_argument("model", type=Path, metavar="MODEL_OR_RUN_DIR", help="model.pt or the run folder holding it")
    p.add_argument("--data", help="dataset: FER2013 CSV or image folder (default: the run's own dataset)")
    p.add_argument("--data-format", choices=("auto", "csv", "folder", "ckplus", "jaffe", "manifest", "synthetic"),
                   help="format of --data (default: auto-detect; the run's format without --data)")
    p.add_argument("--face-crop", choices=("auto", "detect", "center", "none"),
                   help="how photos (manifest, JAFFE) are cropped to faces (default: the run's face-crop)")
    p.add_argument("--split", choices=SPLITS, help="split to score (default: test, else val)")
    p.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/evaluations/<dataset>-<split>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in the output folder")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's eval-batch-size)")
    add_json_flag(p)
    p.set_defaults(func=run)


def _setting(config: dict[str, Any], key: str) -> Any:
    return config.get(key, _defaults()[key])


def _recorded_source(model_file: Path) -> str | None:
    """The absolute dataset path summary.json recorded beside the model, when it still exists."""
    summary = model_file.parent / SUMMARY_FILE
    try:
        dataset = json.loads(summary.read_text(encoding="utf-8"))["dataset"] if summary.is_file() else {}
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    source = dataset.get("source")
    return source if not dataset.get("synthetic") and source and Path(source).exists() else None


def load_eval_store(*, config: dict[str, Any], model_file: Path, data: str | None,
                    data_format: str | None, face_crop: str | None = None) -> FaceStore:
    """The dataset to evaluate on: ``data`` if given, else the one the run was trained on."""
    from fer_models.data import DatasetError, load_dataset

    if data:
        path, fmt = data, data_format or "auto"
    else:
        path = _recorded_source(model_file) or str(_setting(config, "data-path"))
        fmt = data_format or str(_setting(config, "data-format"))
        if path and fmt != "synthetic" and not Path(path).expanduser().exists():
            raise DatasetError(f"the run's dataset {path} is not found from {Path.cwd()}; pass --data PATH")
    return load_dataset(data_path=path, data_format=fmt, cache_dir=str(_setting(config, "cache-dir")),
                        seed=int(_setting(config, "seed")),
                        synthetic_per_class=int(_setting(config, "synthetic-per-class")),
                        synthetic_eval_per_class=int(_setting(config, "synthetic-eval-per-class")),
                        face_crop=face_crop or str(_setting(config, "face-crop")))


def split_indices(*, store: FaceStore, split: str) -> np.ndarray:
    """Store indices of ``split`` (``all`` = every image); raises if the dataset lacks it."""
    import numpy as np

    from fer_models.data import DatasetError

    if split == "all":
        return np.arange(len(store))
    if not store.has_split(split):
        have = [s for s in ("train", "val", "test") if store.has_split(s)]
        raise DatasetError(f"{store.name} has no {split} split (it has {', '.join(have)}); choose --split "
                           f"{' or '.join(have)} or all")
    return store.indices(split)


def evaluate_saved_model(*, model_path: Path, store: FaceStore, split: str,
                         batch_size: int | None = None) -> dict[str, Any]:
    """Metrics of a saved model on one split: the keys of summary.json's ``final`` plus provenance."""
    import numpy as np

    from fer_models.data import DatasetError
    from fer_models.data.clips import make_clips
    from fer_models.data.face_crop import CropCounts
    from fer_models.training import engine
    from fer_models.training.metrics import classification_report
    from simulation.predict.model_io import load_model_file

    model, info = load_model_file(path=model_path, image_size=store.image_size[0])
    config = info["config"]
    batch = batch_size or int(_setting(config, "eval-batch-size"))
    if batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    data = make_clips(store, split_indices(store=store, split=split), clip_length=int(_setting(config, "clip-length")),
                      clip_source=str(config.get("clip-source", "pseudo")),
                      sampling=str(config.get("clip-sampling", "last")).replace("random", "last"),
                      short=str(config.get("clip-short", "pad")))  # held-out clips as the server scores them
    if len(data) == 0:
        raise DatasetError(f"{store.name}: the {split} split is empty")
    device = engine.select_device()
    res = engine.evaluate(model=model.to(device), data=data, batch_size=batch, device=device)
    report = classification_report(y_true=res.y_true, y_pred=res.y_pred)
    detected = store.meta.get("face_detected")
    crop = {} if detected is None else {"face_crop": vars(CropCounts.of(np.asarray(detected)[data.frames[:, 0].numpy()]))}
    return {**report, **crop, "loss": res.loss, "split": split,
            "dataset": {"name": store.name, "source": store.source, "synthetic": store.synthetic},
            "model": {"path": str(info["path"]), "name": info["model"], "options": info["model_options"],
                      "round": info["round"]}}


def _default_out(*, model_file: Path, data: str | None, store: FaceStore, split: str,
                 face_crop: str | None = None) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data).stem if data else store.name) or "dataset"
    return model_file.parent / "evaluations" / (f"{name}-{split}" + (f"-crop-{face_crop}" if face_crop else ""))


def _print(result: dict[str, Any], out: Path) -> None:
    ds = result["dataset"]
    tag = " [SYNTHETIC faces]" if ds["synthetic"] else ""
    print(f"{ds['name']}{tag} {result['split']} (n={result['n']}), model {result['model']['name']} "
          f"round {result['model']['round']} from {result['model']['path']}")
    print(f"accuracy {result['accuracy']:.4f} | macro-F1 {result['macro_f1']:.4f} | "
          f"weighted-F1 {result['weighted_f1']:.4f} | loss {result['loss']:.4f}")
    if "face_crop" in result:
        crop = result["face_crop"]
        print(f"faces found {crop['found']}, fallbacks (fixed central square) {crop['fallbacks']}, "
              f"not searched {crop['not_searched']}")
    print(f"{'emotion':<10} {'precision':>9} {'recall':>7} {'f1':>7} {'support':>8}")
    for name, m in result["per_class"].items():
        print(f"{name:<10} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>7.3f} {m['support']:>8d}")
    print(f"written: {out / EVALUATION_FILE}, {out / CONFUSION_FIGURE}")


def run(args: argparse.Namespace) -> int:
    from fer_models.federation.run_folder import write_json
    from simulation.launch.output_paths import output_folder
    from simulation.predict.model_io import load_model_file, resolve_model_path
    from simulation.reports.report import plot_confusion_matrix

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.out and (args.out / EVALUATION_FILE).exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already holds evaluation.json; pass --overwrite or choose another --out")
    if args.out:
        output_folder(args.out, flag="--out")  # before the model and the data are read
    model_file = resolve_model_path(path=args.model)
    _, info = load_model_file(path=model_file)  # fail on a bad model before loading any data
    store = load_eval_store(config=info["config"], model_file=model_file, data=args.data,
                            data_format=args.data_format, face_crop=args.face_crop)
    split = args.split or ("test" if store.has_split("test") else "val")
    out = args.out or _default_out(model_file=model_file, data=args.data, store=store, split=split,
                                   face_crop=args.face_crop)
    if (out / EVALUATION_FILE).exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds evaluation.json; pass --overwrite or choose another --out")
    output_folder(out, flag="--out")
    result = evaluate_saved_model(model_path=model_file, store=store, split=split, batch_size=args.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / EVALUATION_FILE, result)
    plot_confusion_matrix(matrix=result["confusion_matrix"], path=out / CONFUSION_FIGURE,
                          title=f"{store.name} {split} (n={result['n']}, accuracy {result['accuracy']:.3f})")
    if args.json:  # evaluation.json's keys, and where the files went
        print_json(args, {**result, "written": [str(out / EVALUATION_FILE), str(out / CONFUSION_FIGURE)]})
    else:
        _print(result, out)
    return 0
