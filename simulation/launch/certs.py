"""Throwaway TLS material for a local (or trial) deployment: a CA and a server certificate.

The CA signs one server certificate valid for ``127.0.0.1``, ``::1`` and ``localhost`` (plus any
extra host names or IP addresses given). The SuperLink is started with the CA, the certificate
and its key; SuperNodes and the ``flwr`` CLI trust the CA (``--root-certificates`` /
``root-certificates`` in ``$FLWR_HOME/config.toml``). Made with the ``cryptography`` package
(a Flower dependency); private keys are written mode 0600 into a folder created 0700.

``keep_ca_key=False`` (what ``fedfer deploy-local`` uses) never writes the CA's private key: it
signs the one server certificate in memory and is dropped, so no folder, the server's or any
other, holds a key that could sign a certificate the SuperNodes would trust. ``fedfer certs``
keeps it (``ca.key``) for an operator who wants to sign more certificates with it later.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from simulation.launch.private_files import PRIVATE_DIR_MODE, write_private

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def generate_certificates(directory: Path | str, *, hosts: Iterable[str] = (), days: int = 30,
                          overwrite: bool = False, keep_ca_key: bool = True) -> TlsFiles:
    """Write ca.crt, server.pem, server.key (and with ``keep_ca_key`` ca.key) into ``directory``; return
    their paths. Without ``keep_ca_key`` the CA key is never written, and an older ca.key there is removed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    files = TlsFiles(directory / CA_CERT, directory / SERVER_CERT, directory / SERVER_KEY)
    existing = [p for p in (files.ca_cert, files.server_cert, files.server_key, directory / CA_KEY) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists (pass overwrite=True / --overwrite to replace)")

    now = dt.datetime.now(dt.timezone.utc)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedfer throwaway CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))

    names: list[x509.GeneralName] = []
    for host in ["localhost", "127.0.0.1", "::1", *hosts]:
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in names:
            names.append(entry)
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem = serialization.Encoding.PEM
    no_pass = serialization.NoEncryption()
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    if keep_ca_key:
        write_private(directory / CA_KEY, ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_pass))
    else:
        (directory / CA_KEY).unlink(missing_ok=True)
    files.server_cert.write_bytes(cert.public_bytes(pem))
    write_private(files.server_key, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_pass))
    return files
