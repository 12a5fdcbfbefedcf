"""The client address rule (viswals.client_address): the socket's peer unless it is a trusted
proxy, then the right-most X-Forwarded-For entry that is not one."""

import pytest

from viswals.client_address import client_address


@pytest.fixture
def proxies(settings):
    def trust(*cidrs: str) -> None:
        settings.TRUSTED_PROXIES = list(cidrs)

    return trust


def test_forwarded_for_is_ignored_without_trusted_proxies(proxies):
    proxies()
    assert client_address(remote_addr="198.51.100.7", forwarded_for="127.0.0.1") == "198.51.100.7"


def test_forwarded_for_is_ignored_from_an_untrusted_peer(proxies):
    proxies("10.0.0.0/8")
    assert client_address(remote_addr="198.51.100.7", forwarded_for="1.2.3.4") == "198.51.100.7"


def test_right_most_untrusted_entry_behind_trusted_proxies(proxies):
    proxies("10.0.0.0/8", "192.0.2.1/32")
    # The client wrote "6.6.6.6" itself; the first proxy saw 203.0.113.5.
    chain = "6.6.6.6, 203.0.113.5, 10.1.1.1"
    assert client_address(remote_addr="192.0.2.1", forwarded_for=chain) == "203.0.113.5"


def test_garbage_in_the_chain_is_not_an_address(proxies):
    proxies("127.0.0.1/32")
    assert client_address(remote_addr="127.0.0.1", forwarded_for="x" * 10_000) == "127.0.0.1"
    assert client_address(remote_addr="127.0.0.1", forwarded_for="::1, 2001:db8::5 ") == (
        "2001:db8::5"
    )


def test_no_socket_address():
    assert client_address(remote_addr=None, forwarded_for=None) == ""
