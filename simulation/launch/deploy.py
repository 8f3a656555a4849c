"""A local deployment: one ``flower-superlink`` and N ``flower-supernode`` processes on loopback.

This is Flower's Deployment Engine on one machine, the same processes that run across machines
(see docs/federation.md, "Running across machines"): the SuperLink serves its Fleet, Control and Runtime APIs
on one port; every SuperNode connects to it with its own ``--node-config "partition-id=<i>
num-partitions=<N>"`` (with sites, a TOML file naming its own data) and serves its own runtime API on a port of its own; the run is submitted
with ``flwr run <project> <connection> --run-config <file.toml> --stream`` through a private
``FLWR_HOME`` whose ``config.toml`` names the connection.

Every process is started in a session (process group) of its own and carries a unique
``FEDFER_DEPLOYMENT`` environment marker; :meth:`LocalDeployment.shutdown` stops the groups and then
every process still carrying the marker (Flower detaches its SuperExec, ServerApp and ClientApp
helpers into sessions of their own), so nothing outlives the deployment, also on Ctrl-C/SIGTERM
(:func:`simulation.launch.processes.signals_raise`) or on failure.

What each process may hold follows the threat model (:mod:`simulation.launch.deploy_files`): the work folder
(the server's, inside its run folder) gets the SuperLink's and ``flwr``'s logs (``logs/<name>.log``),
FLWR_HOME, the run config, the CA certificate and the SuperNodes' public keys; the private folder
beside it (default ``<work>.private``) gets the SuperLink's TLS key and one folder per site with that
SuperNode's node config, private key and logs (``sites/<site>/logs/<name>.log``). The CA key is never written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from fer_models.federation.run_folder import FAILURE_FILE
from fer_models.federation.wire import NODE_PARTITION_ID, NUM_PARTITIONS
from simulation.launch.certs import TlsFiles
from simulation.launch.deploy_files import (
    DeployLayout,
    LayoutError,
    SiteFolder,
    check_site_names,
    make_site_folder,
    toml_value,
    write_node_config,
    write_node_keys,
    write_tls,
)
from simulation.launch.node_keys import NodeKeys
from simulation.launch.processes import MARK_ENV, Proc, marked_pids, session_pids, signal_pids, tail

logger = logging.getLogger(__name__)

CONNECTION = "fedfer-local"
HOST = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
BINARIES = ("flower-superlink", "flower-supernode", "flwr")


class DeployError(RuntimeError):
    """The local deployment could not start or a process of it failed."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, host: str = HOST, *, what: str = "port") -> None:
    """Raise DeployError when another process listens on ``host:port`` (as the servers do, this binds
    with SO_REUSEADDR, so connections of a stopped process in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DeployError(f"{what} {host}:{port} is already taken by another process; free it or "
                                  f"choose another port") from exc
            raise DeployError(f"cannot bind {what} {host}:{port}: {exc}") from exc


def _port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def find_binaries(bindir: Path | None = None) -> dict[str, Path]:
    """Paths of flower-superlink / flower-supernode / flwr: beside this Python first, then PATH."""
    bindir = bindir or Path(sys.executable).parent
    found: dict[str, Path] = {}
    for name in BINARIES:
        path = shutil.which(name, path=str(bindir)) or shutil.which(name)
        if path is None:
            raise DeployError(f"`{name}` not found beside {sys.executable} nor on PATH: install Flower "
                              f"(pip install 'flwr[simulation]>=1.41') in this environment")
        found[name] = Path(path)
    return found


# --- the deployment -----------------------------------------------------------------------------

@dataclass
class LocalDeployment:
    """SuperLink + SuperNodes on loopback; use as a context manager (always shuts down)."""

    work_dir: Path
    num_nodes: int
    tls: bool = False
    auth: bool = False
    superlink_port: int | None = None  # None = a free port chosen now
    startup_timeout: float = 60.0
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: client-data=site: SuperNode i's own node config entries (its data-path, site, ...), one per node.
    site_configs: list[Mapping[str, object]] = field(default_factory=list)
    #: keys, node configs and SuperNode logs: beside work_dir, never inside it (None = ``<work_dir>.private``)
    private_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise DeployError("a deployment needs at least one SuperNode")
        if self.site_configs and len(self.site_configs) != self.num_nodes:
            raise DeployError(f"{len(self.site_configs)} site(s) for {self.num_nodes} SuperNodes: give one per node")
        if self.auth and not self.tls:
            logger.info("SuperNode authentication needs TLS: enabling --tls")
            self.tls = True
        self.work_dir = Path(self.work_dir).resolve()
        private = Path(self.private_dir or self.work_dir.with_name(f"{self.work_dir.name}.private"))
        try:
            self.layout = DeployLayout(server=self.work_dir, private=private)
            self.site_names = [str(c.get("site") or f"node-{i}") for i, c in enumerate(self.site_configs)] \
                or [f"node-{i}" for i in range(self.num_nodes)]
            check_site_names(self.site_names, self.layout)
        except LayoutError as exc:
            raise DeployError(str(exc)) from None
        self.private_dir = self.layout.private
        if self.private_dir.is_relative_to(PROJECT_ROOT) and not self.private_dir.is_relative_to(PROJECT_ROOT / "runs"):
            raise DeployError(f"the private folder {self.private_dir} lies inside the project but outside runs/: "
                              f"`flwr run` packages the project's .toml files, so the sites' node configs would "
                              f"travel to the server; put the run (or --private-dir) under runs/ or outside the "
                              f"project")
        self.logs = self.work_dir / "logs"
        self.flwr_home = self.work_dir / "flwr-home"
        self.bins = find_binaries()
        self.tls_files: TlsFiles | None = None  # the SuperLink's, in its private folder
        self.node_keys: dict[int, NodeKeys] = {}
        self.superlink: Proc | None = None
        self.nodes: dict[int, Proc] = {}
        self.node_ports: dict[int, int] = {}
        self.runs: list[Proc] = []
        self.started: list[Proc] = []
        self._reported: set[int] = set()

    # -- environment --------------------------------------------------------------------------
    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        path = os.pathsep.join([str(self.bins["flwr"].parent), os.environ.get("PATH", "")])
        return {**os.environ, "PATH": path, "FLWR_HOME": str(self.flwr_home), MARK_ENV: self.mark,
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "PYTHONUNBUFFERED": "1", **(extra or {})}

    def _spawn(self, name: str, cmd: list[str], *, cwd: Path | None = None, logs: Path | None = None) -> Proc:
        logs = logs or self.logs
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{name}.log"
        fh = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed by Proc.close
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            popen = subprocess.Popen(cmd, cwd=cwd or self.work_dir, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            fh.close()
            raise DeployError(f"cannot start {name} ({cmd[0]}): {exc}") from exc
        proc = Proc(name=name, popen=popen, log=log, _fh=fh)
        self.started.append(proc)
        return proc

    def _died(self, proc: Proc, doing: str) -> DeployError:
        return DeployError(f"{proc.name} exited with code {proc.popen.returncode} while {doing}; last lines of "
                           f"{proc.log}:\n{tail(proc.log)}")

    @property
    def address(self) -> str:
        assert self.superlink_port is not None
        return f"{HOST}:{self.superlink_port}"

    # -- steps ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Folders, certificates, keys, node configs, ports and the flwr connection in FLWR_HOME/config.toml."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.flwr_home.mkdir(parents=True, exist_ok=True)
        for name in self.site_names:
            make_site_folder(self.layout, name)
        if self.tls:
            self.tls_files = write_tls(self.layout, sites=self.site_names)
        if self.auth:
            for i, name in enumerate(self.site_names):
                self.node_keys[i] = write_node_keys(self.layout, name)
        for i in range(len(self.site_configs)):
            self.node_config(i)
        if self.superlink_port is None:
            self.superlink_port = free_port()
        check_port_free(self.superlink_port, what="SuperLink port")
        for i in range(self.num_nodes):
            port = free_port()
            while port == self.superlink_port or port in self.node_ports.values():
                port = free_port()
            self.node_ports[i] = port
        lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
                 f'address = "{self.address}"']
        if self.tls_files:
            lines.append(f"root-certificates = {toml_value(str(self.layout.server_ca_cert))}")
        else:
            lines.append("insecure = true")
        (self.flwr_home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def start_superlink(self) -> Proc:
        assert self.superlink_port is not None
        cmd = [str(self.bins["flower-superlink"]), "--host", HOST, "--port", str(self.superlink_port),
               "--disable-runtime-dependency-installation"]
        if self.tls_files:
            cmd += ["--ssl-ca-certfile", str(self.tls_files.ca_cert), "--ssl-certfile",
                    str(self.tls_files.server_cert), "--ssl-keyfile", str(self.tls_files.server_key)]
        else:
            cmd += ["--insecure"]
        if self.auth:
            cmd += ["--enable-supernode-auth"]
        self.superlink = self._spawn("superlink", cmd)
        deadline = time.monotonic() + self.startup_timeout
        while not _port_open(self.superlink_port):
            if not self.superlink.alive():
                raise self._died(self.superlink, f"starting on {self.address}")
            if time.monotonic() > deadline:
                raise DeployError(f"the SuperLink did not open {self.address} within {self.startup_timeout:.0f}s; "
                                  f"last lines of {self.superlink.log}:\n{tail(self.superlink.log)}")
            time.sleep(0.2)
        self.echo(f"[deploy] SuperLink on {self.address} ({'TLS' if self.tls else 'insecure'}"
                  f"{', SuperNode auth' if self.auth else ''}); log {self.superlink.log}")
        return self.superlink

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a short ``flwr`` command against this deployment (its own FLWR_HOME)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "flwr-cli.log", "a", encoding="utf-8") as fh:
            fh.write(f"$ flwr {' '.join(args)}\n")
            fh.flush()
            res = subprocess.run([str(self.bins["flwr"]), *args], cwd=self.work_dir, env=self.env(),
                                 stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                 start_new_session=True)
            fh.write(res.stdout + res.stderr)
        return res

    def register_nodes(self) -> None:
        """Register every node's public key with the SuperLink (``flwr supernode register``)."""
        for i, keys in self.node_keys.items():
            res = self.flwr("supernode", "register", str(keys.public_key), CONNECTION, "--format", "json")
            if res.returncode != 0:
                raise DeployError(f"registering {keys.public_key} failed (exit {res.returncode}):\n"
                                  f"{(res.stdout + res.stderr)[-2000:]}")
        if self.node_keys:
            self.echo(f"[deploy] registered {len(self.node_keys)} SuperNode public keys")

    def start_supernode(self, i: int, *, private_key: Path | None = None, name: str | None = None,
                        port: int | None = None) -> Proc:
        """Start SuperNode ``i`` (partition i of N); with auth it uses its registered key unless
        ``private_key`` says otherwise."""
        port = port or self.node_ports.get(i) or free_port()
        check_port_free(port, what=f"SuperNode {i} runtime port")
        site = self.site_folder(i, name)
        cmd = [str(self.bins["flower-supernode"]), "--superlink", self.address, "--port", str(port),
               "--node-config", self.node_config(i)]
        if self.tls_files and not site.ca_cert.is_file():
            shutil.copyfile(self.tls_files.ca_cert, site.ca_cert)
        cmd += ["--root-certificates", str(site.ca_cert)] if self.tls_files else ["--insecure"]
        key = private_key or (self.node_keys[i].private_key if i in self.node_keys else None)
        if key is not None:
            cmd += ["--auth-supernode-private-key", str(key)]
        proc = self._spawn(name or f"supernode-{i}", cmd, cwd=site.root, logs=site.logs)
        if name is None:
            old = self.nodes.get(i)
            if old is not None:
                old.close()
            self.nodes[i] = proc
        return proc

    def site_folder(self, i: int, name: str | None = None) -> SiteFolder:
        """The folder of SuperNode ``i`` (or of an extra SuperNode started under ``name``), made 0700."""
        site = name or (self.site_names[i] if i < len(self.site_names) else f"node-{i}")
        return make_site_folder(self.layout, site)

    def node_config(self, i: int) -> str:
        """SuperNode ``i``'s ``--node-config``: its partition, or with sites the TOML file in its own folder
        (written by :meth:`prepare`, mode 0600) naming its own data."""
        if not self.site_configs:
            return f"{NODE_PARTITION_ID}={i} {NUM_PARTITIONS}={self.num_nodes}"
        entries = {NODE_PARTITION_ID: i, NUM_PARTITIONS: self.num_nodes, **self.site_configs[i]}
        return str(write_node_config(self.layout, self.site_names[i], entries))

    def wait_nodes_connected(self, procs: list[Proc] | None = None, *, timeout: float | None = None) -> None:
        """Wait until each SuperNode logged its node id; a node that exits meanwhile is an error."""
        procs = procs if procs is not None else list(self.nodes.values())
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        pending = list(procs)
        while pending:
            for proc in list(pending):
                if not proc.alive():
                    raise self._died(proc, f"connecting to the SuperLink at {self.address}")
                if "SuperNode ID" in proc.log.read_text(errors="replace"):
                    pending.remove(proc)
            if not pending:
                break
            if time.monotonic() > deadline:
                logger.warning("SuperNodes %s have not logged a node id after %.0fs; the ServerApp waits for them",
                               [p.name for p in pending], timeout or self.startup_timeout)
                return
            time.sleep(0.3)
        self.echo(f"[deploy] {len(procs)} SuperNode(s) connected: " +
                  ", ".join(f"{p.name} (log {p.log.name})" for p in procs))

    def start(self) -> None:
        """prepare → SuperLink → (register keys) → SuperNodes, all connected."""
        self.prepare()
        self.start_superlink()
        self.register_nodes()
        for i in range(self.num_nodes):
            self.start_supernode(i)
        self.wait_nodes_connected()

    def write_run_config(self, run_config: Mapping[str, object]) -> Path:
        path = self.work_dir / "run-config.toml"
        path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in run_config.items()), encoding="utf-8")
        return path

    def submit(self, run_config: Mapping[str, object], *, app_dir: Path = PROJECT_ROOT) -> Proc:
        """``flwr run APP CONNECTION --run-config run-config.toml --stream`` (output in logs/flwr-run.log)."""
        cfg_file = self.write_run_config(run_config)
        cmd = [str(self.bins["flwr"]), "run", str(app_dir), CONNECTION, "--run-config", str(cfg_file), "--stream"]
        proc = self._spawn("flwr-run", cmd, cwd=app_dir)
        self.runs.append(proc)
        return proc

    def check_alive(self) -> None:
        """A dead SuperLink ends the run (error); a dead SuperNode is a dropout: reported once."""
        if self.superlink is not None and not self.superlink.alive():
            raise self._died(self.superlink, "the run was in progress")
        for i, node in self.nodes.items():
            if not node.alive() and node.popen.returncode is not None and id(node) not in self._reported:
                self._reported.add(id(node))
                self.echo(f"[deploy] {node.name} exited (code {node.popen.returncode}); the run goes on while "
                          f"min-train-clients still reply. Last lines of {node.log}:\n{tail(node.log, 10)}")

    def run(self, run_config: Mapping[str, object], *, summary: Path, timeout: float = 3600.0,
            stream: bool = True, on_poll: Callable[[], None] | None = None) -> dict:
        """Submit the run, stream its log, wait for ``summary`` (the run folder's summary.json)."""
        started = time.monotonic()
        proc = self.submit(run_config)
        pos = 0
        ended_at: float | None = None
        while True:
            if stream:
                pos = self._echo_new(proc.log, pos)
            if summary.is_file():
                with contextlib.suppress(json.JSONDecodeError):
                    result = json.loads(summary.read_text())
                    if stream:
                        time.sleep(0.5)
                        self._echo_new(proc.log, pos)
                    return result
            failed = summary.with_name(FAILURE_FILE)
            if failed.is_file():  # the ServerApp stopped the run after a failed round
                with contextlib.suppress(json.JSONDecodeError):
                    raise DeployError(f"the run FAILED: {json.loads(failed.read_text())['reason']} "
                                      f"(details in {failed})")
            self.check_alive()
            if on_poll is not None:
                on_poll()
            now = time.monotonic()
            if not proc.alive() and ended_at is None:
                ended_at = now  # --stream may return just before the ServerApp's last write lands
            if ended_at is not None and now - ended_at > 60:
                raise DeployError(f"`flwr run` ended (exit {proc.popen.returncode}) without {summary}; last lines of "
                                  f"{proc.log}:\n{tail(proc.log)}\nSuperLink log: {self.superlink.log if self.superlink else '-'}")
            if now - started > timeout:
                raise DeployError(f"the run did not finish within {timeout:.0f}s; see {self.logs}")
            time.sleep(0.5)

    def _echo_new(self, log: Path, pos: int) -> int:
        try:
            with open(log, "r", encoding="utf-8", errors="replace") as fh:
                fh.seek(pos)
                chunk = fh.read()
        except OSError:
            return pos
        end = chunk.rfind("\n") + 1
        for line in chunk[:end].splitlines():
            self.echo(line)
        return pos + len(chunk[:end].encode("utf-8"))

    # -- teardown ---------------------------------------------------------------------------------
    def remaining_pids(self) -> list[int]:
        """Processes of this deployment still alive (its sessions and every marked process)."""
        pids = set(marked_pids(self.mark))
        for proc in self.started:
            pids.update(session_pids(proc.pid))
        return sorted(pids)

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop every process this deployment started: runs, SuperNodes, SuperLink, then stragglers."""
        for proc in reversed(self.started):
            with contextlib.suppress(Exception):
                proc.stop(grace=grace if proc is self.superlink else min(grace, 3.0))
        for _ in range(20):
            left = self.remaining_pids()
            if not left:
                break
            signal_pids(left, signal.SIGKILL)
            time.sleep(0.1)
        for proc in self.started:
            proc.close()
        left = self.remaining_pids()
        if left:
            logger.warning("processes of the deployment still alive after shutdown: %s", left)

    def __enter__(self) -> "LocalDeployment":
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
