"""The client address rule (users.client_address): the socket's peer unless it is a trusted
proxy, then the right-most X-Forwarded-For entry that is not one."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from users.client_address import MAX_FORWARDED_ENTRIES, client_address

PROXIES = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]
LONG_CHAIN = ", ".join(["198.51.100.1"] + ["10.0.0.9"] * (MAX_FORWARDED_ENTRIES + 5))


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "client"),
    [
        # No proxy trusted, or a peer that is not one: the header is the client's own word.
        ("203.0.113.7", "198.51.100.1", [], "203.0.113.7"),
        ("198.51.100.7", "127.0.0.1", [], "198.51.100.7"),
        ("203.0.113.7", "10.0.0.1", PROXIES, "203.0.113.7"),
        # Behind trusted proxies: the right-most entry that is not one of them.
        ("10.0.0.5", "198.51.100.1", PROXIES, "198.51.100.1"),
        ("10.0.0.5", "1.1.1.1, 6.6.6.6, 198.51.100.1", PROXIES, "198.51.100.1"),  # forgeries left
        ("10.0.0.5", "1.1.1.1, 198.51.100.1, 192.0.2.1, 10.9.9.9", PROXIES, "198.51.100.1"),
        ("10.0.0.5", "10.0.0.7, 10.0.0.6", PROXIES, "10.0.0.7"),  # every hop trusted
        ("10.0.0.5", None, PROXIES, "10.0.0.5"),  # no header: the proxy itself
        ("10.0.0.5", "", PROXIES, "10.0.0.5"),
        # Garbage stops at the proxy that wrote it; a long chain is read only so far.
        ("10.0.0.5", "198.51.100.1, unknown", PROXIES, "10.0.0.5"),
        ("10.0.0.5", "198.51.100.1, nonsense, 10.0.0.7", PROXIES, "10.0.0.7"),
        ("10.0.0.5", "x" * 10_000, PROXIES, "10.0.0.5"),
        ("10.0.0.5", LONG_CHAIN, PROXIES, "10.0.0.9"),
        # Ports, brackets, IPv6 and IPv4-mapped peers.
        ("10.0.0.5", "198.51.100.1:4711", PROXIES, "198.51.100.1"),
        ("2001:db8::1", "[2001:db9::5]:443", PROXIES, "2001:db9::5"),
        ("::ffff:10.0.0.5", "198.51.100.1", PROXIES, "198.51.100.1"),
        # No socket address at all.
        (None, "198.51.100.1", PROXIES, ""),
        ("", None, PROXIES, ""),
        (None, None, [], ""),
    ],
)
def test_client_address(peer, forwarded, proxies, client):
    assert client_address(remote_addr=peer, forwarded_for=forwarded, trusted_proxies=proxies) == (
        client
    )


def test_the_setting_is_read_when_no_list_is_given(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(remote_addr="10.1.2.3", forwarded_for="198.51.100.1") == "198.51.100.1"
    del settings.TRUSTED_PROXIES
    assert client_address(remote_addr="10.1.2.3", forwarded_for="198.51.100.1") == "10.1.2.3"


def test_a_bad_trusted_proxies_entry_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="not-an-ip"):
        client_address(
            remote_addr="10.0.0.5", forwarded_for="1.2.3.4", trusted_proxies=["not-an-ip"]
        )
