"""Which address a request comes from: the socket's peer, unless that peer is a proxy listed in
settings.TRUSTED_PROXIES; then the right-most X-Forwarded-For entry that is not a trusted proxy
(each proxy appends the address it saw, so entries left of the last untrusted one could have
been written by the client). One rule for the fast read path, DRF's throttles and the admin
login lockout. With no trusted proxies (the default) the header is ignored whoever sends it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# A forwarded chain longer than this is not a real proxy chain: only its last entries count.
MAX_FORWARDED_ENTRIES = 20


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse TRUSTED_PROXIES entries ("10.0.0.0/8", "127.0.0.1", "::1")."""
    networks = []
    for proxy in proxies:
        if not proxy.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(proxy.strip(), strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES: {proxy!r} is not an IP address or CIDR network"
            ) from None
    return tuple(networks)


def _parse(text: str) -> Address | None:
    """An address from a socket or header entry ("1.2.3.4", "1.2.3.4:56", "[::1]:80"), or None."""
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(
    *,
    remote_addr: str | None,
    forwarded_for: str | None,
    trusted_proxies: Iterable[str] | None = None,
) -> str:
    """The client's address (see the module docstring); "" when the socket has none.

    `trusted_proxies` defaults to settings.TRUSTED_PROXIES. Behind a trusted peer: an entry that
    is not an address ends the walk and the proxy that reported it is taken as the client, so a
    mangled header can neither pick an address nor fail the request; when every entry is a
    trusted proxy, the left-most one is. Ports and brackets are dropped, IPv4-mapped IPv6
    addresses read as IPv4."""
    if trusted_proxies is None:
        trusted_proxies = getattr(settings, "TRUSTED_PROXIES", None) or ()
    networks = _networks(tuple(trusted_proxies))
    if not networks or not forwarded_for:
        return remote_addr or ""  # the common case, on every request: no parsing
    peer = _parse(remote_addr or "")
    if peer is None or not _is_trusted(peer, networks):
        return remote_addr or ""
    hop = peer
    for entry in reversed(forwarded_for.split(",")[-MAX_FORWARDED_ENTRIES:]):
        address = _parse(entry)
        if address is None:
            return str(hop)  # garbage where an address should be: the proxy is the client
        hop = address
        if not _is_trusted(address, networks):
            return str(address)
    return str(hop)  # every hop trusted: the left-most one


def request_client_address(request) -> str:
    """client_address() of a Django request (also what django-axes is told to use)."""
    return client_address(
        remote_addr=request.META.get("REMOTE_ADDR"),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
    )
