"""hesd's TLS contexts: the client side for its outgoing connections (the MQTT broker, the MDM),
the server side for the API on TCP (``api.listen``)."""

from __future__ import annotations

import ssl
from pathlib import Path

from adapters.schema import ConfigError
from hesd.config_api import ApiConfig

__all__ = ["client_context", "server_context"]


def client_context(
    source: str,
    section: str,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    verify: bool = True,
) -> ssl.SSLContext:
    """A context with ``ca_file`` (None: the system's CAs) and an optional client certificate;
    a file that does not load is a ``ConfigError`` naming ``source`` and ``section.key``."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            source, f"{section}.ca_file", f"cannot load CA certificates: {exc}"
        ) from None
    if cert_file is not None:
        try:
            context.load_cert_chain(str(cert_file), None if key_file is None else str(key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                source, f"{section}.cert_file", f"cannot load the client certificate and key: {exc}"
            ) from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def server_context(api: ApiConfig, source: str) -> ssl.SSLContext | None:
    """The server side of TLS for ``api.listen``; None for ``insecure_plaintext``. A file that
    does not load is a ``ConfigError`` naming ``source`` and the key."""
    if api.tls_cert_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(
            str(api.tls_cert_file), None if api.tls_key_file is None else str(api.tls_key_file)
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            source,
            "api.tls_cert_file",
            f"cannot load the server certificate and key: {exc.strerror or exc}",
        ) from None
    if api.tls_client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(api.tls_client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                source,
                "api.tls_client_ca_file",
                f"cannot load CA certificates: {exc.strerror or exc}",
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context
