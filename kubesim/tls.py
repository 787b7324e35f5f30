"""A throw-away certificate authority and server certificate for kubesim's HTTPS mode.

kubectl (client-go) sends bearer tokens only over TLS, so the kubectl tests run kubesim with
tls=True; the kubeconfig then carries the CA. Generated in memory at start; files live in a
private temporary directory for the ssl module."""
from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(host: str) -> tuple[bytes, bytes, bytes]:
    """(CA certificate PEM, server certificate PEM, server key PEM) for `host` and localhost."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("kubesim-ca")).issuer_name(_name("kubesim-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost")]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(_name("kubesim")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def server_context(host: str, folder: Path | None = None) -> tuple[ssl.SSLContext, str]:
    """An SSL context serving a certificate, and the CA as base64 (certificate-authority-data).
    With `folder`, the CA and certificate kept there are used again (made on first use), so a
    restarted server keeps its identity and existing kubeconfigs stay valid."""
    if folder is not None and (folder / "ca.crt").exists() and (folder / "tls.crt").exists() and (folder / "tls.key").exists():
        ca_pem = (folder / "ca.crt").read_bytes()
    else:
        ca_pem, cert_pem, key_pem = make_certificates(host)
        folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="kubesim-tls-"))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tls.key").touch(0o600)
        (folder / "tls.key").chmod(0o600)
        (folder / "tls.key").write_bytes(key_pem)
        (folder / "tls.crt").write_bytes(cert_pem + ca_pem)
        (folder / "ca.crt").write_bytes(ca_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    return context, base64.b64encode(ca_pem).decode()
