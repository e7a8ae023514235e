"""The egress proxy of network mode ``public``: cells reach public addresses only.

A cell's network namespace has no route out (:mod:`.netns`); its only way out is an HTTP
proxy listening on the namespace's loopback, whose socket the pool holds. The proxy runs in
the server's process:

* ``CONNECT host:port`` (HTTPS and any other TCP) opens a tunnel;
* ``GET http://host/path`` (plain HTTP, absolute form) is forwarded with ``Connection: close``.

Either way the proxy resolves the name itself, keeps only addresses that pass
:func:`refusal`, and connects to that checked address: a DNS answer cannot change between
the check and the connection (rebinding), and the cell never learns a private address it
could try directly. Cells find the proxy through ``HTTP(S)_PROXY``/``ALL_PROXY``, which
httpx, requests, urllib and aiohttp (``trust_env=True``) honour; code that ignores them simply
has no route.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HEAD_LIMIT = 16 * 1024
_HEAD_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 15.0
_CHUNK = 64 * 1024
#: How long a tunnel stays open in one direction after the other ended.
_HALF_CLOSED_GRACE_S = 30.0
#: Tunnels one worker's cells may hold open at once.
MAX_TUNNELS = 64
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization",
               b"proxy-authenticate", b"te", b"trailer", b"upgrade"}


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address stands for (mapped, 6to4, Teredo, NAT64, compatible)."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64 or ip in _IPV4_COMPATIBLE:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _not_public(ip: IPAddress) -> bool:
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_multicast or ip.is_reserved or ip.is_unspecified)


def is_local(ip: IPAddress) -> bool:
    """Whether ``ip`` is an address of this host (any interface): the kernel lets us bind it.

    This covers every address the server itself listens on, whatever the port.
    """
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def refusal(ip: IPAddress) -> str | None:
    """Why a cell may not reach ``ip`` (``None``: it may).

    Refused: anything Python's ``ipaddress`` does not call globally reachable (loopback,
    private, link-local, shared, documentation, ...), multicast, reserved and unspecified
    addresses, IPv6 forms embedding such an IPv4 address, and every address of this host.
    """
    for candidate in (ip, *(_embedded_ipv4(ip) if ip.version == 6 else ())):
        if _not_public(candidate):
            return f"{ip} is not a public address"
    if is_local(ip):
        return f"{ip} is an address of the server's own host"
    return None


class EgressPolicy:
    """Decides where cells may connect: public addresses, plus test-only exceptions.

    Args:
        allow: Networks let through whatever :func:`refusal` says. For tests only (they have
            no internet to fetch from); not a server setting.
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: list[Network] = [ipaddress.ip_network(n, strict=False) for n in allow]

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a cell may not reach ``ip``, or ``None``."""
        if any(ip.version == n.version and ip in n for n in self.allow):
            return None
        return refusal(ip)

    async def resolve(self, host: str, port: int) -> tuple[list[str], str | None]:
        """The addresses of ``host`` a cell may reach, and the first refusal met (if any)."""
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
            _CONNECT_TIMEOUT_S)
        allowed: list[str] = []
        refused: str | None = None
        for _family, _type, _proto, _name, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            reason = self.refusal(ip)
            if reason is None:
                if str(ip) not in allowed:
                    allowed.append(str(ip))
            elif refused is None:
                refused = reason
        return allowed, refused


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def _split_host_port(authority: str, default_port: int | None) -> tuple[str, int]:
    if authority.count(":") > 1 and not authority.startswith("["):
        # An IPv6 literal without brackets (some clients send "::1:443"): the port is last.
        host, _, port_text = authority.rpartition(":")
        authority = f"[{host}]:{port_text}"
    parsed = urlsplit(f"//{authority}")
    try:
        port = parsed.port
    except ValueError:
        port = None
        default_port = None
    host = parsed.hostname or ""
    port = port if port is not None else default_port
    if not host or port is None or not 0 < port < 65536:
        raise _Refused(400, "Bad Request", f"not a host:port: {authority[:200]!r}")
    return host, port


class EgressProxy:
    """Serves the cells of one worker through a listening socket of the worker's namespace."""

    def __init__(self, policy: EgressPolicy, *, max_tunnels: int = MAX_TUNNELS) -> None:
        self.policy = policy
        self._slots = asyncio.Semaphore(max_tunnels)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, listener: socket.socket) -> None:
        """Start accepting on ``listener`` (the proxy owns it from now on)."""
        listener.setblocking(False)
        self._server = await asyncio.start_server(self._handle, sock=listener,
                                                  limit=_HEAD_LIMIT)

    def abort(self) -> None:
        """Stop accepting and cancel every open tunnel (without waiting for them)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._handlers):
            task.cancel()

    async def close(self) -> None:
        """Stop accepting, drop every open tunnel and wait until they are gone."""
        handlers = list(self._handlers)
        self.abort()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if self._slots.locked():
                await self._answer(writer, 503, "Too Many Connections",
                                   f"at most {MAX_TUNNELS} connections at once")
                return
            async with self._slots:
                await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.LimitOverrunError, TimeoutError):
            await self._answer(writer, 431, "Request Header Fields Too Large",
                               "the request head is too large or too slow")
            return
        lines = head[:-4].split(b"\r\n")
        try:
            method, target, version = lines[0].decode("latin-1").split(" ")
            upstream, forwarded = self._plan(method, target, version, lines[1:])
            reader_up, writer_up = await self._connect(*upstream)
        except _Refused as exc:
            if exc.status == 403:
                log.info("sandbox egress refused: %s", exc.detail)
            await self._answer(writer, exc.status, exc.reason, exc.detail)
            return
        except ValueError:
            await self._answer(writer, 400, "Bad Request", "not an HTTP proxy request")
            return
        try:
            if forwarded is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                writer_up.write(forwarded)
            await _relay(reader, writer, reader_up, writer_up)
        finally:
            writer_up.close()
            with contextlib.suppress(Exception):
                await writer_up.wait_closed()

    def _plan(self, method: str, target: str, version: str,
              headers: Sequence[bytes]) -> tuple[tuple[str, int], bytes | None]:
        """Where to connect, and the request to send there (``None`` for a tunnel)."""
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        if method == "CONNECT":
            return _split_host_port(target, None), None
        url = urlsplit(target)
        if url.scheme != "http" or not url.netloc:
            raise _Refused(400, "Bad Request",
                           "send https:// and other TCP through CONNECT, http:// in absolute form")
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        request = b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *kept,
                                b"Connection: close", b"", b""])
        return _split_host_port(url.netloc, 80), request

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
        try:
            allowed, refused = await self.policy.resolve(host, port)
        except (OSError, TimeoutError) as exc:
            raise _Refused(502, "Bad Gateway", f"cannot resolve {host!r}: {exc}") from None
        if not allowed:
            detail = f"{host} is not reachable from Python cells: {refused}"
            raise _Refused(403, f"Destination not allowed: {refused}", detail)
        last: Exception | None = None
        for ip in allowed:  # the checked address itself: no second lookup
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                    return await asyncio.open_connection(ip, port, limit=_CHUNK)
            except (OSError, TimeoutError) as exc:
                last = exc
        raise _Refused(502, "Bad Gateway", f"cannot connect to {host}:{port}: {last}")

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, status: int, reason: str,
                      detail: str) -> None:
        body = f"rowforge sandbox egress proxy: {detail}\n".encode()
        reason = reason.replace("\r", " ").replace("\n", " ")
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 reader_up: asyncio.StreamReader, writer_up: asyncio.StreamWriter) -> None:
    """Copy both ways; once one way ends, the other gets a short grace to finish."""
    ways = {asyncio.ensure_future(_pipe(reader, writer_up)),
            asyncio.ensure_future(_pipe(reader_up, writer))}
    try:
        _, pending = await asyncio.wait(ways, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            await asyncio.wait(pending, timeout=_HALF_CLOSED_GRACE_S)
    finally:
        for way in ways:
            way.cancel()
        await asyncio.gather(*ways, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (half-close)."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
