"""The network policy of Python cells, with real worker processes and real sockets.

``off``: no socket at all. ``public``: only public addresses, through the pool's egress proxy,
checked by resolved address. Both: no listening, no UNIX sockets (the database's socket), no
loopback, private or link-local address, nothing of the server's own host.

This machine has no internet, so the allowed path is proven against a local HTTP server on
127.0.0.2 that the pool's test-only ``egress_allow`` lets through; 127.0.0.1 stays refused.
"""

from __future__ import annotations

import http.server
import ipaddress
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from rowforge.server.sandbox import SandboxError, SandboxPool
from rowforge.server.sandbox.egress import EgressPolicy, refusal
from tests.support import postgres

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALLOWED_TEST_HOST = "127.0.0.2"  # loopback, let through by egress_allow only
BODY = b"hello from a public address"


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[str, int]]:
    """A small HTTP server on 127.0.0.2 (stands in for a public web site)."""
    server = http.server.ThreadingHTTPServer((ALLOWED_TEST_HOST, 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[0], server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def loopback_service() -> Iterator[int]:
    """A listening TCP port on 127.0.0.1 standing in for the server's own gRPC port."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def off_pool() -> AsyncIterator[SandboxPool]:
    async with SandboxPool(workers=1, network="off", preload=()) as pool:
        yield pool


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def public_pool() -> AsyncIterator[SandboxPool]:
    if os.geteuid() != 0:
        pytest.skip("mode public needs a root server (a network namespace per worker)")
    async with SandboxPool(workers=1, network="public", preload=(),
                           egress_allow=[f"{ALLOWED_TEST_HOST}/32"]) as pool:
        yield pool


@pytest.fixture(params=["off", "public"])
def pool(request: pytest.FixtureRequest) -> SandboxPool:
    return request.getfixturevalue(f"{request.param}_pool")


async def run_error(pool: SandboxPool, code: str, row: dict | None = None) -> SandboxError:
    with pytest.raises(SandboxError) as info:
        await pool.run(code, row or {}, "out")
    return info.value


def assert_network_refused(error: SandboxError) -> None:
    """A cell error that says the network was refused (by the kernel or by the proxy)."""
    text = error.message
    assert error.kind in ("forbidden", "exception"), error
    assert ("denied network access" in text or "Permission denied" in text
            or "not a public address" in text or "own host" in text), error


# -- what the pool reports -------------------------------------------------------------------

async def test_pools_report_their_network_layers(pool: SandboxPool) -> None:
    info = pool.isolation
    assert info["network"] == pool.network_requested
    assert "seccomp" in info["network_layers"]
    if os.geteuid() == 0:
        assert "netns" in info["network_layers"]


async def test_unknown_network_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="network"):
        SandboxPool(network="open")


# -- refused in both modes -------------------------------------------------------------------

@pytest.mark.skipif(postgres.postgres_url() is None, reason=postgres.SKIP_REASON)
async def test_database_token_forging_is_refused(pool: SandboxPool) -> None:
    """The red-team attack: a cell connects to PostgreSQL on loopback (trust auth) and
    inserts a row. The same insert works from this process, so only the sandbox stops it."""
    import asyncpg

    dsn = postgres.postgres_url().replace("postgresql+asyncpg://", "postgresql://")  # type: ignore[union-attr]
    table = f"forged_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE {table} (token text)")
        await conn.execute(f"INSERT INTO {table} VALUES ('from the test itself')")
        code = (
            "import asyncio, asyncpg\n"
            "async def forge():\n"
            "    conn = await asyncpg.connect(row['dsn'], timeout=5)\n"
            "    await conn.execute(f\"INSERT INTO {row['table']} VALUES ('forged')\")\n"
            "asyncio.run(forge())\n"
            "row['out'] = 'inserted'\n"
        )
        for target in (dsn, dsn.replace("@127.0.0.1:5432", "@localhost:5432"),
                       "postgresql://postgres@/test?host=/var/run/postgresql"):
            error = await run_error(pool, code, {"dsn": target, "table": table})
            assert error.kind in ("forbidden", "exception"), error
        rows = await conn.fetch(f"SELECT token FROM {table}")
        assert [r["token"] for r in rows] == ["from the test itself"]
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_unix_sockets_are_refused(pool: SandboxPool, tmp_path: object) -> None:
    """A pathname UNIX socket (a database's, Docker's) is as good as loopback: refused."""
    code = ("import socket\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "row['out'] = 'created'\n")
    error = await run_error(pool, code)
    assert error.kind == "forbidden" and "denied network access" in error.message, error


async def test_socketpair_still_works(pool: SandboxPool) -> None:
    """asyncio's event loop needs a socketpair; it is connected only to itself."""
    code = ("import asyncio\n"
            "async def main():\n"
            "    await asyncio.sleep(0)\n"
            "    return 7\n"
            "row['out'] = asyncio.run(main())\n")
    assert await pool.run(code, {}, "out") == 7


@pytest.mark.parametrize("address", ["127.0.0.1", "0.0.0.0", "::1", "::"])
async def test_listening_is_refused(pool: SandboxPool, address: str) -> None:
    family = "socket.AF_INET6" if ":" in address else "socket.AF_INET"
    code = ("import socket\n"
            f"s = socket.socket({family}, socket.SOCK_STREAM)\n"
            f"s.bind(({address!r}, 0))\n"
            "s.listen()\n"
            "row['out'] = s.getsockname()[1]\n")
    error = await run_error(pool, code)
    assert error.kind == "forbidden" and "denied network access" in error.message, error


async def test_udp_bind_is_refused(pool: SandboxPool) -> None:
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.bind(('127.0.0.1', 0))\n"
            "row['out'] = 1\n")
    error = await run_error(pool, code)
    assert error.kind == "forbidden", error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254",
                                  "192.168.1.1", "172.16.0.1"])
async def test_direct_connections_are_refused(pool: SandboxPool, host: str,
                                              loopback_service: int) -> None:
    """A raw TCP connection, bypassing any proxy (the server's own port for loopback)."""
    port = loopback_service if host in ("127.0.0.1", "localhost") else 80
    code = ("import socket\n"
            "s = socket.create_connection((row['host'], row['port']), timeout=3)\n"
            "row['out'] = 'connected'\n")
    error = await run_error(pool, code, {"host": host, "port": port})
    assert error.kind in ("forbidden", "exception"), error
    assert "connected" not in error.message


async def test_io_uring_is_refused(pool: SandboxPool) -> None:
    """io_uring could open and connect sockets behind seccomp's back."""
    code = ("import ctypes, errno\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "params = ctypes.create_string_buffer(120)\n"
            "fd = libc.syscall(425, 8, params)\n"  # io_uring_setup
            "row['out'] = [fd, ctypes.get_errno()]\n")
    fd, err = await pool.run(code, {}, "out")
    assert fd == -1 and err == 38  # ENOSYS


async def test_new_network_namespaces_are_refused(pool: SandboxPool) -> None:
    code = ("import ctypes\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "row['out'] = [libc.unshare(0x40000000 | 0x10000000), ctypes.get_errno()]\n")
    result, err = await pool.run(code, {}, "out")
    assert result == -1 and err == 1  # EPERM


# -- mode off --------------------------------------------------------------------------------

async def test_off_refuses_every_socket(off_pool: SandboxPool, web: tuple[str, int]) -> None:
    for family in ("AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"):
        error = await run_error(off_pool, f"import socket\nsocket.socket(socket.{family})\n"
                                          "row['out'] = 1\n")
        assert error.kind == "forbidden", (family, error)
        assert 'sandbox_network = "off"' in error.message
    host, port = web
    error = await run_error(off_pool, "import httpx\n"
                                      "row['out'] = httpx.get(row['url'], timeout=5).text\n",
                            {"url": f"http://{host}:{port}/"})
    assert error.kind == "exception" and "ConnectError" in error.message, error


# -- mode public -----------------------------------------------------------------------------

async def test_public_fetch_works_through_the_proxy(public_pool: SandboxPool,
                                                    web: tuple[str, int]) -> None:
    host, port = web
    code = ("import httpx\n"
            "r = httpx.get(row['url'], timeout=10)\n"
            "row['out'] = [r.status_code, r.text]\n")
    assert await public_pool.run(code, {"url": f"http://{host}:{port}/x"}, "out") == [
        200, BODY.decode()]
    # CONNECT (how https:// and any other TCP go through).
    tunnel = ("import http.client, os, urllib.parse\n"
              "proxy = urllib.parse.urlsplit(os.environ['HTTPS_PROXY'])\n"
              "c = http.client.HTTPConnection(proxy.hostname, proxy.port, timeout=10)\n"
              "c.set_tunnel(row['host'], row['port'])\n"
              "c.request('GET', '/')\n"
              "row['out'] = c.getresponse().read().decode()\n")
    assert await public_pool.run(tunnel, {"host": host, "port": port}, "out") == BODY.decode()


async def test_public_fetch_fails_without_the_proxy(public_pool: SandboxPool,
                                                    web: tuple[str, int]) -> None:
    """Ignoring the proxy settings gets nowhere: the namespace has no route out."""
    host, port = web
    code = ("import httpx\n"
            "row['out'] = httpx.get(row['url'], timeout=5, trust_env=False).text\n")
    error = await run_error(public_pool, code, {"url": f"http://{host}:{port}/"})
    assert error.kind == "exception" and "ConnectError" in error.message, error


@pytest.mark.parametrize("host", [
    "127.0.0.1", "localhost", "vm-hostname", "2130706433", "0x7f.1", "[::1]",
    "[::ffff:127.0.0.1]", "[::ffff:a9fe:a9fe]", "10.1.2.3", "169.254.169.254",
    "192.168.0.1", "172.16.5.4", "0.0.0.0", "[fe80::1]", "[fc00::1]", "224.0.0.1",
    "100.64.0.1",
])
async def test_proxy_refuses_private_targets_by_resolved_address(
        public_pool: SandboxPool, host: str, loopback_service: int) -> None:
    """Names and odd spellings are resolved first; the address decides, never the name."""
    if host == "vm-hostname":
        host = socket.gethostname()  # resolves to this host (127.0.0.1 or its own address)
    url = f"http://{host}:{loopback_service}/"
    plain = await public_pool.run(
        "import httpx\nr = httpx.get(row['url'], timeout=10)\n"
        "row['out'] = [r.status_code, r.text]\n", {"url": url}, "out")
    assert plain[0] == 403, plain
    assert "not a public address" in plain[1] or "own host" in plain[1], plain
    error = await run_error(public_pool, "import httpx\n"
                            "row['out'] = httpx.get(row['url'], timeout=10).status_code\n",
                            {"url": url.replace("http://", "https://")})
    assert error.kind == "exception" and "ProxyError: 403" in error.message, error


async def test_proxy_refuses_garbage(public_pool: SandboxPool) -> None:
    code = ("import os, socket, urllib.parse\n"
            "proxy = urllib.parse.urlsplit(os.environ['HTTP_PROXY'])\n"
            "answers = []\n"
            "for head in row['heads']:\n"
            "    s = socket.create_connection((proxy.hostname, proxy.port), timeout=10)\n"
            "    s.sendall(head.encode())\n"
            "    answers.append(s.recv(200).decode().split('\\r\\n')[0])\n"
            "    s.close()\n"
            "row['out'] = answers\n")
    heads = ["CONNECT nowhere HTTP/1.1\r\n\r\n", "GET /relative HTTP/1.1\r\n\r\n",
             "GET ftp://x/ HTTP/1.1\r\n\r\n", "CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n",
             "NONSENSE\r\n\r\n"]
    answers = await public_pool.run(code, {"heads": heads}, "out")
    assert all(a.startswith("HTTP/1.1 400") for a in answers), answers


async def test_public_mode_direct_connection_error_names_the_rule(
        public_pool: SandboxPool, loopback_service: int) -> None:
    error = await run_error(public_pool, "import socket\n"
                            "socket.create_connection(('127.0.0.1', row['port']), timeout=3)\n"
                            "row['out'] = 1\n", {"port": loopback_service})
    assert error.kind == "forbidden", error
    assert "public addresses only" in error.message and "HTTP_PROXY" in error.message


# -- the address policy ----------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.255.0.9", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "fc00::1", "fd12:3456::1", "169.254.169.254", "fe80::1", "0.0.0.0",
    "0.1.2.3", "::", "224.0.0.251", "239.255.255.250", "ff02::1", "ff0e::1", "100.64.0.1",
    "198.18.0.1", "192.0.2.1", "240.0.0.1", "255.255.255.255",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a00:1", "64:ff9b::7f00:1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo for 10.0.0.1
])
async def test_refused_addresses(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "8.8.8.8",
                                     "2606:4700:4700::1111"])
async def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


async def test_every_address_of_this_host_is_refused() -> None:
    """The server's own listening addresses, whatever interface they are on."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.bind(("127.0.0.1", 0))
        assert refusal(ipaddress.ip_address("127.0.0.1")) is not None
    for _, _, _, _, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
        assert refusal(ipaddress.ip_address(sockaddr[0].split("%")[0])) is not None


async def test_test_allowlist_is_explicit() -> None:
    assert EgressPolicy().refusal(ipaddress.ip_address("127.0.0.2")) is not None
    policy = EgressPolicy(["127.0.0.2/32"])
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is not None
