"""Per-SuperNode authentication keys (Flower's SuperNode authentication).

Each SuperNode gets an EC P-384 key pair in OpenSSH format: the private key stays with the node
(``flower-supernode --auth-supernode-private-key``); the public key is registered with the
SuperLink (started with ``--enable-supernode-auth``) through ``flwr supernode register
PUBLIC_KEY CONNECTION``. A node whose public key was not registered is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simulation.launch.private_files import make_private_dir, write_private


@dataclass(frozen=True)
class NodeKeys:
    private_key: Path
    public_key: Path


def generate_node_keys(directory: Path | str, name: str) -> NodeKeys:
    """Write ``<name>`` (private, mode 0600) and ``<name>.pub`` into ``directory`` (made 0700: the node's own)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory = make_private_dir(directory)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    keys = NodeKeys(directory / name, directory / f"{name}.pub")
    write_private(keys.private_key, private)
    keys.public_key.write_bytes(public + f" fedfer-{name}\n".encode())
    return keys
