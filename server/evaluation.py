"""Global evaluation of the aggregated model on the server's held-out splits."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from fer_models import engine
from fer_models.config import RunConfig
from fer_models.data import FaceStore
from fer_models.metrics import classification_report
from fer_models.task import build_model, eval_splits, report_split, sample_groups

logger = logging.getLogger(__name__)


class GlobalEvaluator:
    """Evaluates a state dict on ``val`` (PublicTest) and ``test`` (PrivateTest) when present.

    ``accuracy``/``loss`` and the full report refer to the *reported* split (``test`` when the
    dataset has one); ``val_*`` keys are the validation split.
    """

    def __init__(self, *, cfg: RunConfig, store: FaceStore) -> None:
        self.cfg = cfg
        self.splits = eval_splits(cfg, store)
        self.report_split = report_split(cfg, store)
        self.groups = sample_groups(store, self.splits[self.report_split])
        self.device = engine.select_device()
        self.model = build_model(cfg, image_size=store.image_size[0]).to(self.device)

    def __call__(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        self.model.load_state_dict(state_dict)
        out: dict[str, Any] = {}
        for name, data in self.splits.items():
            res = engine.evaluate(model=self.model, data=data, batch_size=self.cfg.eval_batch_size,
                                  device=self.device)
            if name == self.report_split:
                out.update(classification_report(y_true=res.y_true, y_pred=res.y_pred))
                out["loss"] = res.loss
                out["split"] = name
                if self.groups is not None:
                    out.update(group_accuracy(groups=self.groups, y_true=res.y_true, y_pred=res.y_pred))
            else:
                out[f"{name}_accuracy"] = res.accuracy
                out[f"{name}_loss"] = res.loss
        return out


def group_accuracy(*, groups: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy per group (e.g. per dataset / culture) and the largest gap between two groups."""
    per = {str(g): {"accuracy": float((y_pred[groups == g] == y_true[groups == g]).mean()),
                    "n": int((groups == g).sum())} for g in np.unique(groups)}
    accs = [v["accuracy"] for v in per.values()]
    return {"groups": per, "group_gap": float(max(accs) - min(accs)) if accs else 0.0}
