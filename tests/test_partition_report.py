"""`fedfer partition` shows each client's share and the label skew, and saves them."""

from __future__ import annotations

import json

from PIL import Image

from simulation.commands.cli import main


def test_partition_command_writes_table_json_and_heatmap(tmp_path, capsys, cache_dir):
    out = tmp_path / "p"
    rc = main(["partition", "--set", "partition=dirichlet", "--set", "dirichlet-alpha=0.3", "--set", "num-clients=5",
               "--set", "synthetic-per-class=30", "--set", "synthetic-eval-per-class=5", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "mean label entropy" in printed
    report = json.loads((out / "partition.json").read_text())
    assert report["num_clients"] == 5 and sum(c["size"] for c in report["clients"]) == 7 * 30
    assert all(sum(c["labels"].values()) == c["size"] for c in report["clients"])
    with Image.open(out / "partition.png") as img:
        assert img.size[0] > 100


def test_label_skew_shows_in_the_report_as_alpha_shrinks(tmp_path, cache_dir):
    entropies = []
    for alpha in ("100", "0.1"):
        out = tmp_path / alpha
        assert main(["partition", "--set", "partition=dirichlet", "--set", f"dirichlet-alpha={alpha}",
                     "--set", "num-clients=4", "--set", "synthetic-per-class=40", "--set", "synthetic-eval-per-class=5",
                     "--set", "min-client-samples=1", "--out", str(out)]) == 0
        entropies.append(json.loads((out / "partition.json").read_text())["mean_label_entropy_bits"])
    assert entropies[0] > entropies[1] + 0.5
