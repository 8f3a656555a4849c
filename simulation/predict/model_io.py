"""Reading a saved global model (``model.pt``, written by :func:`server.run_folder.save_model`).

The file is a ``torch.save`` dict with ``format: "fedfer-model-v1"``, the model name and options,
the run's flat config, the round and the state dict. It is read with ``weights_only=True``, so a
foreign or damaged file never executes code; every failure becomes a :class:`ModelFileError`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fer_models.common.labels import IMAGE_SIDE
from fer_models.federation.run_folder import MODEL_FILE, MODEL_FORMAT
from fer_models.federation.run_folder import MODEL_REQUIRED as _REQUIRED

logger = logging.getLogger(__name__)

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "ModelFileError", "load_model_file", "resolve_model_path"]
_SHOW = 5  # differing keys named in an error message


class ModelFileError(ValueError):
    """A model file that is missing, damaged, not a fedfer model, or does not fit its architecture."""


def resolve_model_path(*, path: Path) -> Path:
    """``path`` itself for a file, ``path/model.pt`` for a run folder; raises if there is none."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / MODEL_FILE
        if not candidate.is_file():
            raise ModelFileError(f"{path} holds no {MODEL_FILE}: the run has not finished a round yet, "
                                 f"or this is not a run folder; give a run folder or a model.pt file")
        return candidate
    if not path.exists():
        raise ModelFileError(f"{path} does not exist: give a run folder (runs/<name>-<time>) or its model.pt")
    return path


def _read(path: Path) -> dict[str, Any]:
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path} is empty (0 bytes): the file is damaged; re-run the experiment "
                             f"or copy the model file again")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before failing
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on bad input
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:120]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ModelFileError(f"{path} is damaged or not a fedfer model file (cannot be read: {reason}); "
                             f"re-run the experiment or copy the model file again") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ModelFileError(f"{path} is not a fedfer model (format {found!r}, expected {MODEL_FORMAT!r}); "
                             f"give the model.pt written by `fedfer simulate` or its run folder")
    missing = [k for k in _REQUIRED if k not in obj]
    if missing or not isinstance(obj["state_dict"], dict) or not isinstance(obj["model_options"], dict):
        raise ModelFileError(f"{path} is a damaged fedfer model: missing or malformed "
                             f"{', '.join(missing) or 'state_dict/model_options'}")
    return obj


def _strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop an Opacus ``_module.`` prefix when every key carries it."""
    prefix = "_module."
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _check_fit(model: nn.Module, state: dict[str, torch.Tensor], *, path: Path, name: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state))
              if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:_SHOW]}" + (" ..." if len(missing) > _SHOW else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:_SHOW]}" + (" ..." if len(unexpected) > _SHOW else ""))
    if shapes:
        problems.append(f"shape differences (file vs model) {shapes[:_SHOW]}" + (" ..." if len(shapes) > _SHOW else ""))
    if problems:
        raise ModelFileError(f"{path}: the weights do not fit model {name!r} with the saved options: "
                             f"{'; '.join(problems)}; the file was written by another version or "
                             f"architecture")


def load_model_file(*, path: Path, image_size: int | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load the model saved in ``path`` (a ``model.pt`` or a run folder), in eval mode.

    Returns ``(model, info)``; ``info`` holds ``format``, ``model``, ``model_options``, ``config``
    (flat, kebab-case), ``round`` and ``path`` (the file read). ``image_size`` overrides the input
    size the model checks (the weights do not depend on it; default: the saved one, else 48).
    """
    from fer_models.models import ModelOptionError, UnknownModelError, create_model

    file = resolve_model_path(path=path)
    obj = _read(file)
    info = {k: v for k, v in obj.items() if k != "state_dict"}
    info.setdefault("config", {})
    info.setdefault("round", None)
    info["path"] = file
    size = int(image_size or obj.get("image_size") or IMAGE_SIDE)
    try:
        model = create_model(str(obj["model"]), image_size=size, **obj["model_options"])
    except (UnknownModelError, ModelOptionError) as exc:
        raise ModelFileError(f"{file}: cannot rebuild the saved model: {exc}") from None
    state = _strip_wrappers(obj["state_dict"])
    _check_fit(model, state, path=file, name=str(obj["model"]))
    model.load_state_dict(state)
    model.eval()
    logger.debug("loaded %s (round %s) from %s", obj["model"], info["round"], file)
    return model, info
