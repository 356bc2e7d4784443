"""What a meter session is told about its meter (``SessionSettings``: the vendor profile, the
read association, the keyset), the error a session raises (``SessionError``), and what a request
that failed says (``failure_text``); ``hesd.session`` re-exports the first two. The settings
turn an association of the profile into what ``ClientConnection`` needs: the AARQ's parameters
(LLS password from the keyset) and the suite-0 security context (the keyset's global unicast and
authentication keys, the meter's last accepted counter).
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.profile import Association, VendorProfile
from hesd.secrets import KeySet
from protocols.dlms.acse import Mechanism
from protocols.dlms.connection import AssociationParameters, Event, RequestFailed
from protocols.dlms.security import SecurityContext
from protocols.errors import HesdError

__all__ = ["SessionError", "SessionSettings", "failure_text"]


class SessionError(HesdError):
    """A request to a meter could not be completed; the message names the meter and why."""


def failure_text(event: Event) -> str:
    """Why a request did not complete, from the event that ended it."""
    if isinstance(event, RequestFailed):
        return event.reason
    return f"unexpected {type(event).__name__}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs to know about its meter; built by the session manager."""

    meter_id: str
    profile: VendorProfile
    association: Association
    keyset: KeySet | None
    client_system_title: bytes  # hesd's system title, for ciphering and HLS

    def parameters(self, association: Association | None = None) -> AssociationParameters:
        """What hesd proposes in the AARQ of ``association`` (default: the read association)."""
        assoc = association or self.association
        mechanism = {"none": Mechanism.NONE, "lls": Mechanism.LLS, "hls-gmac": Mechanism.HLS_GMAC}[
            assoc.security
        ]
        password = None
        if mechanism == Mechanism.LLS:
            secret = self._secret(assoc.secret or "lls_password", assoc)
            password = secret
        return AssociationParameters(
            mechanism=mechanism,
            password=password,
            ciphered=assoc.ciphered,
            max_receive_pdu_size=self.profile.framing.max_pdu_size,
            response_timeout=self.profile.response_timeout,
        )

    def security(
        self, last_server_counter: int | None, association: Association | None = None
    ) -> SecurityContext | None:
        """Suite-0 keys of the meter's keyset for ``association`` (default: the read one)."""
        assoc = association or self.association
        if not assoc.ciphered and assoc.security != "hls-gmac":
            return None
        keys = self.keyset
        if keys is None or keys.global_unicast_key is None or keys.authentication_key is None:
            raise SessionError(
                f"meter {self.meter_id}: association {assoc.name} needs the keyset's "
                "global_unicast_key and authentication_key"
            )
        return SecurityContext(
            system_title=self.client_system_title,
            ek=keys.global_unicast_key.reveal(),
            ak=keys.authentication_key.reveal(),
            last_server_invocation_counter=last_server_counter,
        )

    def _secret(self, name: str, association: Association) -> bytes:
        keys = self.keyset
        value = None if keys is None else getattr(keys, name, None)
        if value is None:
            raise SessionError(
                f"meter {self.meter_id}: association {association.name} needs the keyset's {name}"
            )
        return bytes(value.reveal())
