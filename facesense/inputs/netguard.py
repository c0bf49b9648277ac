"""Fetching URLs that people give us without letting them reach inside the network (SSRF guard).

A URL's host is resolved once, every address is checked, and the connection goes to the vetted
address (never resolved again, so DNS rebinding can't swap it); redirects are followed by hand
and each hop is vetted the same way. One deadline covers connect, redirects and the body.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote, urljoin, urlsplit

from facesense.errors import ConfigError, SourceError
from facesense.settings import Settings

SCHEMES = ("http", "https")
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "FaceSense/1"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class FetchError(SourceError):
    """A URL could not be fetched; the message is the reason shown on its result row."""


class Refused(FetchError):
    """The URL is refused by policy (scheme, blocked address, malformed): retrying won't help."""


@dataclass(frozen=True)
class Limits:
    """What one fetch may do: bytes, seconds, and the networks allowed despite the rules."""

    max_bytes: int
    connect_timeout: float = 5
    timeout: float = 30  # total: connect, every redirect, headers and body
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, max_bytes: int | None = None) -> Limits:
        """Limits from FACESENSE_URL_* and FACESENSE_MAX_IMAGE_BYTES."""
        return cls(max_bytes=settings.max_image_bytes if max_bytes is None else max_bytes,
                   connect_timeout=settings.url_connect_timeout_s,
                   timeout=settings.url_timeout_s,
                   allow=allowed_networks(settings.url_allow_networks))


def allowed_networks(spec: str) -> tuple[Network, ...]:
    """Parse comma-separated CIDRs (FACESENSE_URL_ALLOW_NETWORKS)."""
    try:
        return tuple(ipaddress.ip_network(p.strip(), strict=False)
                     for p in spec.split(",") if p.strip())
    except ValueError as e:
        raise ConfigError(f"FACESENSE_URL_ALLOW_NETWORKS: {e}") from None


def _embedded_v4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped or ip.sixtofour:
        return ip.ipv4_mapped or ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_blocked(ip: Address, allow: tuple[Network, ...] = ()) -> bool:
    """True for loopback, private, link-local, multicast, unspecified, reserved and other
    non-global addresses (also when carried inside IPv6), unless an allowed network holds it."""
    if any(ip in net for net in allow):
        return False
    inner = _embedded_v4(ip)
    if inner is not None and is_blocked(inner, allow):
        return True
    return (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
            or ip.is_unspecified or ip.is_reserved or not ip.is_global)


@dataclass(frozen=True)
class Target:
    """A vetted URL: where to connect (ip) and what to ask for (host, path)."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str
    path: str


def vet(url: str, allow: tuple[Network, ...] = ()) -> Target:
    """Check a URL's scheme, resolve its host and check every address; Refused if not allowed."""
    try:
        parts = urlsplit(url)
        port, host = parts.port, parts.hostname
    except ValueError:
        raise Refused("bad URL") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise Refused(f"scheme not allowed: {scheme or '(none)'}")
    if not host:
        raise Refused("bad URL: no host")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):  # unknown name, or one no resolver takes
        raise FetchError(f"cannot resolve host {host}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    blocked = sorted((a for a in addresses if is_blocked(a, allow)),
                     key=lambda a: (a.version, int(a)))
    if blocked:  # one bad address refuses the host: a resolver may hand out any of them
        raise Refused(f"blocked address {blocked[0]}")
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return Target(url, scheme, host, port, str(addresses[0]), path)


def _dial(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to an address literal, with no name lookup on the way."""
    sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Pinned(http.client.HTTPConnection):
    """HTTP to a vetted address, with the URL's host in the Host header."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout)
        self.ip = target.ip

    def connect(self):
        self.sock = self.raw = _dial(self.ip, self.port, self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    """HTTPS to a vetted address; the certificate is checked against the URL's host name."""

    def __init__(self, target: Target, timeout: float):
        super().__init__(target.host, target.port, timeout=timeout,
                         context=ssl.create_default_context())
        self.ip = target.ip

    def connect(self):
        sock = _dial(self.ip, self.port, self.timeout)
        self.sock = self.raw = self._context.wrap_socket(sock, server_hostname=self.host)


def _cut(sock: socket.socket) -> None:
    """Shut a socket down from another thread: a blocked read returns at once."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _exchange(target: Target, method: str, body: bytes | None, headers: dict, limits: Limits,
              deadline: float, read_body: bool = True,
              sink: BinaryIO | None = None) -> tuple[int, str | None, bytes]:
    """One request to a vetted target: (status, Location header, 2xx body up to max_bytes);
    with a sink, the body is written there instead (b"" returned)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchError("timed out")
    cls = _PinnedTLS if target.scheme == "https" else _Pinned
    conn = cls(target, timeout=min(limits.connect_timeout, remaining))
    timer = None
    try:
        conn.connect()
        conn.raw.settimeout(max(0.001, deadline - time.monotonic()))
        # The whole exchange ends at the deadline, even against a server that trickles bytes.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, [conn.raw])
        timer.daemon = True
        timer.start()
        conn.request(method, target.path, body=body,
                     headers={"User-Agent": USER_AGENT, "Accept": "image/*, */*", **headers})
        resp = conn.getresponse()
        if resp.status in REDIRECTS or not 200 <= resp.status < 300 or not read_body:
            return resp.status, resp.getheader("Location"), b""
        length = resp.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limits.max_bytes:
            raise FetchError(f"too large: over {limits.max_bytes} bytes")
        data, size = bytearray(), 0
        while chunk := resp.read1(1 << 16):
            size += len(chunk)
            if size > limits.max_bytes:
                raise FetchError(f"too large: over {limits.max_bytes} bytes")
            if sink is None:
                data += chunk
            else:  # a large file goes to disk as it arrives, never whole into memory
                sink.write(chunk)
        if time.monotonic() >= deadline:
            raise FetchError("timed out")  # cut short by the timer: the body may be incomplete
        return resp.status, None, bytes(data)
    except FetchError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as e:
        if time.monotonic() >= deadline or isinstance(e, TimeoutError):
            raise FetchError("timed out") from None
        if isinstance(e, ssl.SSLError):
            raise FetchError(f"tls error: {e.reason or e}") from None
        if isinstance(e, ConnectionRefusedError):
            raise FetchError("connection refused") from None
        raise FetchError(f"cannot fetch: {type(e).__name__}: {e}") from None
    finally:
        if timer:
            timer.cancel()
        conn.close()


def _follow(url: str, limits: Limits, method: str,
            sink: BinaryIO | None = None) -> tuple[int, bytes]:
    """One GET or HEAD, following up to MAX_REDIRECTS redirects, each hop vetted again."""
    deadline = time.monotonic() + limits.timeout
    for _ in range(MAX_REDIRECTS + 1):
        target = vet(url, limits.allow)
        status, location, data = _exchange(target, method, None, {}, limits, deadline,
                                           read_body=method == "GET", sink=sink)
        if status in REDIRECTS and location:
            url = urljoin(target.url, location.strip())
            continue
        return status, data
    raise FetchError(f"too many redirects (over {MAX_REDIRECTS})")


def fetch(url: str, limits: Limits, sink: BinaryIO | None = None) -> bytes:
    """GET a URL's body (written to sink instead, if given), redirects followed and vetted."""
    status, data = _follow(url, limits, "GET", sink)
    if not 200 <= status < 300:
        raise FetchError(f"http {status}")
    return data


def head(url: str, limits: Limits) -> int:
    """The status a HEAD request ends with, redirects followed and vetted as fetch does."""
    return _follow(url, limits, "HEAD")[0]


def post(url: str, body: bytes, headers: dict, limits: Limits) -> int:
    """POST once to a vetted URL (redirects are not followed); returns the HTTP status."""
    target = vet(url, limits.allow)
    deadline = time.monotonic() + limits.timeout
    return _exchange(target, "POST", body, {"Content-Type": "application/json", **headers},
                     limits, deadline, read_body=False)[0]
