"""A development certificate authority and server certificate for the SQL proxy.

Consumes: a folder and the names clients will use (DNS names, IP addresses).
Produces: `ca.crt` (what clients trust), `tls.crt` and `tls.key` (what the proxy
serves, as ALPR_PROXY_TLS_CERT / ALPR_PROXY_TLS_KEY). The CA's private key is
never written: a new certificate means a new CA, so a leaked dev CA cannot mint more.

For docker-compose (`init-certs`) and tests only. Production certificates come from
the site's CA (a Kubernetes Secret of type kubernetes.io/tls; see docs/operations.md).

    python -m alpr.ops.devcert /etc/alpr/tls --dns proxy --dns localhost --ip 127.0.0.1

An existing certificate that still covers the names and has more than RENEW_BEFORE
left is kept, so restarting the stack does not invalidate every client's ca.crt.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from alpr.core.errors import ConfigError

VALID_DAYS = 90
RENEW_BEFORE = timedelta(days=14)
CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"


@dataclass(frozen=True)
class DevCertificate:
    ca: Path
    cert: Path
    key: Path
    created: bool  # False: an existing certificate was still good and was kept


def _names(dns: list[str], ips: list[str]):
    from cryptography import x509

    try:
        addresses = [ipaddress.ip_address(ip) for ip in ips]
    except ValueError as exc:
        raise ConfigError(f"dev certificate: {exc}") from None
    return [x509.DNSName(d) for d in dns] + [x509.IPAddress(a) for a in addresses]


def _still_good(folder: Path, dns: list[str], ips: list[str], now: datetime) -> bool:
    from cryptography import x509

    if not all((folder / f).is_file() for f in (CA_FILE, CERT_FILE, KEY_FILE)):
        return False
    cert = x509.load_pem_x509_certificate((folder / CERT_FILE).read_bytes())
    if cert.not_valid_before_utc > now or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(_names(dns, ips)) <= set(san)


def write_dev_certificate(folder: Path, dns: list[str], ips: list[str], days: int = VALID_DAYS,
                          now: datetime | None = None) -> DevCertificate:
    """Write (or keep) ca.crt, tls.crt, tls.key under `folder` for the given names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not dns and not ips:
        raise ConfigError("dev certificate: name at least one --dns or --ip clients will connect to")
    now = now or datetime.now(timezone.utc)
    folder = Path(folder)
    paths = DevCertificate(folder / CA_FILE, folder / CERT_FILE, folder / KEY_FILE, created=True)
    if _still_good(folder, dns, ips, now):
        return DevCertificate(paths.ca, paths.cert, paths.key, created=False)
    folder.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ALPR development CA (not for production)")])
    start, end = now - timedelta(minutes=5), now + timedelta(days=days)  # 5 min: clocks of containers drift
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(_names(dns, ips)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))

    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    # The key first, created 0600: it is never readable by others, not even for an instant.
    fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem_key)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alpr.ops.devcert", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dns", action="append", default=[], help="DNS name clients use (repeatable).")
    parser.add_argument("--ip", action="append", default=[], help="IP address clients use (repeatable).")
    parser.add_argument("--days", type=int, default=VALID_DAYS)
    args = parser.parse_args(argv)
    try:
        out = write_dev_certificate(args.folder, args.dns, args.ip, args.days)
    except (ConfigError, OSError) as exc:
        print(f"devcert: error: {exc}", file=sys.stderr)
        return 2
    print(f"devcert: {'wrote' if out.created else 'kept'} {out.cert} (trust {out.ca})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
