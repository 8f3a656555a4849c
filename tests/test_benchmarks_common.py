"""benchmarks.common: markdown_table's exact output on tiny tables; tree_memory (no training)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks.common import markdown_table, tree_memory
from benchmarks.framework_overhead import mean_phases

COLUMNS = [("model", "model", ""), ("params", "params", ","), ("accuracy", "accuracy", ".4f")]


def test_rows_are_formatted_with_each_columns_spec():
    rows = [{"model": "cnn", "params": 98295, "accuracy": 0.123456},
            {"model": "cnn_rnn", "params": 135095, "accuracy": 1.0, "unused": "x"}]
    assert markdown_table(rows, COLUMNS) == (
        "| model | params | accuracy |\n"
        "|---|---|---|\n"
        "| cnn | 98,295 | 0.1235 |\n"
        "| cnn_rnn | 135,095 | 1.0000 |")


def test_missing_values_are_blank_and_failed_rows_say_so():
    rows = [{"model": "a", "params": 1},
            {"model": "b", "accuracy": None, "error": "RuntimeError: boom"},
            {"model": "c|d", "params": 2, "accuracy": 0.5}]
    assert markdown_table(rows, COLUMNS).splitlines()[2:] == [
        "| a | 1 |  |",
        "| b | failed | failed |",
        "| c\\|d | 2 | 0.5000 |"]


def test_no_rows_gives_the_header_only():
    assert markdown_table([], [("x", "x", "d")]) == "| x |\n|---|"


def test_tree_memory_counts_the_process_and_its_children():
    alone = tree_memory(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        both = tree_memory(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert alone["procs"] >= 1 and alone["rss"] > 0 and alone["pss"] > 0
    assert both["procs"] >= alone["procs"] + 1 and both["rss"] > alone["rss"]


def test_a_rounds_time_splits_into_phases_and_the_rest():
    rows = [{"client_train_s": 4.0, "client_round_s": 5.0, "eval_s": 1.0, "write_s": 0.2},
            {"client_train_s": 6.0, "client_round_s": 7.0, "eval_s": 1.2, "write_s": 0.4}]
    phases = mean_phases(rows, per_round=9.0)
    assert phases == pytest.approx({"client_train_s": 5.0, "client_setup_s": 1.0, "eval_s": 1.1, "write_s": 0.3,
                                    "rest_s": 9.0 - 5.0 - 1.0 - 1.1 - 0.3})
    assert mean_phases([{"eval_s": 1.0}], per_round=2.0) is None  # under DP the clients send no timing
