"""SSRF guard: the visit tool only fetches public http(s) URLs, or the configured local sites.

The guard resolves a name once and returns the address it approved; the reader connects to that
address (keeping the name for `Host` and TLS), so a name that resolves to an allowed address when
checked and to a refused one when connecting (DNS rebinding) can never reach the refused one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Iterable, Optional
from urllib.parse import urlsplit

METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data"}


def _address_problem(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Optional[str]:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives here)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    return None


def host_key(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower()}:{port}"


@dataclass(frozen=True)
class Approval:
    """The guard's answer for one URL: why not (`problem`), or the address to connect to (None: the reader
    does not connect itself, e.g. Jina fetches remotely)."""

    problem: Optional[str] = None
    address: Optional[str] = None


async def approve(url: str, allowed_hosts: Iterable[str], resolve: bool = True) -> Approval:
    """Check `url`; `allowed_hosts` are 'host:port' of the local sites (by name or address).

    `resolve=False` is for readers that fetch remotely (Jina): only IP literals and local names are checked.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)  # raises on a bad port
    except ValueError as exc:
        return Approval(f"not a valid URL ({exc})")
    if parts.scheme not in ("http", "https"):
        return Approval(f"only http and https URLs can be visited, not '{parts.scheme or 'no scheme'}'")
    host = (parts.hostname or "").lower()
    if not host:
        return Approval("the URL has no host")
    allowed = set(allowed_hosts)
    configured = host_key(url) in allowed
    if not configured:
        if host in METADATA_HOSTS:
            return Approval("cloud metadata endpoints are never visited")
        if host == "localhost" or host.endswith(".localhost"):
            return Approval(f"'{host}' is a loopback name")
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return Approval()
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            return Approval(f"the host '{host}' does not resolve ({exc})")
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            return Approval(f"the host '{host}' does not resolve")
    if not configured:
        for ip in addresses:
            problem = None if f"{ip}:{port}" in allowed else _address_problem(ip)  # a local site by its address
            if problem:
                return Approval(f"'{host}' resolves to {problem} ({ip})")
    return Approval(address=str(addresses[0]))


async def refusal(url: str, allowed_hosts: Iterable[str], resolve: bool = True) -> Optional[str]:
    """Why `url` must not be fetched, or None (see `approve`)."""
    return (await approve(url, allowed_hosts, resolve)).problem
