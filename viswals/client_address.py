"""Which address a request comes from: the socket's peer, unless that peer is a proxy listed in
settings.TRUSTED_PROXIES; then the right-most X-Forwarded-For entry that is not a trusted proxy
(each proxy appends the address it saw, so entries left of the last untrusted one could have
been written by the client). One rule for the fast read path, DRF's throttles and the admin
login lockout."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

# A forwarded chain longer than this is not a real proxy chain: only its last entries count.
MAX_FORWARDED_ENTRIES = 20


@lru_cache(maxsize=16)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies if proxy)


def _is_trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(*, remote_addr: str | None, forwarded_for: str | None) -> str:
    """The client's address (see the module docstring); "" when the socket has none."""
    remote = remote_addr or ""
    networks = _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ()) or ()))
    if not networks or not forwarded_for or not _is_trusted(remote, networks):
        return remote
    entries = forwarded_for.split(",")[-MAX_FORWARDED_ENTRIES:]
    for entry in reversed(entries):
        address = entry.strip()
        if not _is_trusted(address, networks):
            try:
                return str(ipaddress.ip_address(address))
            except ValueError:
                return remote  # garbage where an address should be: the proxy is the client
    return entries[0].strip() or remote  # every hop trusted: the left-most one


def request_client_address(request) -> str:
    """client_address() of a Django request (also what django-axes is told to use)."""
    return client_address(
        remote_addr=request.META.get("REMOTE_ADDR"),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
    )
