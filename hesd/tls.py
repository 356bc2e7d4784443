"""The client side of TLS for hesd's outgoing connections (the MQTT broker, the MDM)."""

from __future__ import annotations

import ssl
from pathlib import Path

from adapters.schema import ConfigError

__all__ = ["client_context"]


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
