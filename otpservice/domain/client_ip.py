"""The end user's address, as a backend reports it in ``client_ip``, reduced to what one user holds."""

from __future__ import annotations

import ipaddress

from otpservice.domain.errors import InvalidClientIp


def client_subject(raw: str) -> str:
    """The budget subject for an address: IPv4 as is, IPv6 by its /64.

    Why the /64: one IPv6 subscriber is routinely given a whole /64 and may rotate through it at
    will, so a per-address limit would not limit anyone.
    """
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        raise InvalidClientIp("client_ip must be an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
