"""fedfer from Python (notebooks, scripts): the commands' results as plain objects.

    import fedfer
    run = fedfer.simulate({"num-server-rounds": 3}, out="runs/notebook")
    run["final"]["accuracy"], run["run_dir"]
    fedfer.evaluate(run["run_dir"])["accuracy"]
    fedfer.predict(["face.jpg"], model=run["run_dir"])[0]["top"]

Each function runs the command of its name exactly as ``fedfer CMD --json`` does and returns the object that
command prints (plain dicts and lists: docs/python-api.md). Bad input raises the command's own typed errors
(``ConfigError``, ``DatasetError``, ``FileNotFoundError``, ``ValueError``...) instead of printing them; a run that
fails in a round raises :class:`CommandFailedError` holding the command's failure object. Logs go to the
``fedfer`` logger (configure ``logging`` to see them); what the command would print goes to stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["CommandFailedError", "evaluate", "predict", "run_command", "simulate"]


class CommandFailedError(RuntimeError):
    """A command that ran and failed (e.g. a run stopped by a failed round); ``result`` is its JSON object."""

    def __init__(self, message: str, *, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def run_command(argv: Sequence[str]) -> dict[str, Any]:
    """``fedfer ARGV --json`` in this process: its JSON object, or its exception."""
    from simulation.commands.cli import build_parser

    argv = [str(a) for a in argv]
    try:
        args = build_parser().parse_args([*argv, "--json"])
    except SystemExit as exc:  # argparse has printed the reason to stderr
        raise ValueError(f"fedfer {' '.join(argv)}: invalid arguments (see the message above)") from exc
    stream = io.StringIO()
    args.json_stream = stream  # print_json writes here; the command's other prints go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        code = int(args.func(args))
    text = stream.getvalue().strip()
    result = json.loads(text) if text else {}
    if code != 0:
        raise CommandFailedError(f"fedfer {argv[0]} exited {code}: {result.get('reason') or result or 'no result'}",
                                 result=result)
    return result


def _value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _sets(config: Mapping[str, Any] | None) -> list[str]:
    return [a for key, value in (config or {}).items() for a in ("--set", f"{key}={_value(value)}")]


def simulate(config: Mapping[str, Any] | None = None, *, data: str | Path | None = None,
             out: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """A federated run on this machine (``fedfer simulate``): ``config`` maps settings (docs/settings.md) to
    values; ``data`` a dataset path (default: the embedded synthetic faces); ``out`` the run folder. Returns the
    run's headline: ``run_dir``, ``dataset``, ``rounds``, ``final`` (split, accuracy, macro_f1, n), ``epsilon``."""
    argv = ["simulate", *(["--data", data] if data else []), *(["--out", out] if out else []),
            *(["--overwrite"] if overwrite else []), *_sets(config)]
    return run_command(argv)


def evaluate(model: str | Path, *, data: str | Path | None = None, split: str | None = None,
             out: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Score a trained model (``fedfer evaluate``: a run folder or model.pt) on its run's dataset or ``data``."""
    argv = ["evaluate", model, *(["--data", data] if data else []), *(["--split", split] if split else []),
            *(["--out", out] if out else []), *(["--overwrite"] if overwrite else [])]
    return run_command(argv)


def predict(images: Sequence[str | Path], *, model: str | Path, top: int = 3) -> list[dict[str, Any]]:
    """Label face images (``fedfer predict``): one ``{"image", "top": [{"emotion", "probability"}...]}`` each."""
    if isinstance(images, (str, Path)):
        images = [images]
    return run_command(["predict", *images, "--model", model, "--top", top])["images"]
