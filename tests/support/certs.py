"""Certificates made at test time (with `cryptography`): self-signed ones, and a private CA
with server certificates it issues."""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _certificate(common_name, key, issuer, signing_key, ca, dns_names=(), ips=()):
    """A certificate for `key`, named `common_name`, signed by `signing_key` as `issuer`
    (a Name; None: itself), valid from an hour ago for a day."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    alternative_names = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if alternative_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def self_signed(common_name="localhost", dns_names=("localhost",), ips=("127.0.0.1",)):
    """(certificate PEM, private key PEM): a self-signed CA certificate that is also a
    server certificate for `dns_names` and `ips`, valid from an hour ago for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(common_name, key, None, key, True, dns_names, ips)
    return certificate.public_bytes(serialization.Encoding.PEM), _pem(key)


class PrivateCA:
    """A certificate authority of the test's own; `pem` is its certificate, to trust."""

    def __init__(self, common_name="tpot test CA"):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = _certificate(common_name, self.key, None, self.key, True)
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, dns_names, ips=()):
        """(certificate PEM, private key PEM): a server certificate, not a CA, for
        `dns_names` (wildcards such as `*.localhost` included) and `ips`."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = _certificate(dns_names[0], key, self.certificate.subject, self.key, False, dns_names, ips)
        return certificate.public_bytes(serialization.Encoding.PEM), _pem(key)
