"""SSRF guard: the visit tool only fetches public http(s) URLs, or the configured local sites."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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


async def refusal(url: str, allowed_hosts: Iterable[str], resolve: bool = True) -> Optional[str]:
    """Why `url` must not be fetched, or None. `allowed_hosts` are 'host:port' of the local sites.

    `resolve=False` is for readers that fetch remotely (Jina): only IP literals and local names are checked.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"only http and https URLs can be visited, not '{parts.scheme or 'no scheme'}'"
    host = (parts.hostname or "").lower()
    if not host:
        return "the URL has no host"
    if host_key(url) in set(allowed_hosts):
        return None
    if host in METADATA_HOSTS:
        return "cloud metadata endpoints are never visited"
    if host == "localhost" or host.endswith(".localhost"):
        return f"'{host}' is a loopback name"
    try:
        ip = ipaddress.ip_address(host)
        addresses = [ip]
    except ValueError:
        if not resolve:
            return None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            return f"the host '{host}' does not resolve ({exc})"
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for ip in addresses:
        problem = _address_problem(ip)
        if problem:
            return f"'{host}' resolves to {problem} ({ip})"
    return None
