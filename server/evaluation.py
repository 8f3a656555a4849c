"""Global evaluation of the aggregated model: on held-out splits the server holds, or through the sites.

:func:`make_evaluator` picks it: ``client-data=partition`` evaluates on the run dataset's held-out
splits; ``client-data=site`` on the server's own ``eval-data-path`` when given, else federated
(:mod:`server.federated_evaluation`), so that a server of sites never opens a site's data."""

from __future__ import annotations

import logging
from typing import Any

import torch

from fer_models.common.labels import IMAGE_SIDE
from fer_models.config import RunConfig
from fer_models.data import FaceStore, load_dataset
from fer_models.data.duplicates import report_cross_split_duplicates
from fer_models.federation.task import eval_splits, load_store, report_split, sample_groups
from fer_models.models.from_config import build_model
from fer_models.training import engine
from fer_models.training.metrics import classification_report, group_accuracy

logger = logging.getLogger(__name__)


class GlobalEvaluator:
    """Evaluates a state dict on ``val`` (PublicTest) and ``test`` (PrivateTest) when present.

    ``accuracy``/``loss`` and the full report refer to the *reported* split (``test`` when the
    dataset has one); ``val_*`` keys are the validation split.
    """

    def __init__(self, *, cfg: RunConfig, store: FaceStore) -> None:
        self.cfg = cfg
        self.store = store
        self.duplicates = report_cross_split_duplicates(store)
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

    def describe(self) -> dict[str, Any]:
        """The summary's dataset section."""
        return {"name": self.store.name, "source": self.store.source, "synthetic": self.store.synthetic,
                "report_split": self.report_split, "sizes": {s: int(len(d)) for s, d in self.splits.items()},
                "cross_split_duplicates": self.duplicates.as_dict(),
                "evaluation": "server"}


def make_evaluator(*, cfg: RunConfig, grid: Any = None) -> Any:
    """The run's global evaluator (a callable state dict -> report, with ``report_split`` and ``describe()``)."""
    if cfg.client_data == "partition":
        return GlobalEvaluator(cfg=cfg, store=load_store(cfg))
    if cfg.eval_data_path:
        store = load_dataset(data_path=cfg.eval_data_path, cache_dir=cfg.cache_dir, seed=cfg.seed,
                             face_crop=cfg.face_crop)
        logger.info("evaluation set of the server: %s", store.describe())
        return GlobalEvaluator(cfg=cfg, store=store)
    from server.federated_evaluation import FederatedEvaluator

    if grid is None:
        raise ValueError("client-data=site without eval-data-path evaluates through the sites: pass the grid")
    return FederatedEvaluator(cfg=cfg, grid=grid)


def model_image_side(evaluator: Any) -> int:
    """The image side the model is built for: the evaluation store's, else the federation's 48."""
    store = getattr(evaluator, "store", None)
    return store.image_size[0] if store is not None else IMAGE_SIDE
