"""benchmarks/cultures.py: method parsing, the per-method figures and the comparison against the reference."""

from __future__ import annotations

import pytest

from benchmarks.cultures import comparison_rows, fear_as_surprise, parse_method, summarize


def _confusion(fear_row: list[int]) -> list[list[int]]:
    m = [[0] * 7 for _ in range(7)]
    m[2] = fear_row
    return m


def _summary(groups: dict[str, float], pooled: float) -> dict:
    return {"final": {"accuracy": pooled, "n": 10, "confusion_matrix": _confusion([0, 0, 3, 0, 0, 1, 0])},
            "groups": {g: {"accuracy": a, "n": 5, "confusion_matrix": _confusion([0, 0, 1, 0, 0, 1, 0])}
                       for g, a in groups.items()}}


def test_a_method_is_a_name_and_its_settings():
    assert parse_method("fedavg") == ("fedavg", [])
    assert parse_method("aug-cos: augment=standard lr-schedule=cosine") == ("aug-cos", ["augment=standard",
                                                                                        "lr-schedule=cosine"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_method("bad: augment")
    with pytest.raises(SystemExit, match="name"):
        parse_method("a/b: augment=standard")


def test_worst_site_gap_and_held_out_come_from_the_right_runs():
    together = _summary({"a": 0.8, "b": 0.4, "c": 0.5}, pooled=0.45)
    held = {g: _summary({}, pooled=acc) for g, acc in {"a": 0.3, "b": 0.2, "c": 0.1}.items()}
    m = summarize(together, held)
    assert (m["worst_site"], m["worst_accuracy"], m["average"]) == ("b", 0.4, 0.45)
    assert m["gap"] == pytest.approx(0.4) and m["site_mean"] == pytest.approx(1.7 / 3)
    assert m["held_mean"] == pytest.approx(0.2)
    assert [r["held"] for r in m["rows"]] == [0.3, 0.2, 0.1]
    assert m["rows"][1]["ci_in"] == pytest.approx(1.96 * (0.4 * 0.6 / 5) ** 0.5)
    assert m["rows"][0]["fear_in"] == 0.5 and m["rows"][0]["fear_held"] == 0.25
    assert fear_as_surprise([[0] * 7 for _ in range(7)]) is None


def test_a_method_meets_the_goal_only_with_5_points_on_the_worst_site_and_at_most_1_off_the_average():
    ref = {"worst_site": "b", "worst_accuracy": 0.40, "average": 0.50, "site_mean": 0.5, "gap": 0.3, "held_mean": 0.3}
    methods = {"fedavg": ref,
               "good": {**ref, "worst_accuracy": 0.451, "average": 0.491},
               "costly": {**ref, "worst_accuracy": 0.47, "average": 0.48},
               "small": {**ref, "worst_accuracy": 0.44, "average": 0.60}}
    rows = {r["method"]: r for r in comparison_rows(methods)}
    assert rows["fedavg"]["d_worst"] == 0 and rows["fedavg"]["meets"] == "no"
    assert rows["good"]["d_worst"] == pytest.approx(5.1) and rows["good"]["meets"] == "yes"
    assert rows["costly"]["meets"] == "no" and rows["small"]["meets"] == "no"
