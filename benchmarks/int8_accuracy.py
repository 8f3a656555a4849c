"""Accuracy of a trained model on FER2013 PrivateTest: PyTorch fp32 vs its exports (fp32, int8).

The model of ``--run`` (a run folder of ``fedfer simulate`` or its model.pt) is exported to ONNX
(fp32, int8) and TorchScript (fp32, int8), and each runtime labels every PrivateTest image
(clips repeat the image over the model's clip length, as ``fedfer predict`` does). Reported:
accuracy, macro-F1 and top-1 agreement with the PyTorch model. Writes ``results/int8_accuracy.*``.

    python benchmarks/int8_accuracy.py --run runs/<name> --data ../shared/data/fer2013
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import markdown_table, write_results  # noqa: E402

warnings.filterwarnings("ignore")
EXPORTS = (("onnx", "onnx", "none", ".onnx"), ("onnx-int8", "onnx", "int8", ".onnx"),
           ("torchscript", "torchscript", "none", ".ts"), ("torchscript-int8", "torchscript", "int8", ".ts"))


def _labels(predictor, images: np.ndarray, *, batch: int = 256) -> np.ndarray:
    out = []
    for start in range(0, len(images), batch):
        crops = images[start:start + batch]
        clips = np.repeat(crops[:, None], predictor.clip_length, axis=1)
        out.append(predictor.probabilities(clips).argmax(1))
    return np.concatenate(out)


def main() -> None:
    from sklearn.metrics import f1_score

    from fer_models.data import load_dataset
    from fer_models.serving.export import export_model
    from fer_models.serving.runtime import load_exported
    from simulation.predict.inference import load_predictor
    from simulation.predict.model_io import load_model_file

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="run folder or model.pt of a trained model")
    ap.add_argument("--data", default="../shared/data/fer2013")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    store = load_dataset(data_path=args.data)
    test = store.indices("test")
    images, truth = store.images[test].numpy(), store.labels[test].numpy()
    model, info = load_model_file(path=args.run)
    clip_length = int(info["config"].get("clip-length", 1))
    reference = _labels(load_predictor(path=args.run), images)
    rows = [{"runtime": "eager", "accuracy": float((reference == truth).mean()),
             "macro_f1": float(f1_score(truth, reference, average="macro")), "agreement": 1.0}]
    with tempfile.TemporaryDirectory() as tmp:
        for runtime, fmt, quantize, suffix in EXPORTS:
            path = Path(tmp) / f"{runtime}{suffix}"
            result = export_model(model=model, out=path, fmt=fmt, clip_length=clip_length, quantize=quantize)
            got = _labels(load_exported(path), images)
            rows.append({"runtime": runtime, "accuracy": float((got == truth).mean()),
                         "macro_f1": float(f1_score(truth, got, average="macro")),
                         "agreement": float((got == reference).mean()), "size_mb": path.stat().st_size / 1e6,
                         "export_max_logit_diff": result.parity["max_abs_logit_diff"]})
            print(rows[-1], flush=True)
    columns = [("runtime", "runtime", ""), ("PrivateTest accuracy", "accuracy", ".4f"), ("macro-F1", "macro_f1", ".4f"),
               ("top-1 agreement with eager", "agreement", ".4f"), ("size (MB)", "size_mb", ".2f"),
               ("export parity max abs logit diff", "export_max_logit_diff", ".2e")]
    notes = (f"Model: {info['model']} {info['model_options']} (round {info['round']}, clip length {clip_length}) "
             f"from `{args.run}`; {len(test)} PrivateTest images. int8 = dynamic quantisation (ONNX Runtime "
             f"nodes of the Linear layers; torch.ao Linear). {args.note}")
    write_results("int8_accuracy", results=rows, table=markdown_table(rows, columns), notes=notes)


if __name__ == "__main__":
    main()
