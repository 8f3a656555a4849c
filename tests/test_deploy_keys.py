"""Who holds which key of `fedfer deploy-local`: the folders it writes, checked without starting Flower.

The server is honest but curious and reads its run folder. The attack: it greps the run folder for
private keys and for the sites' data paths; it must find neither, while the same grep over the
private folder (the control) finds every one of them, so the grep itself works.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fer_models.config import ConfigError
from simulation.commands.cmd_deploy import private_dir_for
from simulation.launch.certs import generate_certificates
from simulation.launch.deploy import PROJECT_ROOT, DeployError, LocalDeployment

SITES = {"clinic": "/srv/fer/clinic-photos.csv", "school": "/data/school_faces"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _holding(folder: Path, needle: str) -> list[Path]:
    return [p for p in _files(folder) if needle.encode() in p.read_bytes()]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_key(path: Path):
    data = path.read_bytes()
    if b"OPENSSH PRIVATE KEY" in data:
        return serialization.load_ssh_private_key(data, password=None)
    return serialization.load_pem_private_key(data, password=None)


def _prepared(tmp_path: Path, **kw) -> LocalDeployment:
    sites = [{"data-path": path, "site": name, "share-evaluation": True} for name, path in SITES.items()]
    deployment = LocalDeployment(work_dir=tmp_path / "run" / "deploy", private_dir=tmp_path / "run.private",
                                 num_nodes=len(sites), tls=True, auth=True, site_configs=sites, echo=lambda line: None,
                                 **kw)
    deployment.prepare()
    deployment.write_run_config({"client-data": "site", "data-path": ""})
    return deployment


def test_the_run_folder_holds_no_private_key_and_no_site_data_path_while_the_private_folder_does(tmp_path):
    deployment = _prepared(tmp_path)
    run, private = tmp_path / "run", tmp_path / "run.private"
    assert _files(run / "deploy"), "the server's folder was written"
    # the attack: the server greps its run folder
    assert _holding(run, "PRIVATE KEY-----") == []
    for path in SITES.values():
        assert _holding(run, path) == []
    # the control: the same grep finds the keys and the paths where they are
    assert {p.relative_to(private).as_posix() for p in _holding(private, "PRIVATE KEY-----")} == {
        "superlink/server.key", "sites/clinic/auth-key", "sites/school/auth-key"}
    for name, path in SITES.items():
        assert _holding(private, path) == [private / "sites" / name / "node-config.toml"]
    assert deployment.node_config(0) == str(private / "sites" / "clinic" / "node-config.toml")


def test_every_private_file_is_0600_in_a_0700_folder_of_its_owner(tmp_path):
    deployment = _prepared(tmp_path)
    private = tmp_path / "run.private"
    for folder in (private, private / "superlink", private / "sites", *(private / "sites").iterdir()):
        assert _mode(folder) == 0o700, folder
    secret = [*_holding(private, "PRIVATE KEY-----"), *private.glob("sites/*/node-config.toml")]
    assert len(secret) == 5
    assert all(_mode(p) == 0o600 for p in secret), {str(p): oct(_mode(p)) for p in secret}
    # each site's key sits in its own folder; the server holds the matching PUBLIC key (what it registers)
    for i, name in enumerate(SITES):
        keys = deployment.node_keys[i]
        assert keys.private_key == private / "sites" / name / "auth-key"
        assert keys.public_key.parent == tmp_path / "run" / "deploy" / "node-keys"
        public = serialization.load_ssh_public_key(keys.public_key.read_bytes().rsplit(b" ", 1)[0])
        assert public.public_numbers() == _private_key(keys.private_key).public_key().public_numbers()


def test_the_ca_key_is_nowhere_on_disk_and_the_server_certificate_still_verifies(tmp_path):
    deployment = _prepared(tmp_path)
    ca = x509.load_pem_x509_certificate(deployment.tls_files.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(deployment.tls_files.server_cert.read_bytes())
    cert.verify_directly_issued_by(ca)  # the CA signed it (in memory) ...
    ca_public = ca.public_key().public_numbers()
    keys = [_private_key(p) for p in _holding(tmp_path, "PRIVATE KEY-----")]
    assert len(keys) == 3
    assert all(k.public_key().public_numbers() != ca_public for k in keys)  # ... and its key was never written
    # every holder of the CA certificate has the same one: the server folder (flwr), the SuperLink, each site
    copies = [tmp_path / "run" / "deploy" / "certs" / "ca.crt", deployment.tls_files.ca_cert,
              *(tmp_path / "run.private" / "sites" / n / "ca.crt" for n in SITES)]
    assert {p.read_bytes() for p in copies} == {deployment.tls_files.ca_cert.read_bytes()}
    assert str(copies[0]) in (deployment.flwr_home / "config.toml").read_text()


def test_a_supernode_starts_from_its_own_folder_and_logs_there(tmp_path):
    deployment = _prepared(tmp_path)
    fake = tmp_path / "bin" / "flower-supernode"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"cwd $(pwd)\"\nexit 0\n")
    fake.chmod(0o755)
    deployment.bins["flower-supernode"] = fake
    deployment.superlink_port = 1  # never contacted: the fake exits at once
    try:
        proc = deployment.start_supernode(1)
        proc.popen.wait(timeout=30)
    finally:
        deployment.shutdown()
    school = tmp_path / "run.private" / "sites" / "school"
    assert proc.log == school / "logs" / "supernode-1.log"
    log = proc.log.read_text()
    assert f"--node-config {school / 'node-config.toml'}" in log
    assert f"--root-certificates {school / 'ca.crt'}" in log
    assert f"--auth-supernode-private-key {school / 'auth-key'}" in log
    assert f"cwd {school}" in log
    assert not (tmp_path / "run" / "deploy" / "logs" / "supernode-1.log").exists()


def test_fedfer_certs_keeps_its_ca_key_0600_while_deploy_local_drops_a_stale_one(tmp_path):
    kept = generate_certificates(tmp_path / "certs")
    assert _mode(tmp_path / "certs" / "ca.key") == 0o600 and _mode(kept.server_key) == 0o600
    assert _mode(tmp_path / "certs") == 0o700
    generate_certificates(tmp_path / "certs", overwrite=True, keep_ca_key=False)
    assert not (tmp_path / "certs" / "ca.key").exists()


def test_a_private_folder_inside_the_run_folder_or_the_packaged_project_is_refused(tmp_path):
    run = tmp_path / "run"
    assert private_dir_for(run) == tmp_path / "run.private"
    assert private_dir_for(run, tmp_path / "keys") == tmp_path / "keys"
    for inside in (run / "keys", run, tmp_path):
        with pytest.raises(ConfigError, match="must not lie one inside the other"):
            private_dir_for(run, inside)
    with pytest.raises(DeployError, match="must not lie one inside the other"):
        LocalDeployment(work_dir=run / "deploy", private_dir=run / "deploy" / "private", num_nodes=1)
    with pytest.raises(DeployError, match="packages the project's .toml files"):
        LocalDeployment(work_dir=tmp_path / "deploy", private_dir=PROJECT_ROOT / "site-keys", num_nodes=1)
    assert not (PROJECT_ROOT / "site-keys").exists()


@pytest.mark.parametrize("names, match", [(["../up", "b"], "site name '../up'"), (["a", "a"], "more than once")])
def test_site_names_that_would_share_or_escape_a_folder_are_refused(tmp_path, names, match):
    sites = [{"data-path": f"/d/{i}", "site": n} for i, n in enumerate(names)]
    with pytest.raises(DeployError, match=match):
        LocalDeployment(work_dir=tmp_path / "deploy", num_nodes=2, site_configs=sites)
