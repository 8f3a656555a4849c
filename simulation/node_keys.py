"""Per-SuperNode authentication keys (Flower's SuperNode authentication).

Each SuperNode gets an EC P-384 key pair in OpenSSH format: the private key stays with the node
(``flower-supernode --auth-supernode-private-key``); the public key is registered with the
SuperLink (started with ``--enable-supernode-auth``) through ``flwr supernode register
PUBLIC_KEY CONNECTION``. A node whose public key was not registered is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class NodeKeys:
    private_key: Path
    public_key: Path


def generate_node_keys(directory: Path | str, name: str) -> NodeKeys:
    """Write ``<name>`` (private, mode 600) and ``<name>.pub`` into ``directory``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    keys = NodeKeys(directory / name, directory / f"{name}.pub")
    fd = os.open(keys.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private)
    keys.public_key.write_bytes(public + f" fedfer-{name}\n".encode())
    return keys
