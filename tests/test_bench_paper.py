"""fedfer bench paper: the grid file, the equal-budget rule, resume/skip and the table (no Flower run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_models.config import ConfigError
from simulation.bench.bench_grid import Cell, GridError, check_equal_budget, load_grid, select_cells
from simulation.bench.bench_runner import CELL_FILE, cell_argv, run_cells
from simulation.bench.bench_table import cell_figures, markdown_table, notes
from simulation.commands.cli import main

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper.yaml"
DATA = "/data/fer2013"

GRID = """
common:
  seed: 1
strategies:
  cnn_rnn: {model: cnn_rnn}
  cnn_attention: {model: cnn_attention}
settings:
  centralized: {num-clients: 1}
  iid: {num-clients: 4, partition: iid}
profiles:
  cpu: {epochs: 4, max-train-samples: 100, budget-minutes: 60}
  two: {epochs: 4, local-epochs: 2}
"""


def _grid(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


# --- the grid file ------------------------------------------------------------------------------

def test_paper_grid_has_the_twelve_cells_of_the_issue():
    grid = load_grid(PAPER)
    assert set(grid.profiles) >= {"cpu", "gpu"}
    cells = {c.name: c.values for c in grid.cells("cpu")}
    assert len(cells) == 12
    assert cells["cnn_rnn/centralized"]["model"] == "cnn_rnn" and cells["cnn_rnn/centralized"]["num-clients"] == 1
    assert cells["cnn_attention/iid"]["model"] == "cnn_attention" and cells["cnn_attention/iid"]["partition"] == "iid"
    assert cells["cnn_rnn_aug/dirichlet"]["augment"] == "standard"
    assert cells["cnn_rnn_aug/dirichlet"]["dirichlet-alpha"] == 0.5
    assert {v["pretrain-epochs"] for v in cells.values()} == {8}  # the warm start, the DP cells' recipe value too
    dp = cells["cnn_rnn/dp"]
    assert (dp["dp"], dp["target-epsilon"], dp["target-delta"], dp["partition"], dp["num-clients"]) == \
        ("sample", 8.0, 1e-5, "dirichlet", 10)
    gpu = {c.name: c.values for c in grid.cells("gpu")}
    assert gpu["cnn_rnn/iid"]["clip-length"] == 3 and gpu["cnn_rnn/iid"]["clip-source"] == "pseudo"
    assert cells["cnn_rnn/iid"]["clip-length"] == 1
    # the federated recipe in the non-private cells: FedAvgM 0.5, client optimizer state, a third of an epoch
    iid = cells["cnn_rnn_aug/iid"]
    assert (iid["strategy"], iid["server-momentum"], iid["optimizer-state"], iid["frontend"]) == \
        ("fedavgm", 0.5, "client", "scatter")
    assert (iid["local-epoch-fraction"], iid["num-server-rounds"]) == (0.33333, 9)
    assert "strategy" not in dp and "optimizer-state" not in dp  # the DP recipe's and FedAvg
    assert (dp["num-server-rounds"], dp["local-epochs"], dp["local-epoch-fraction"]) == (3, 1, 0.0)  # whole epochs


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_every_cell_of_a_profile_gets_the_same_sample_gradient_epochs(profile):
    grid = load_grid(PAPER)
    epochs = int(grid.profiles[profile]["epochs"])
    cells = grid.cells(profile)
    assert {c.epochs for c in cells} == {epochs}
    assert len({c.values["max-train-samples"] for c in cells}) == 1
    for c in cells:
        v = c.values
        assert v["fraction-train"] == 1.0
        if v["num-clients"] == 1:
            assert (v["num-server-rounds"], v["local-epochs"]) == (epochs, 1)


def test_local_epochs_divide_the_federated_rounds_but_not_the_centralized_ones(tmp_path):
    cells = {c.name: c.values for c in load_grid(_grid(tmp_path)).cells("two")}
    assert (cells["cnn_rnn/centralized"]["num-server-rounds"], cells["cnn_rnn/centralized"]["local-epochs"]) == (4, 1)
    assert (cells["cnn_rnn/iid"]["num-server-rounds"], cells["cnn_rnn/iid"]["local-epochs"]) == (2, 2)
    with pytest.raises(GridError, match="not a whole number of federated rounds"):
        load_grid(_grid(tmp_path, GRID.replace("local-epochs: 2", "local-epochs: 3")))


def test_a_federated_fraction_samples_clients_and_keeps_the_budget_equal(tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("local-epochs: 2", "local-epochs: 1, federated-fraction: 0.5")))
    cells = {c.name: c for c in grid.cells("two")}
    iid, central = cells["cnn_rnn/iid"], cells["cnn_rnn/centralized"]
    assert (iid.values["num-server-rounds"], iid.values["fraction-train"]) == (8, 0.5)  # 4 epochs / (1 x 0.5)
    assert (central.values["num-server-rounds"], central.values["fraction-train"]) == (4, 1.0)
    assert iid.epochs == central.epochs == 4
    with pytest.raises(GridError, match="federated-fraction must be a number"):
        load_grid(_grid(tmp_path, GRID.replace("local-epochs: 2", "federated-fraction: 1.5"))).cells("two")


def test_a_local_epoch_fraction_plans_more_rounds_of_each_clients_part_epoch(tmp_path):
    grid = load_grid(_grid(tmp_path, GRID.replace("local-epochs: 2", "local-epoch-fraction: 0.33333")))
    cells = {c.name: c for c in grid.cells("two")}
    iid, central = cells["cnn_rnn/iid"], cells["cnn_rnn/centralized"]
    # 4 epochs / (1/3 of an epoch) = 12 federated rounds; centralized keeps 4 whole epochs
    assert (iid.values["num-server-rounds"], iid.values["local-epoch-fraction"], iid.values["local-epochs"]) == \
        (12, 0.33333, 1)
    assert (central.values["num-server-rounds"], central.values["local-epoch-fraction"]) == (4, 0.0)
    assert iid.epochs == central.epochs == 4.0
    for bad, words in [("local-epoch-fraction: 0.3", "not a whole number of federated rounds"),
                       ("local-epoch-fraction: 1.5", "must be a number in"),
                       ("local-epochs: 1, local-epoch-fraction: 0.5", "both size")]:
        with pytest.raises(GridError, match=words):
            load_grid(_grid(tmp_path, GRID.replace("local-epochs: 2", bad)))


def test_a_setting_may_size_its_own_rounds_and_keeps_the_budget(tmp_path):
    text = GRID.replace("local-epochs: 2", "local-epoch-fraction: 0.33333").replace(
        "  iid: {num-clients: 4, partition: iid}",
        "  iid: {num-clients: 4, partition: iid}\n  whole: {num-clients: 4, partition: iid, local-epochs: 2}")
    cells = {c.name: c for c in load_grid(_grid(tmp_path, text)).cells("two")}
    iid, whole = cells["cnn_rnn/iid"].values, cells["cnn_rnn/whole"].values
    assert (iid["num-server-rounds"], iid["local-epoch-fraction"]) == (12, 0.33333)  # the profile's local work
    assert (whole["num-server-rounds"], whole["local-epochs"], whole["local-epoch-fraction"]) == (2, 2, 0.0)
    assert {c.epochs for c in cells.values()} == {4.0}
    with pytest.raises(GridError, match="cnn_rnn/whole: epochs=4 is not a whole number"):
        load_grid(_grid(tmp_path, text.replace("local-epochs: 2}", "local-epochs: 3}")))
    with pytest.raises(GridError, match="common: 'local-epochs' .*belongs in profiles, strategies or settings"):
        load_grid(_grid(tmp_path, GRID.replace("  seed: 1", "  seed: 1\n  local-epochs: 1")))


def test_computed_sample_gradients_count_a_part_epoch_per_round():
    values = {"num-server-rounds": 12, "local-epochs": 1, "local-epoch-fraction": 0.33333, "fraction-train": 1.0}
    partition = {"clients": [{"size": 600}, {"size": 300}]}
    figures = cell_figures(summary=_fake_summary(values), partition=partition)
    assert (figures["sample_gradients"], figures["sample_gradients_source"]) == (4 * 900, "computed")
    text = notes(profile="p", budget={"epochs": 4, "local-epoch-fraction": 0.33333}, rows=[{**figures}],
                 cores=2, total_wall_s=60.0, grid="g")
    assert "12 rounds x local-epoch-fraction 0.33333 of each client's own epoch" in text
    own = {**cell_figures(summary=_fake_summary({**values, "num-server-rounds": 4, "local-epoch-fraction": 0.0,
                                                "num-clients": 4}), partition=partition), "cell": "a/dp"}
    rows = [{**figures, "cell": "a/iid", "clients": 4}, own]
    text = notes(profile="p", budget={"epochs": 4, "local-epoch-fraction": 0.33333}, rows=rows, cores=2,
                 total_wall_s=60.0, grid="g")
    assert "their own local work" in text and "a/dp: 4 rounds x local-epochs 1." in text and "a/iid:" not in text
    steps = {**values, "local-epoch-fraction": 0.0, "local-steps": 9}  # the bench cannot plan those: no count
    assert cell_figures(summary=_fake_summary(steps), partition=partition)["sample_gradients"] is None


def test_unequal_budgets_are_refused():
    same = {"fraction-train": 1.0, "local-epochs": 1, "max-train-samples": 0}
    cells = [Cell("a", "x", {**same, "num-server-rounds": 4}), Cell("a", "y", {**same, "num-server-rounds": 3})]
    with pytest.raises(GridError, match="same sample gradients"):
        check_equal_budget(cells)


@pytest.mark.parametrize("bad, words", [
    ("  cnn_rnn: {modle: cnn_rnn}", ["strategies.cnn_rnn", "'modle'", "'model'"]),
    ("  cpu: {epoch: 4}", ["profiles.cpu", "'epoch'", "'epochs'"]),
    ("  iid: {num-clients: 4, num-server-rounds: 9}", ["settings.iid", "num-server-rounds", "epochs"]),
    ("  iid: {num-clients: 4, local-steps: 9}", ["settings.iid", "local-steps", "epochs"]),
    ("  cnn_rnn: {model: cnn_rnn, max-train-samples: 10}", ["strategies.cnn_rnn", "max-train-samples", "profiles"]),
    ("  cnn_rnn: {model: cnn_rnn, batch-size: big}", ["cnn_rnn/centralized", "batch-size", "integer"]),
    ("  iid: {num-clients: 4, dp: sample, target-epsilon: 8, batch-size: 32}", ["cnn_rnn/iid", "batch-size", "recipe"]),
])
def test_bad_keys_are_named_with_the_file(tmp_path, bad, words):
    head = bad.split(":")[0]
    lines = [bad if line.startswith(head + ":") else line for line in GRID.splitlines()]
    with pytest.raises(ConfigError) as info:
        load_grid(_grid(tmp_path, "\n".join(lines)))
    msg = str(info.value)
    assert "grid.yaml" in msg and all(w in msg for w in words), msg


def test_unknown_section_and_cli_exit(tmp_path, capsys):
    path = _grid(tmp_path, GRID.replace("strategies:", "strategy:"))
    with pytest.raises(GridError, match="did you mean 'strategies'"):
        load_grid(path)
    rc = main(["bench", "paper", "--profile", "cpu", "--data", str(tmp_path), "--grid", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "grid.yaml" in err and "strategy" in err and "Traceback" not in err


def test_set_changes_every_cell_and_only_selects(tmp_path):
    grid = load_grid(_grid(tmp_path))
    cells = grid.cells("cpu", sets={"epochs": "1", "max-train-samples": "50"})
    assert {c.epochs for c in cells} == {1.0} and {c.values["max-train-samples"] for c in cells} == {50}
    with pytest.raises(GridError, match="local-epochs"):
        grid.cells("cpu", sets={"local-epoch": "1"})
    with pytest.raises(GridError, match="no profile 'cpux'.*'cpu'"):
        grid.cells("cpux")
    assert [c.name for c in select_cells(cells, "cnn_rnn/*,cnn_attention/iid")] == \
        ["cnn_rnn/centralized", "cnn_rnn/iid", "cnn_attention/iid"]
    with pytest.raises(GridError, match="matches no cell.*did you mean 'cnn_rnn/iid'"):
        select_cells(cells, "cnn_rnn/idd")


# --- running: skip, resume, failures -----------------------------------------------------------------

def _fake_summary(values: dict, *, data: str = DATA, acc: float = 0.5) -> dict:
    rounds = int(values["num-server-rounds"])
    out = {"dataset": {"name": "fer2013"}, "config": {**values, "data-path": data},
           "rounds": [{"round": r + 1} for r in range(rounds)], "seconds": 3.0,
           "final": {"accuracy": acc, "macro_precision": 0.4, "macro_recall": 0.3, "macro_f1": 0.35,
                     "split": "test", "n": 3589}}
    if values.get("dp") == "sample":
        out["epsilon"] = {"final_max": 7.99, "delta": 1e-5}
    return out


class FakeRunner:
    """Stands in for `fedfer simulate`: writes what a finished run writes; fails cells named in ``fail``."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.fail, self.calls = fail, []

    def __call__(self, argv, log_path: Path) -> int:
        self.calls.append(list(argv))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        run_dir = Path(argv[argv.index("--out") + 1] if "--out" in argv else argv[argv.index("--resume") + 1])
        if any(name in str(run_dir) for name in self.fail):
            log_path.write_text("starting\nfedfer simulate: error: boom\n")
            return 2
        log_path.write_text("ok\n")
        values = dict(a.split("=", 1) for a, flag in zip(argv[1:], argv) if flag == "--set")
        from fer_models.config import RunConfig
        flat = RunConfig.from_flat(values).to_flat()
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "summary.json").write_text(json.dumps(_fake_summary({k: flat[k] for k in values},
                                                                       data=argv[argv.index("--data") + 1])))
        (run_dir / "partition.json").write_text(json.dumps({"clients": [{"size": 60}, {"size": 40}]}))
        return 0


def test_failed_cells_are_recorded_and_a_second_bench_runs_only_what_is_missing(tmp_path):
    cells = load_grid(_grid(tmp_path)).cells("cpu")
    runner = FakeRunner(fail=("cnn_rnn-iid",))
    ticks = iter(range(0, 1000, 10))
    records = run_cells(cells, out_dir=tmp_path / "out", data=DATA, runner=runner, clock=lambda: next(ticks))
    assert [r["status"] for r in records] == ["done", "failed", "done", "done"]
    failed = records[1]
    assert "boom" in failed["error"] and failed["log"].endswith("cnn_rnn-iid.log") and Path(failed["log"]).is_file()
    assert records[0]["wall_s"] == 10
    assert json.loads((tmp_path / "out" / "cnn_rnn-centralized" / CELL_FILE).read_text())["wall_s"] == 10

    again = FakeRunner()
    records = run_cells(cells, out_dir=tmp_path / "out", data=DATA, runner=again)
    assert [r["status"] for r in records] == ["skipped", "done", "skipped", "skipped"]
    assert len(again.calls) == 1 and "cnn_rnn-iid" in again.calls[0][again.calls[0].index("--out") + 1]
    assert records[0]["wall_s"] == 10  # kept from the first bench

    forced = FakeRunner()
    run_cells(cells, out_dir=tmp_path / "out", data=DATA, runner=forced, overwrite=True)
    assert len(forced.calls) == 4 and all("--overwrite" in c for c in forced.calls)


def test_results_of_other_settings_are_not_overwritten(tmp_path):
    grid = load_grid(_grid(tmp_path))
    run_cells(grid.cells("cpu"), out_dir=tmp_path / "out", data=DATA, runner=FakeRunner())
    runner = FakeRunner()
    records = run_cells(grid.cells("cpu", sets={"epochs": "2"}), out_dir=tmp_path / "out", data=DATA, runner=runner)
    assert not runner.calls and {r["status"] for r in records} == {"failed"}
    assert "num-server-rounds" in records[0]["error"] and "--overwrite" in records[0]["error"]


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path):
    cell = load_grid(_grid(tmp_path)).cells("cpu")[0]
    run_dir = tmp_path / "out" / cell.dirname
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({**cell.values, "data-path": DATA}))
    (run_dir / "checkpoint.pt").write_bytes(b"x")
    runner = FakeRunner()
    records = run_cells([cell], out_dir=tmp_path / "out", data=DATA, runner=lambda argv, log: runner.calls.append(argv) or 1)
    assert runner.calls[0][-2:] == ["--resume", str(run_dir)] and records[0]["status"] == "failed"
    resumed = FakeRunner()
    (run_dir / "summary.json").unlink(missing_ok=True)
    records = run_cells([cell], out_dir=tmp_path / "out", data=DATA,
                        runner=lambda argv, log: resumed(cell_argv(cell, data=DATA, run_dir=run_dir, resume=False), log))
    assert records[0]["status"] == "done" and records[0]["resumed"] is True
    row = {"strategy": "s", "setting": "t", **records[0], "accuracy": 0.5}
    assert "| 0* |" in markdown_table([row]) and "resumed" in notes(
        profile="cpu", budget={"epochs": 1}, rows=[row], cores=2, total_wall_s=1.0, grid="g")
    fresh = cell_argv(cell, data=DATA, run_dir=run_dir, resume=False)
    assert "--overwrite" in fresh and f"num-server-rounds={cell.values['num-server-rounds']}" in fresh


# --- the table ----------------------------------------------------------------------------------------

def test_table_figures_from_fake_summaries(tmp_path):
    cells = load_grid(PAPER).cells("cpu")
    budget = load_grid(PAPER).profile("cpu")
    epochs = int(budget["epochs"])
    partition = {"clients": [{"size": 20000}, {"size": 8709}]}
    rows = []
    for i, cell in enumerate(cells):
        row = {"cell": cell.name, "strategy": cell.strategy, "setting": cell.setting, "status": "done",
               "log": f"logs/{cell.dirname}.log"}
        if i == 1:
            row.update(status="failed", error="exit code 2: boom")
        elif i == 2:
            row.update(status="not run")
        else:
            row.update(cell_figures(summary=_fake_summary(dict(cell.values), acc=0.5 + i / 100), partition=partition,
                                    wall_s=100.0))
        rows.append(row)
    assert rows[0]["sample_gradients"] == epochs * 28709 and rows[0]["sample_gradients_source"] == "computed"
    assert rows[3]["epsilon"] == 7.99 and rows[0]["epsilon"] is None
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + 12 and "macro precision" in lines[0] and "macro-F1" in lines[0]
    assert "| cnn_rnn | centralized | 0.5000 | 0.4000 | 0.3000 | 0.3500 | - | " in lines[2]
    assert "FAILED" in lines[3] and "not run" in lines[4] and "| 7.99 |" in lines[5]
    text = notes(profile="cpu", budget=budget, rows=rows, cores=2, total_wall_s=1000.0, grid="experiments/paper.yaml")
    assert f"{epochs} epochs" in text and "28,709 training images" in text and "Clip length 1" in text
    assert "2 cores" in text and "under 60 min" in text and "met" in text and "samples-seen" in text
    assert "PrivateTest (n = 3,589)" in text and "boom" in text and "Not run: cnn_rnn/dirichlet" in text


def test_recorded_samples_seen_are_preferred():
    summary = _fake_summary({"num-server-rounds": 2, "local-epochs": 1, "fraction-train": 1.0})
    for r in summary["rounds"]:
        r["samples_seen"] = 7
    assert cell_figures(summary=summary, partition=None)["sample_gradients"] == 14


def test_trial_tables_stay_out_of_benchmark_results(tmp_path):
    from simulation.commands.cmd_bench import record_table

    calls = []
    kwargs = dict(profile="cpu", budget={"epochs": 1}, rows=[], out_dir=tmp_path / "out", grid="g.yaml",
                  write_results=lambda name, **kw: calls.append(name) or (Path("a"), Path("b")))
    record_table(trial=True, **kwargs)
    assert not calls and (tmp_path / "out" / "table.md").is_file() and (tmp_path / "out" / "bench.json").is_file()
    record_table(trial=False, **kwargs)
    assert calls == ["paper_cpu"]


def test_collect_builds_results_md_from_every_results_file(tmp_path):
    from benchmarks.collect import build

    (tmp_path / "b.md").write_text("# b\n\n`cmd b` at commit ...\n\n| x |\n")
    (tmp_path / "a.md").write_text("# a\n\ntable a\n")
    (tmp_path / "a.json").write_text(json.dumps({"command": "python a.py", "commit": "0123456789abc", "date": "d"}))
    text = build(results_dir=tmp_path)
    assert text.startswith("# Benchmark results") and "do not edit by hand" in text
    assert text.index("## a") < text.index("## b") and "table a" in text and "| x |" in text
    assert "`python a.py` | `0123456789` | d" in text


def test_bench_command_end_to_end_with_a_fake_runner(tmp_path, monkeypatch, caplog):
    import simulation.bench.bench_runner as bench_runner

    real = bench_runner.run_cells
    runner = FakeRunner(fail=("cnn_attention-iid",))
    monkeypatch.setattr(bench_runner, "run_cells", lambda cells, **kw: real(cells, runner=runner, **kw))
    out = tmp_path / "out"
    argv = ["bench", "paper", "--profile", "cpu", "--data", str(tmp_path), "--grid", str(_grid(tmp_path)),
            "--out", str(out), "--set", "epochs=1", "--only", "cnn_attention/*"]
    assert main(argv) == 1  # one cell failed
    table = (out / "table.md").read_text()
    assert "| cnn_attention | centralized | 0.5000 |" in table and "| cnn_attention | iid | FAILED |" in table
    assert "| cnn_rnn | iid | not run |" in table and "boom" in table
    cells = json.loads((out / "bench.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["not run", "not run", "done", "failed"]
    assert "trial" in caplog.text and "not in benchmarks/results" in caplog.text


def test_the_real_runner_appends_each_attempt_to_the_log(tmp_path):
    import sys

    from simulation.bench.bench_runner import run_subprocess

    log = tmp_path / "logs" / "cell.log"
    assert run_subprocess([sys.executable, "-c", "print('round 1/1 | ETA 0s')"], log) == 0
    assert run_subprocess([sys.executable, "-c", "import sys; sys.exit(3)"], log) == 3
    text = log.read_text()
    assert text.count("=== ") == 2 and "round 1/1 | ETA 0s" in text
