"""TLS for the client's connections: to an https target (verified against the system's
roots, the certificates of --ca, or not at all with --insecure) and to an https server.

Nothing here reads a file: --ca's PEM text is in the settings (tpot.client.files read it).
"""

import re

from twisted.internet import error
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

# Seconds a TLS target gets to complete its handshake before the attempt counts as failed.
HANDSHAKE_TIMEOUT = 30


@implementer(IOpenSSLClientConnectionCreator)
class InsecureClientTLS:
    """--insecure: TLS without verifying the certificate, still sending the name (SNI)."""

    def __init__(self, hostname):
        from OpenSSL import SSL
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from twisted.internet.ssl import CertificateOptions

        self._connection = SSL.Connection
        self._context = CertificateOptions(verify=False).getContext()
        # Literal addresses are not allowed in SNI.
        self.server_name = None if isIPAddress(hostname) or isIPv6Address(hostname) else hostname.encode("idna")

    def clientConnectionForTLS(self, tls_protocol):
        connection = self._connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self.server_name:
            connection.set_tlsext_host_name(self.server_name)
        return connection


def ca_certificates(pem):
    """The certificates in PEM text `pem`, as twisted.internet.ssl.Certificate; ValueError if none or corrupt."""
    from OpenSSL.crypto import Error as OpenSSLError
    from twisted.internet.ssl import Certificate

    blocks = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.DOTALL)
    if not blocks:
        raise ValueError("no PEM certificate")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except OpenSSLError as failure:
        raise ValueError(str(failure)) from None


def target_tls(settings):
    """The TLS connection creator for the settings' target: None unless it is https."""
    from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates

    host = settings.target.host
    if settings.target.scheme != "https":
        return None
    if settings.target_insecure:
        return InsecureClientTLS(host)
    if settings.target_ca:
        return optionsForClientTLS(host, trustRoot=trustRootFromCertificates(ca_certificates(settings.target_ca)))
    return optionsForClientTLS(host)


def server_tls(server):
    """The TLS context for a WebSocket to `server` (a settings.Address): None unless it is https."""
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(server.host) if server.scheme == "https" else None


def describe_tls_failure(reason):
    """A few words on why a TLS handshake with the target failed."""
    from OpenSSL.SSL import Error as SSLError

    value = reason.value if reason is not None else None
    if isinstance(value, error.TimeoutError):
        return f"no TLS handshake within {HANDSHAKE_TIMEOUT} s"
    if isinstance(value, SSLError):
        details = [part[-1] for part in (value.args[0] if value.args and isinstance(value.args[0], list) else [])
                   if isinstance(part, tuple) and part and part[-1]]
        return details[-1] if details else "TLS error"
    if type(value).__name__ == "VerificationError":  # service_identity: the name does not match
        return "certificate does not match the host name"
    return "the connection closed during the TLS handshake"
