"""The client address rule (viswals.client_address): the socket's peer unless it is a trusted
proxy, then the right-most X-Forwarded-For entry that is not one."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from viswals.client_address import MAX_FORWARDED_ENTRIES, client_address


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


PROXIES = ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]


def test_without_trusted_proxies_the_header_is_ignored():
    assert (
        client_address(remote_addr="203.0.113.7", forwarded_for="198.51.100.1", trusted_proxies=[])
        == "203.0.113.7"
    )


def test_the_setting_is_read_when_no_list_is_given(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(remote_addr="10.1.2.3", forwarded_for="198.51.100.1") == "198.51.100.1"
    del settings.TRUSTED_PROXIES
    assert client_address(remote_addr="10.1.2.3", forwarded_for="198.51.100.1") == "10.1.2.3"


def test_a_peer_that_is_not_a_trusted_proxy_cannot_forward():
    assert (
        client_address(remote_addr="203.0.113.7", forwarded_for="10.0.0.1", trusted_proxies=PROXIES)
        == "203.0.113.7"
    )


def test_behind_a_trusted_proxy_the_right_most_entry_is_the_client():
    assert (
        client_address(
            remote_addr="10.0.0.5", forwarded_for="198.51.100.1", trusted_proxies=PROXIES
        )
        == "198.51.100.1"
    )


def test_entries_left_of_the_client_are_forgeries_and_ignored():
    header = "1.1.1.1, 6.6.6.6, 198.51.100.1"
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=header, trusted_proxies=PROXIES)
        == "198.51.100.1"
    )


def test_a_chain_of_trusted_proxies_is_walked_from_the_right():
    header = "1.1.1.1, 198.51.100.1, 192.0.2.1, 10.9.9.9"
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=header, trusted_proxies=PROXIES)
        == "198.51.100.1"
    )


def test_when_every_hop_is_trusted_the_left_most_is_the_client():
    assert (
        client_address(
            remote_addr="10.0.0.5", forwarded_for="10.0.0.7, 10.0.0.6", trusted_proxies=PROXIES
        )
        == "10.0.0.7"
    )


def test_no_header_from_a_trusted_proxy_gives_the_proxy():
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=None, trusted_proxies=PROXIES)
        == "10.0.0.5"
    )
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for="", trusted_proxies=PROXIES)
        == "10.0.0.5"
    )


def test_a_garbage_entry_stops_at_the_proxy_that_wrote_it():
    header = "198.51.100.1, unknown"
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=header, trusted_proxies=PROXIES)
        == "10.0.0.5"
    )
    header = "198.51.100.1, nonsense, 10.0.0.7"
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=header, trusted_proxies=PROXIES)
        == "10.0.0.7"
    )


def test_ports_brackets_and_ipv6():
    assert client_address(
        remote_addr="10.0.0.5", forwarded_for="198.51.100.1:4711", trusted_proxies=PROXIES
    ) == ("198.51.100.1")
    assert client_address(
        remote_addr="2001:db8::1", forwarded_for="[2001:db9::5]:443", trusted_proxies=PROXIES
    ) == ("2001:db9::5")
    assert client_address(
        remote_addr="::ffff:10.0.0.5", forwarded_for="198.51.100.1", trusted_proxies=PROXIES
    ) == ("198.51.100.1")


def test_an_unknown_peer_is_empty():
    assert (
        client_address(remote_addr=None, forwarded_for="198.51.100.1", trusted_proxies=PROXIES)
        == ""
    )
    assert client_address(remote_addr="", forwarded_for=None, trusted_proxies=PROXIES) == ""


def test_a_long_header_is_read_only_so_far():
    header = ", ".join(["198.51.100.1"] + ["10.0.0.9"] * (MAX_FORWARDED_ENTRIES + 5))
    assert (
        client_address(remote_addr="10.0.0.5", forwarded_for=header, trusted_proxies=PROXIES)
        == "10.0.0.9"
    )


def test_a_bad_trusted_proxies_entry_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured, match="not-an-ip"):
        client_address(
            remote_addr="10.0.0.5", forwarded_for="1.2.3.4", trusted_proxies=["not-an-ip"]
        )
