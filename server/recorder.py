"""Records a federated run round by round: metrics.jsonl, model.pt, summary.json, progress."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping

import torch

from fer_models.config import RunConfig
from fer_models.federation.run_folder import (
    CONFIG_FILE,
    FAILURE_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SUMMARY_FILE,
    append_jsonl,
    write_json,
    write_jsonl,
)
from fer_models.federation.wire import PARTITION_ID, EvalReply, TrainReply
from fer_models.models.from_config import model_options
from fer_models.training.metrics import one_class_prediction, one_class_warning
from server.evaluation import model_image_side
from server.grid import RoundReplies
from server.ledger import ServerLedger, client_key, client_order
from server.run_folder import resolve_run_dir, save_model
from server.tracking import Tracker

logger = logging.getLogger(__name__)

_SCALAR_KEYS = ("accuracy", "loss", "macro_f1", "weighted_f1", "val_accuracy", "val_loss")


class RunRecorder:
    """Owns the run folder; :meth:`on_round` is called after each round's aggregation."""

    def __init__(self, *, cfg: RunConfig, evaluator: Any) -> None:
        self.cfg = cfg
        self.dir = resolve_run_dir(out_dir=cfg.out_dir, run_name=cfg.run_name, overwrite=cfg.overwrite,
                                   resume=bool(cfg.resume_from))
        self.evaluator = evaluator  # server.evaluation.make_evaluator: server-held splits or the sites
        self.ledger = ServerLedger(cfg)
        self.rounds: list[dict[str, Any]] = []
        self.initial: dict[str, Any] = {}
        self.client_settings: dict[str, dict[str, Any]] = {}  # what each client reported it trained with
        self.round_offset = 0  # rounds completed before a resume
        self.last_report: dict[str, Any] = {}
        self.started = time.perf_counter()
        self.round_ends: list[float] = []
        self.write_s = 0.0  # writing the last round's model.pt and checkpoint, after its row was stamped
        write_json(self.dir / CONFIG_FILE, cfg.to_flat())
        logger.info("run folder: %s", self.dir.resolve())
        self.tracker = Tracker(cfg=cfg, run_dir=self.dir)  # tracking=none: does nothing

    def on_round(self, *, server_round: int, state_dict: dict[str, torch.Tensor], replies: RoundReplies,
                 client_eval: RoundReplies | None = None) -> dict[str, float]:
        """Evaluate, record and save one round (round 0 = the initial model). Returns scalar metrics."""
        if server_round == 0 and self.round_offset:  # resumed: the "initial" model is the checkpoint's
            return {k: self.rounds[-1][k] for k in _SCALAR_KEYS if k in self.rounds[-1]}
        server_round += self.round_offset
        eval_started = time.perf_counter()
        report = self.evaluator(state_dict)
        eval_s = time.perf_counter() - eval_started
        scalars = {k: float(report[k]) for k in _SCALAR_KEYS if k in report}
        if server_round == 0:
            self.initial = scalars
            logger.info("initial global model: accuracy %.4f on %s", scalars["accuracy"], report["split"])
            return scalars
        row: dict[str, Any] = {"round": server_round, **scalars,
                               "clients_sampled": replies.sent,
                               "clients_responded": len(replies.metrics),
                               "clients_failed": len(replies.errors),
                               "elapsed_s": round(time.perf_counter() - self.started, 2),
                               # where the round's time went (benchmarks/framework_overhead.py): the server's
                               # evaluation, and the previous round's writes (inside this row's elapsed_s span)
                               "eval_s": round(eval_s, 3), "write_s": round(self.write_s, 3)}
        trained = [TrainReply.from_metrics(m) for m in replies.metrics]  # the grid ignored malformed ones
        if trained and all(t.train_loss is not None for t in trained):  # sent without DP only
            n = sum(t.num_examples for t in trained) or 1
            row["train_loss"] = sum(t.train_loss * t.num_examples for t in trained) / n  # type: ignore[operator]
            row["train_accuracy"] = sum(t.train_accuracy * t.num_examples for t in trained) / n  # type: ignore[operator]
            if all(t.samples_seen is not None for t in trained):
                row["samples_seen"] = sum(int(t.samples_seen) for t in trained)  # type: ignore[arg-type]
            for key, attr in (("client_train_s", "train_seconds"), ("client_round_s", "round_seconds")):
                if all(getattr(t, attr) is not None for t in trained):  # summed: what one client at a time would take
                    row[key] = round(sum(float(getattr(t, attr)) for t in trained), 3)
        row.update(replies.aggregation)  # secure-aggregation: quantization error bound, clients summed, costs
        if replies.errors:
            row["errors"] = [e["reason"] for e in replies.errors]
        if replies.rejected:
            row["clients_rejected"] = [{k: r[k] for k in ("node_id", PARTITION_ID, "reason")}
                                       for r in replies.rejected]
        if client_eval is not None and client_eval.metrics:
            evaluated = [EvalReply.from_metrics(m) for m in client_eval.metrics]
            n = sum(e.num_examples for e in evaluated) or 1
            row["client_eval_accuracy"] = sum(e.accuracy * e.num_examples for e in evaluated) / n
            row["client_eval_loss"] = sum(e.loss * e.num_examples for e in evaluated) / n
        for key in ("macro_precision", "macro_recall", "group_gap"):
            if key in report:
                row[key] = report[key]
        row.update({k: report[k] for k in ("per_class", "confusion_matrix", "groups") if k in report})
        for m, t in zip(replies.metrics, trained):
            self.client_settings[client_key(m)] = t.settings
        # a rejected update was still trained: its privacy spending counts
        spent = replies.metrics + [m for r in replies.rejected for m in r["metrics"]]
        eps = self.ledger.record_round(server_round, spent, replies.errors)
        if eps is not None:
            row["epsilon_max"] = eps
            scalars["epsilon_max"] = eps
        self.rounds.append(row)
        self.last_report = report
        append_jsonl(self.dir / METRICS_FILE, row)
        self.tracker.round(row, per_client={k: v[-1]["epsilon"] for k, v in self.ledger.per_client.items() if v},
                           unit=self.ledger.unit)
        written = time.perf_counter()
        save_model(self.dir / MODEL_FILE, state_dict=state_dict, model=self.cfg.model,
                   model_options=model_options(self.cfg), config=self.cfg.to_flat(), server_round=server_round,
                   image_size=model_image_side(self.evaluator))
        self.write_s = time.perf_counter() - written
        self._progress(row)
        return scalars

    def add_write_time(self, seconds: float) -> None:
        """Seconds the server spent writing this round's checkpoint: recorded in the next round's ``write_s``."""
        self.write_s += seconds

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the record (restored by :meth:`restore`)."""
        return {"rounds": self.rounds, "initial": self.initial, "last_report": self.last_report,
                "client_settings": self.client_settings,
                "ledger": {"per_client": self.ledger.per_client, "per_round_max": self.ledger.per_round_max,
                           "refusals": self.ledger.refusals, "units": self.ledger.units}}

    def restore(self, state: Mapping[str, Any], *, completed_rounds: int) -> None:
        self.rounds = list(state["rounds"])
        self.initial = dict(state["initial"])
        self.last_report = dict(state["last_report"])
        self.client_settings = dict(state.get("client_settings", {}))
        self.ledger.per_client = dict(state["ledger"]["per_client"])
        self.ledger.per_round_max = list(state["ledger"]["per_round_max"])
        self.ledger.refusals = list(state["ledger"]["refusals"])
        self.ledger.units = dict(state["ledger"].get("units", {}))
        self.round_offset = completed_rounds
        # metrics.jsonl may hold rounds finished after the checkpoint was taken: rewrite it from the record
        write_jsonl(self.dir / METRICS_FILE, self.rounds)

    def _progress(self, row: Mapping[str, Any]) -> None:
        done, total = int(row["round"]) - self.round_offset, self.cfg.num_server_rounds - self.round_offset
        now = time.perf_counter()
        self.round_ends.append(now)
        elapsed = now - self.started
        # the first round carries the engine's start-up: estimate from later rounds when there are some
        spans = [b - a for a, b in zip(self.round_ends, self.round_ends[1:])] or [elapsed / done]
        eta = sum(spans) / len(spans) * (total - done)
        eps = (f" | epsilon {row['epsilon_max']:.2f} ({self.ledger.unit}-level, delta={self.cfg.target_delta:g})"
               if "epsilon_max" in row else "")
        logger.info("round %d/%d | accuracy %.4f | loss %.4f | clients %d/%d%s | elapsed %.0fs | ETA %.0fs",
                    int(row["round"]), self.cfg.num_server_rounds, row["accuracy"], row["loss"],
                    row["clients_responded"], row["clients_sampled"],
                    eps, elapsed, eta)

    def summary(self, *, client_eval: Mapping[int, Any] | None = None) -> dict[str, Any]:
        report = self.last_report
        out: dict[str, Any] = {
            "dataset": self.evaluator.describe(),
            "config": self.cfg.to_flat(),  # resolved: the values that ran (the DP recipe's included)
            "client_settings": dict(sorted(self.client_settings.items(), key=client_order)),
            "initial": self.initial,
            "rounds": self.rounds,
            "final": {k: report[k] for k in ("accuracy", "loss", "macro_f1", "weighted_f1", "macro_precision",
                                             "macro_recall", "per_class", "confusion_matrix", "n", "split")
                      if k in report},
            "model": {"name": self.cfg.model, "options": model_options(self.cfg), "path": MODEL_FILE},
            **({"groups": report["groups"], "group_gap": report["group_gap"]} if "groups" in report else {}),
            **({"left_out_group": self.cfg.leave_out_group} if self.cfg.leave_out_group else {}),
            "seconds": round(time.perf_counter() - self.started, 2),
        }
        one_class = one_class_prediction(report["confusion_matrix"]) if "confusion_matrix" in report else None
        if one_class:
            out["final"]["one_class"] = one_class
        rejected = sum(len(r.get("clients_rejected", ())) for r in self.rounds)
        if rejected:
            out["rejected_updates"] = rejected
        if self.ledger.enabled:
            out["epsilon"] = self.ledger.summary()
        if client_eval:
            out["client_evaluation"] = [{"round": int(r), **dict(m)} for r, m in sorted(client_eval.items())]
        return out

    def fail(self, *, server_round: int, reason: str, replies: RoundReplies) -> None:
        """Record a failed round in ``failure.json``; model.pt and the checkpoint keep the last good round."""
        write_json(self.dir / FAILURE_FILE, {
            "round": server_round + self.round_offset, "reason": reason,
            "last_good_round": self.rounds[-1]["round"] if self.rounds else 0,
            "clients_sampled": replies.sent, "clients_trained": len(replies.metrics),
            "errors": replies.errors})
        logger.error("%s; the run stops (model.pt and checkpoint.pt keep the last completed round)", reason)

    def finish(self, *, client_eval: Mapping[int, Any] | None = None) -> dict[str, Any]:
        summary = self.summary(client_eval=client_eval)
        write_json(self.dir / SUMMARY_FILE, summary)
        final = summary["final"]
        dataset = summary["dataset"]
        logger.info("finished: %s accuracy %.4f, macro-F1 %.4f on %s%s; results in %s",
                    dataset["name"] + (" [SYNTHETIC]" if dataset["synthetic"] else ""),
                    final.get("accuracy", float("nan")), final.get("macro_f1", float("nan")),
                    final.get("split", "?"),
                    f", epsilon {summary['epsilon']['final_max']:.3f} ({summary['epsilon']['label']})"
                    if "epsilon" in summary else "",
                    self.dir / SUMMARY_FILE)
        if "one_class" in final:
            logger.warning("%s", one_class_warning(final))
        self.tracker.finish(rounds=len(self.rounds) and int(self.rounds[-1]["round"]), final=final)
        return summary
