"""Image downloads connect to the address that was checked, so DNS cannot be rebound between check and connect.

The URL policy (``LabelStudioClient._check_external``) refuses image hosts that resolve to a private or
loopback address. Checking a name and then letting httpx resolve it again to connect leaves a window: a
hostile DNS server can answer a public address to the check and ``127.0.0.1`` (or the cloud metadata
address ``169.254.169.254``) to the connect. :class:`CheckedAddressTransport` closes it: its network
backend resolves the host once per connection, refuses the connection when any answer is not a public
address (unless ``ALLOW_PRIVATE_IMAGE_URLS``), and opens the socket to one of those very addresses.

Only the TCP connect is replaced: httpcore still sends the URL's hostname in the ``Host`` header and as
TLS SNI, and verifies the server certificate against that hostname. Every connection (redirect hops too:
they go through the same transport) is checked; a kept-alive connection stays on the address it was
opened to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import httpcore
import httpx

from backend.errors import ImageAccessError


def resolve(host: str, port: int | None = None) -> list[str]:
    """Every address ``host`` resolves to (an IP literal is its own answer), in resolver order, once each.

    Raises:
        ImageAccessError: the name does not resolve.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageAccessError(f"cannot resolve image host {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def non_public(addresses: Iterable[str]) -> list[str]:
    """The addresses that are not globally routable (loopback, private, link-local, reserved...)."""
    return [address for address in addresses if not ipaddress.ip_address(address.split("%", 1)[0]).is_global]


def checked_addresses(host: str, port: int | None, *, allow_private: bool) -> list[str]:
    """Resolve ``host`` once and return its addresses, refusing them all if any one is not public.

    Raises:
        ImageAccessError: the name does not resolve, or an answer is private (and private ones are refused).
    """
    addresses = resolve(host, port)
    private = [] if allow_private else non_public(addresses)
    if private:
        raise ImageAccessError(
            f"refused image host {host}: it resolves to {', '.join(private)}, a private or loopback address "
            "(set ALLOW_PRIVATE_IMAGE_URLS=true to allow)"
        )
    return addresses


class CheckedAddressBackend(httpcore.SyncBackend):
    """httpcore's blocking socket backend, connecting only to addresses :func:`checked_addresses` let through."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to the first reachable checked address of ``host`` (the name is not resolved again)."""
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in checked_addresses(host, port, allow_private=self.allow_private):
            try:
                # an IP literal: the socket layer parses it, no DNS query is made
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # checked_addresses returns at least one address or raises
        raise failure


class CheckedAddressTransport(httpx.HTTPTransport):
    """httpx's default transport (TLS verified, no proxy from the environment) over :class:`CheckedAddressBackend`.

    Args:
        allow_private: ``ALLOW_PRIVATE_IMAGE_URLS``: connect to private and loopback addresses too.
    """

    def __init__(self, *, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        limits = httpx.Limits()
        # httpx takes no network backend; HTTPTransport sends every request through self._pool, so that pool
        # is rebuilt with one (tests/reliability/test_dns_rebinding.py fails if a new httpx stops using it)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedAddressBackend(allow_private=allow_private),
        )
