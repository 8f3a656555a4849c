"""Who holds which file of a local deployment: the server's folder, the SuperLink's own key, each site's folder.

The server is honest but curious and reads its run folder, so the run folder's ``deploy/`` (the
*server folder*: the SuperLink's and ``flwr``'s logs, FLWR_HOME, the run config) holds only what a
server may hold and nothing private: the CA certificate (``certs/ca.crt``) and the SuperNodes'
PUBLIC keys (``node-keys/<site>.pub``, registered with the SuperLink for node authentication).
Everything else lives in a *private folder* beside the run folder, never inside it (0700):

- ``superlink/``: the SuperLink's own TLS key (``server.key``, 0600), its certificate, the CA
  certificate (the SuperLink needs all three). It is the server's key, but the run folder is a
  results folder people copy and share: a private key does not belong in it.
- ``sites/<site>/`` (0700), one per SuperNode, what that site alone holds on its own machine: its
  node config (``node-config.toml``, 0600: its data path), its authentication key pair
  (``auth-key``, 0600, and ``auth-key.pub``), the CA certificate, and its own logs (the ClientApp's
  output, computed from the site's data, is the site's, not the server's).

The throwaway CA's private key is never written (:func:`simulation.launch.certs.generate_certificates`
with ``keep_ca_key=False``): it signs the one server certificate in memory. SuperNodes
authenticate with their own keys, not with certificates, so nothing needs signing later, and a key
that was never written cannot leak; the next ``deploy-local`` makes a new CA.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from simulation.launch.certs import CA_CERT, TlsFiles, generate_certificates
from simulation.launch.node_keys import NodeKeys, generate_node_keys
from simulation.launch.private_files import make_private_dir, write_private

SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NODE_CONFIG_FILE = "node-config.toml"
AUTH_KEY = "auth-key"


class LayoutError(ValueError):
    """The deployment's folders would let the server hold what is not its own (the message says what to change)."""


def toml_value(value: object) -> str:
    from simulation.launch.launcher import _toml_value

    return _toml_value(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class SiteFolder:
    """One SuperNode's own folder (0700): its node config, its key pair, the CA certificate, its logs."""

    name: str
    root: Path

    @property
    def node_config(self) -> Path:
        return self.root / NODE_CONFIG_FILE

    @property
    def private_key(self) -> Path:
        return self.root / AUTH_KEY

    @property
    def ca_cert(self) -> Path:
        return self.root / CA_CERT

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@dataclass(frozen=True)
class DeployLayout:
    """The server folder and the private folder beside it (see the module docstring)."""

    server: Path
    private: Path

    def __post_init__(self) -> None:
        server, private = Path(self.server).resolve(), Path(self.private).resolve()
        if private.is_relative_to(server) or server.is_relative_to(private):
            raise LayoutError(f"the private folder {private} and the server's folder {server} must not lie one "
                              f"inside the other: choose a private folder beside the run folder")
        object.__setattr__(self, "server", server)
        object.__setattr__(self, "private", private)

    @property
    def superlink(self) -> Path:
        return self.private / "superlink"

    @property
    def server_ca_cert(self) -> Path:
        return self.server / "certs" / CA_CERT

    @property
    def public_keys(self) -> Path:
        return self.server / "node-keys"

    def site(self, name: str) -> SiteFolder:
        if not SITE_NAME.fullmatch(name):
            raise LayoutError(f"site name {name!r}: use letters, digits, '.', '_' or '-' (it names the site's "
                              f"folder), starting with a letter or digit, at most 64 characters")
        return SiteFolder(name=name, root=self.private / "sites" / name)


def check_site_names(names: list[str], layout: DeployLayout) -> None:
    """Each name a valid folder name, and no two sites sharing one folder."""
    for name in names:
        layout.site(name)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LayoutError(f"sites {', '.join(dupes)} appear more than once: give every site its own name")


def make_site_folder(layout: DeployLayout, name: str) -> SiteFolder:
    site = layout.site(name)
    for folder in (layout.private, site.root.parent, site.root):
        make_private_dir(folder)
    make_private_dir(site.logs)
    return site


def write_tls(layout: DeployLayout, *, sites: list[str]) -> TlsFiles:
    """The SuperLink's TLS files in its private folder (no CA key written), the CA certificate copied to the
    server folder (for ``flwr``) and to every site's folder (for its SuperNode)."""
    make_private_dir(layout.private)
    files = generate_certificates(make_private_dir(layout.superlink), overwrite=True, keep_ca_key=False)
    layout.server_ca_cert.parent.mkdir(parents=True, exist_ok=True)
    for target in [layout.server_ca_cert, *(make_site_folder(layout, name).ca_cert for name in sites)]:
        shutil.copyfile(files.ca_cert, target)
    return files


def write_node_keys(layout: DeployLayout, name: str) -> NodeKeys:
    """Site ``name``'s key pair in its own folder; a copy of its PUBLIC key in the server folder. The returned
    pair names the site's private key and the server's copy of the public key (what gets registered)."""
    site = make_site_folder(layout, name)
    keys = generate_node_keys(site.root, AUTH_KEY)
    layout.public_keys.mkdir(parents=True, exist_ok=True)
    public = layout.public_keys / f"{name}.pub"
    kind, key = keys.public_key.read_text().split()[:2]
    public.write_text(f"{kind} {key} fedfer-{name}\n")  # named for the site it admits
    return NodeKeys(private_key=keys.private_key, public_key=public)


def write_node_config(layout: DeployLayout, name: str, entries: Mapping[str, object]) -> Path:
    """Site ``name``'s node config (its data path among them) as TOML, mode 0600, in the site's own folder."""
    site = make_site_folder(layout, name)
    return write_private(site.node_config, "".join(f"{k} = {toml_value(v)}\n" for k, v in entries.items()))
