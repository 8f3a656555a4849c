"""``fedfer export RUN_DIR_OR_MODEL --format onnx|torchscript [--quantize int8]``.

Writes a self-contained model file and its JSON sidecar (:mod:`fer_models.serving.export`), checks the
exported outputs against the PyTorch model and prints the parity it measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from pathlib import Path
from typing import Iterator

from fer_models.serving.sidecar import FORMATS, FP32_TOLERANCE, QUANTIZE, SUFFIX
from simulation.commands.cli_common import add_json_flag, print_json

#: The choices of :mod:`fer_models.serving.export` (which imports torch, so not at `fedfer --help`);
#: tests/test_cli_startup.py checks they equal export.py's FORMATS, QUANTIZE and FP32_TOLERANCE.
#: Modules whose warnings the export command hides (regular expressions on the warning's module).
EXPORTER_MODULES = (r"torch\.onnx", r"torch\.export", r"torch\._dynamo", r"torch\._export", r"onnxscript",
                    r"onnx_ir", r"onnx\b", r"torch\.jit", r"torch\.ao")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a saved model to ONNX or TorchScript (+ JSON sidecar)")
    p.add_argument("model", type=Path, metavar="RUN_DIR_OR_MODEL", help="model.pt or the run folder holding it")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx", help="onnx (default) or torchscript")
    p.add_argument("--quantize", choices=QUANTIZE, default="none", help="int8: dynamic int8 quantisation")
    p.add_argument("--clip-length", type=int, default=0,
                   help="frames per clip the exported graph takes (default: the run's clip-length)")
    p.add_argument("--out", type=Path, help="output model file (default: beside model.pt, "
                   "model[-int8].onnx / .ts)")
    p.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                   help=f"max |logit difference| allowed for fp32 exports (default {FP32_TOLERANCE:g})")
    add_json_flag(p)
    p.set_defaults(func=run)


def default_out(model_file: Path, *, fmt: str, quantize: str) -> Path:
    tag = "" if quantize == "none" else f"-{quantize}"
    return model_file.with_name(f"{model_file.stem}{tag}{SUFFIX[fmt]}")


@contextlib.contextmanager
def _quiet_exporter(*, verbose: bool) -> Iterator[None]:
    """The exporters' own chatter off the console (their loggers are set to WARNING in cli.py): Python warnings
    from torch.onnx / torch.export / onnxscript, and anything they print, go nowhere unless ``--verbose``;
    fedfer's own result lines and warnings (e.g. a replaced sidecar) still show."""
    if verbose:
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        for module in EXPORTER_MODULES:
            warnings.filterwarnings("ignore", module=module)
        yield


def run(args: argparse.Namespace) -> int:
    from fer_models.serving.export import export_model
    from simulation.launch.output_paths import OutputPathError, output_file
    from simulation.predict.model_io import load_model_file, resolve_model_path

    if args.clip_length < 0:
        raise ValueError(f"--clip-length must be >= 1 (or 0: the run's clip-length), got {args.clip_length}")
    default = default_out(resolve_model_path(path=args.model), fmt=args.fmt, quantize=args.quantize)
    out = output_file(args.out or default, default_name=default.name, flag="--out")
    if out.suffix != SUFFIX[args.fmt]:  # the runtime chooses ONNX Runtime or TorchScript by the suffix
        raise OutputPathError(f"--out {out}: --format {args.fmt} files end in {SUFFIX[args.fmt]} (the runtime reads them by it); "
                              f"give --out {out.with_suffix(SUFFIX[args.fmt])}")
    model, info = load_model_file(path=args.model)
    clip_length = args.clip_length or int(info["config"].get("clip-length", 1))
    meta = {"model": info["model"], "model_options": info["model_options"],
            "source": {"file": str(info["path"]), "round": info["round"],
                       "run_name": info["config"].get("run-name"), "config": info["config"]}}
    with _quiet_exporter(verbose=bool(getattr(args, "verbose", False))):
        result = export_model(model=model, out=out, fmt=args.fmt, clip_length=clip_length, quantize=args.quantize,
                              meta=meta, tolerance=args.tolerance)
    p = result.parity
    if args.json:
        print_json(args, {"model_path": str(result.model_path), "sidecar_path": str(result.sidecar_path),
                          "format": args.fmt, "quantize": args.quantize, "clip_length": clip_length,
                          "size_bytes": result.sidecar["size_bytes"], "parity": p,
                          "step_model_path": str(result.step.model_path) if result.step else None})
        return 0
    verdict = ("within" if p["passed"] else "beyond") + f" {p['tolerance']:g}" if p["tolerance"] is not None \
        else "(int8: not held to the fp32 tolerance)"
    print(f"wrote {result.model_path} ({result.sidecar['size_bytes'] / 1e6:.2f} MB) and {result.sidecar_path}")
    print(f"parity vs PyTorch on {p['samples']} random clips of {clip_length} frame(s): max |logit diff| "
          f"{p['max_abs_logit_diff']:.2e} {verdict}; max |prob diff| {p['max_abs_prob_diff']:.2e}; "
          f"top-1 agreement {p['top1_agreement']:.3f}")
    if result.step is not None:
        print(f"wrote {result.step.model_path} (carried-state step model: one frame in, the recurrent state in "
              f"and out)")
    return 0
