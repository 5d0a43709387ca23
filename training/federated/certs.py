"""Certificates and node keys of a deployed federation, made with ``cryptography`` (no openssl CLI needed).

``python -m training.federated.certs --out certs --host fl-superlink --node centre-0 --node centre-1`` writes:

- ``ca.crt`` / ``ca.key``: the federation's own CA (keep ``ca.key`` offline; only ``ca.crt`` travels);
- ``server.pem`` / ``server.key``: the SuperLink's TLS certificate, signed by the CA, whose subject
  alternative names are every ``--host`` plus ``localhost`` and ``127.0.0.1`` (the SuperLink's own
  ServerApp process connects to it on the loopback);
- ``<node>.key`` / ``<node>.key.pub``: one ECDSA P-384 key pair per centre, in OpenSSH format, for Flower's
  node authentication: the SuperLink operator registers the ``.pub`` (``flwr supernode register``), the
  centre keeps the private key (``federated_node --auth-private-key``).

Existing files are kept (so adding a node never re-issues the CA); private keys are written mode 0600.
"""
from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAYS = 365


def _write(path: Path, data: bytes, *, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:  # created 0600, never world-readable even for an instant
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(out: Path, *, name: str = "medassist-fl-ca", days: int = DAYS) -> tuple[Path, Path]:
    """(ca.crt, ca.key): a self-signed CA that may sign server certificates only (path length 0)."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA384()))
    return (_write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(out / "ca.key", _pem_key(key), private=True))


def make_server_cert(out: Path, *, hosts: list[str], days: int = DAYS) -> tuple[Path, Path]:
    """(server.pem, server.key) signed by ``out/ca.*``; SANs: ``hosts`` + localhost + 127.0.0.1."""
    ca_cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP384R1())
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*hosts, "localhost", "127.0.0.1"]):  # ordered, without repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return (_write(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
            _write(out / "server.key", _pem_key(key), private=True))


def make_node_key(out: Path, name: str) -> tuple[Path, Path]:
    """(<name>.key, <name>.key.pub): an ECDSA P-384 key pair in OpenSSH format, as ``ssh-keygen -t ecdsa -b 384``."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (_write(out / f"{name}.key", private, private=True),
            _write(out / f"{name}.key.pub", public + f" {name}\n".encode()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("FLWR_CERTS_DIR", "certs")))
    parser.add_argument("--host", action="append", default=[], help="the SuperLink's DNS name or IP (repeatable)")
    parser.add_argument("--node", action="append", default=[], help="a centre's name: one key pair each (repeatable)")
    parser.add_argument("--days", type=int, default=DAYS)
    args = parser.parse_args(argv)
    made = []
    if not (args.out / "ca.crt").exists():
        made += make_ca(args.out, days=args.days)
    if not (args.out / "server.pem").exists():
        made += make_server_cert(args.out, hosts=args.host, days=args.days)
    for node in args.node:
        if not (args.out / f"{node}.key").exists():
            made += make_node_key(args.out, node)
    for path in made:
        print(path)


if __name__ == "__main__":
    main()
