"""The one error root of hesd, and the split of protocol errors.

``HesdError`` lives in the lowest layer so that ``protocols``, ``adapters`` and ``hesd`` share it
without importing upwards. Protocol errors split the way h11 splits them: a *local* error means
we misused the protocol object (a bug on our side), a *remote* error means the peer sent something
the standard does not allow. A session catches both at one boundary and aborts cleanly with the
reason logged.
"""

from __future__ import annotations


class HesdError(Exception):
    """Root of every error hesd raises on purpose."""


class ProtocolError(HesdError):
    """A wire protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We asked a protocol object to do something its state does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes the protocol does not allow (garbled frame, bad tag, wrong state)."""
