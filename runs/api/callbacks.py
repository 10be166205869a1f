"""Callback URLs: where the server will later call out, so checked before they are stored.

A callback must not turn the server into a proxy into its own network: link-local addresses
(169.254.0.0/16, fe80::/10, where cloud metadata services live) and metadata host names are
always refused, and loopback, private and other non-global addresses are refused unless
``AGENTOPS_ALLOW_PRIVATE_CALLBACKS`` is on (a laptop, a test). Every address the host resolves
to is checked, since a name can resolve to several. Delivery must check again: DNS answers
change between now and then.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from runs.api.problems import CallbackUrlInvalid

MAX_LENGTH = 2000
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "169.254.169.254",
    }
)
#: Metadata services outside the link-local ranges (AWS IMDS over IPv6, Alibaba Cloud).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise CallbackUrlInvalid(f"callback_url: cannot resolve host {host!r} ({exc})") from None
    addresses: list[Address] = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone index
        addr = ipaddress.ip_address(raw)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        addresses.append(addr)
    if not addresses:
        raise CallbackUrlInvalid(f"callback_url: host {host!r} has no address")
    return addresses


def refusal(addr: Address, *, allow_private: bool) -> str:
    """Why the server must not call ``addr`` ("" when it may)."""
    if addr.is_link_local or addr in METADATA_ADDRESSES:
        return "is link-local or a metadata service"
    if addr.is_multicast or addr.is_unspecified:
        return "is not a unicast host address"
    if not addr.is_global and not allow_private:
        kind = "loopback" if addr.is_loopback else "private"
        return (
            f"is a {kind} address (set AGENTOPS_ALLOW_PRIVATE_CALLBACKS=true to allow loopback "
            "and private callbacks)"
        )
    return ""


def validate_callback_url(url: str, *, allow_private: bool | None = None) -> str:
    """Return ``url`` if the server may call it later; raise ``CallbackUrlInvalid`` if not."""
    if allow_private is None:
        allow_private = bool(getattr(settings, "AGENTOPS_ALLOW_PRIVATE_CALLBACKS", False))
    if not isinstance(url, str) or not url or len(url) > MAX_LENGTH:
        raise CallbackUrlInvalid(f"callback_url: give an http(s) URL of 1 to {MAX_LENGTH} chars")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise CallbackUrlInvalid(f"callback_url: not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise CallbackUrlInvalid("callback_url: only http:// and https:// URLs are allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise CallbackUrlInvalid("callback_url: the URL has no host")
    if parts.username or parts.password:
        raise CallbackUrlInvalid("callback_url: credentials in the URL are not allowed")
    if host in METADATA_HOSTS:
        raise CallbackUrlInvalid(f"callback_url: {host} is a metadata service")
    for addr in _resolve(host, port):
        reason = refusal(addr, allow_private=allow_private)
        if reason:
            raise CallbackUrlInvalid(f"callback_url: {host} resolves to {addr}, which {reason}")
    return url
