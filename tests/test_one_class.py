"""A final model that predicts one class for more than 90% of the images it is scored on is flagged: in
summary.json (``final.one_class``), the server log, the console headline and report.md (issue 34 item 6)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from fer_models.common.labels import EMOTIONS
from fer_models.config import RunConfig
from fer_models.training.metrics import classification_report, one_class_prediction
from server.recorder import RunRecorder
from simulation.commands.headline import one_class_line, run_headline
from simulation.reports.report import write_report
from tests.test_report import make_run


def _labels(n: int = 200) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 7, size=n)


def test_a_predicted_class_over_nine_tenths_of_the_images_is_flagged_and_one_at_nine_tenths_is_not() -> None:
    y = _labels()
    happy = np.full_like(y, EMOTIONS.index("happy"))
    flag = one_class_prediction(classification_report(y_true=y, y_pred=happy)["confusion_matrix"])
    assert flag == {"class": "happy", "share": 1.0, "threshold": 0.9}
    just_under = happy.copy()
    just_under[:20] = EMOTIONS.index("sad")  # 180 / 200 = exactly 90%: not over it
    assert one_class_prediction(classification_report(y_true=y, y_pred=just_under)["confusion_matrix"]) is None
    just_under[19] = EMOTIONS.index("happy")  # 181 / 200
    assert one_class_prediction(classification_report(y_true=y, y_pred=just_under)["confusion_matrix"])["share"] == 0.905
    assert one_class_prediction(classification_report(y_true=y, y_pred=y)["confusion_matrix"]) is None  # control


class _Evaluator:
    def describe(self) -> dict:
        return {"name": "fer2013", "synthetic": False}


def _recorder(tmp_path: Path, y_pred: np.ndarray) -> RunRecorder:
    rec = RunRecorder(cfg=RunConfig.from_flat({"out-dir": str(tmp_path / "run")}), evaluator=_Evaluator())
    y = _labels()
    rec.last_report = {**classification_report(y_true=y, y_pred=y_pred), "loss": 1.9, "split": "test"}
    return rec


def test_the_recorder_writes_the_flag_into_summary_json_and_warns_in_the_log(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="server.recorder"):
        summary = _recorder(tmp_path, np.zeros(200, dtype=np.int64)).finish()
    assert summary["final"]["one_class"]["class"] == EMOTIONS[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final"]["one_class"]["share"] == 1.0
    assert any("collapsed onto one class" in r.getMessage() for r in caplog.records)
    assert "collapsed onto one class" in one_class_line(summary)
    assert run_headline(summary=summary, run_dir=tmp_path)["final"]["one_class"]["class"] == EMOTIONS[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.recorder"):  # control: a model that tells classes apart
        summary = _recorder(tmp_path / "ok", _labels()).finish()
    assert "one_class" not in summary["final"] and one_class_line(summary) is None and not caplog.records


def test_report_md_warns_about_a_one_class_model_and_not_about_others(tmp_path: Path) -> None:
    flagged = make_run(tmp_path / "flagged", synthetic=False)
    summary = json.loads((flagged / "summary.json").read_text())
    summary["final"]["one_class"] = {"class": "happy", "share": 0.97, "threshold": 0.9}
    (flagged / "summary.json").write_text(json.dumps(summary))
    fine = make_run(tmp_path / "fine", synthetic=False)
    write_report(run_dir=flagged)
    write_report(run_dir=fine)
    assert "**Warning:** the final model predicts happy for 97%" in (flagged / "report.md").read_text()
    assert "**Warning:**" not in (fine / "report.md").read_text()
