"""The console headline `fedfer simulate` and `deploy-local` print at the end of a run (one function for both)."""

from __future__ import annotations

from simulation.commands.headline import text_headline

SUMMARY = {"dataset": {"name": "fer2013", "synthetic": False}, "rounds": [{}, {}, {}],
           "final": {"split": "test", "accuracy": 0.61234, "macro_f1": 0.5, "n": 100}}


def test_the_headline_names_the_split_accuracy_rounds_and_where_it_ran() -> None:
    assert text_headline(SUMMARY, where=" on 3 SuperNodes") == [
        "\nfer2013: final test accuracy 0.6123, macro-F1 0.5000 after 3 rounds on 3 SuperNodes"]


def test_sites_epsilon_and_a_one_class_model_get_their_own_lines() -> None:
    summary = {**SUMMARY, "dataset": {"name": "synthetic", "synthetic": True},
               "final": {**SUMMARY["final"], "one_class": {"class": "happy", "share": 0.95, "threshold": 0.9}},
               "groups": {"a": {"accuracy": 0.5, "n": 10}, "b": {"accuracy": 0.7, "n": 20}}, "group_gap": 0.2,
               "epsilon": {"final_max": 7.9876, "label": "sample-level, delta=1e-05, each client", "delta": 1e-5}}
    lines = text_headline(summary)
    assert lines[0].startswith("\nsynthetic (SYNTHETIC faces): final test accuracy 0.6123")
    assert lines[1].startswith("WARNING: the final model predicts happy for 95%")
    assert lines[2] == "per site: a 0.5000 (n=10), b 0.7000 (n=20); gap 0.2000"
    assert lines[3] == "privacy: epsilon 7.988 (sample-level, delta=1e-05, each client)"
