"""`fedfer deploy-local --site`: three real sites, each SuperNode given only its own folder, a server with no data.

The SuperLink, the ServerApp and the run config get no data path at all: the run still trains, and
evaluates through the sites (federated evaluation), with per-site accuracy and the gap in
summary.json and report.md. A fourth site whose path does not exist stops with the reason, and
the run goes on with the other three (min-train-clients=3). With --auth, each site's folder (node
config, private key, SuperNode log) lies beside the run folder, and the run folder holds no private key and
no site's data path: the broken site's reply carries a generic reason only (the detail stays in its
SuperNode's log).

This deployment is also the suite's check of `fedfer deploy-local` end to end over TLS (--auth turns TLS on):
the SuperLink serves https, each SuperNode is given the CA certificate, flwr's config names it, the console
ends with the final accuracy, and nothing started is left running.

One round: the deployment engine starts a ClientApp process on every node for each message (the initial
evaluation, then train and evaluate per round), ~45 s a message on 2 cores, and a second round proves no more.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from fer_models.federation.wire import CLIENT_REASONS, SITE_DATA_ERROR
from tests.procs import ROOT, fedfer, pids_with_env, session_pids

pytestmark = pytest.mark.simulation



def _fer2013_subset(fer2013: Path, out: Path, *, train: int = 30, test: int = 10) -> Path:
    """A manifest of the first images of each class (absolute paths into ../shared: nothing is copied)."""
    rows = ["path,label,split"]
    for cls in sorted(p.name for p in (fer2013 / "train").iterdir()):
        rows += [f"{p},{cls},train" for p in sorted((fer2013 / "train" / cls).glob("Training_*"))[:train]]
        rows += [f"{p},{cls},test" for p in sorted((fer2013 / "test" / cls).glob("PrivateTest_*"))[:test]]
    out.write_text("\n".join(rows) + "\n")
    return out


def _project_file(path: Path, out: Path) -> bool:
    """A file of the app FLWR_HOME unpacked (the project's own, public, files: docs name the shared data)."""
    apps = out / "deploy" / "flwr-home" / "apps"
    if not path.is_relative_to(apps):
        return False
    rel = path.relative_to(apps).parts[1:]
    return bool(rel) and (ROOT.joinpath(*rel)).is_file() and ROOT.joinpath(*rel).read_bytes() == path.read_bytes()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _read(path: str) -> str:
    try:
        return Path(path).read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_three_sites_train_on_their_own_folders_and_a_server_without_data_reports_each(shared_data, tmp_path):
    sites = {"fer2013": _fer2013_subset(shared_data / "fer2013", tmp_path / "fer2013_subset.csv"),
             "ckplus": shared_data / "ckplus48", "jaffe": shared_data / "jaffe", "broken": tmp_path / "nowhere"}
    out = tmp_path / "run"
    home = out / "deploy" / "flwr-home"
    server_views: dict[int, str] = {}  # pid -> command line and environment of the SuperLink and ServerApp
    with fedfer("deploy-local", "--auth", "--out", str(out),
                *[a for n, p in sites.items() for a in ("--site", f"{n}={p}")],
                *[a for kv in ("num-server-rounds=1", "local-epochs=1", "min-train-clients=3", "round-timeout=240")
                  for a in ("--set", kv)], marker=("FLWR_HOME", str(home))) as proc:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not any(
                "serverapp" in v for v in server_views.values()):
            for pid in pids_with_env("FLWR_HOME", str(home)):
                cmdline = _read(f"/proc/{pid}/cmdline")
                if "serverapp" in cmdline or "superlink" in cmdline:
                    server_views[pid] = cmdline + _read(f"/proc/{pid}/environ")
            time.sleep(0.5)
        log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [1]
    assert summary["config"]["num-clients"] == 4 and summary["config"]["min-available-clients"] == 4
    assert f"final {summary['final']['split']} accuracy" in log and "4 SuperNode" in log  # split: federated
    # TLS on: the SuperLink serves https, each SuperNode trusts the run's CA, flwr's connection names it
    assert "Uvicorn running on https://" in (out / "deploy" / "logs" / "superlink.log").read_text()
    assert "--root-certificates" in (tmp_path / "run.private" / "sites" / "jaffe" / "logs" / "supernode-2.log").read_text()
    assert 'root-certificates = "' in (home / "config.toml").read_text()
    # the server side: no data path in its config, its processes' command lines or environments
    assert summary["config"]["data-path"] == "" and summary["config"]["eval-data-path"] == ""
    assert summary["config"]["client-data"] == "site"
    run_config = (out / "deploy" / "run-config.toml").read_text()
    assert any("serverapp" in v for v in server_views.values()), "the ServerApp process was not seen"
    for path in sites.values():
        assert str(path) not in run_config and not any(str(path) in view for view in server_views.values())
    # each SuperNode got its own folder, and only its own, beside the run folder (0700, node config and key 0600)
    private = tmp_path / "run.private"
    for name, path in sites.items():
        own = private / "sites" / name
        node_config = (own / "node-config.toml").read_text()
        assert str(path.resolve()) in node_config and f'site = "{name}"' in node_config
        assert not any(str(other.resolve()) in node_config for other in sites.values() if other != path)
        assert _mode(own) == 0o700 and _mode(own / "node-config.toml") == _mode(own / "auth-key") == 0o600
        assert b"PRIVATE KEY-----" in (own / "auth-key").read_bytes()
    # the server's run folder (summary, report, config dumps, the SuperLink's and flwr's logs, FLWR_HOME) holds
    # no private key and no working site's data path; the control: the private folder holds both
    held = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not _project_file(p, out)}
    assert out / "deploy" / "logs" / "flwr-run.log" in held and out / "report.md" in held
    assert [p for p, data in held.items() if b"PRIVATE KEY-----" in data] == []
    for name, path in sites.items():
        assert [str(p) for p, data in held.items() if str(path.resolve()).encode() in data] == [], name
    assert not list(private.rglob("ca.key"))  # the CA key was never written
    # federated evaluation: every working site evaluated, per-site accuracy and the gap
    assert summary["dataset"]["evaluation"] == "federated"
    groups = summary["groups"]
    assert set(groups) == {"fer2013", "ckplus", "jaffe"}
    assert groups["fer2013"]["n"] == 70 and groups["jaffe"]["faces_found"] > 0
    accs = [g["accuracy"] for g in groups.values()]
    assert summary["group_gap"] == pytest.approx(max(accs) - min(accs))
    assert sum(g["n"] for g in groups.values()) == summary["final"]["n"]
    # the broken site stopped with its reason; the other three trained every round
    for row in summary["rounds"]:
        assert row["clients_responded"] == 3 and row["clients_sampled"] == 4
        assert any(CLIENT_REASONS[SITE_DATA_ERROR] in e for e in row["errors"])
    report = (out / "report.md").read_text()
    assert "## Per site" in report and "federated evaluation" in report and "| jaffe |" in report
    assert "per site: " in log
    time.sleep(1)
    assert session_pids(proc.pid) == [] and pids_with_env("FLWR_HOME", str(home)) == []
