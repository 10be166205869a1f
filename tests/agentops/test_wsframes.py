"""WebSocket frames built once and written at once (``agentops.wsframes``): the frame bytes,
the write that must never overtake what twisted has queued, and a real daphne serving a
crowd (including sockets that stop reading, and daphne's own pings in between)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet import tcp

from agentops import wsframes
from tests.conftest import wait_for
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def parse(frame: bytes) -> tuple[int, bytes]:
    """(first byte, payload) of one unmasked frame; fails on anything else."""
    size, start = frame[1] & 0x7F, 2
    assert not frame[1] & 0x80, "a server frame is not masked"
    if size == 126:
        size, start = int.from_bytes(frame[2:4], "big"), 4
    elif size == 127:
        size, start = int.from_bytes(frame[2:10], "big"), 10
    assert len(frame) == start + size
    return frame[0], frame[start:]


@pytest.mark.parametrize("chars", [0, 50, 125, 126, 40_000, 70_000])
def test_a_frame_is_one_final_text_frame_of_the_utf8(chars: int) -> None:
    factory = WebSocketServerFactory()
    text = "é" * chars
    frame, size = wsframes.frame_of(factory, text, False)
    head, payload = parse(frame)
    assert head == 0x81  # FIN, text
    assert payload == text.encode() and size == len(payload)
    frame, size = wsframes.frame_of(factory, b"\x00\xff" * chars, True)
    assert (*parse(frame), size) == (0x82, b"\x00\xff" * chars, 2 * chars)


def test_the_frame_of_a_text_is_built_once_while_it_is_among_the_last_sent() -> None:
    factory = WebSocketServerFactory()
    text = "".join(["run ", "changed"])
    first = wsframes.frame_of(factory, text, False)[0]
    assert wsframes.frame_of(factory, text, False)[0] is first  # the 1,000 sends of one render
    other = "".join(["run ", "changed"])  # an equal text, another object: the same frame
    assert other is not text and wsframes.frame_of(factory, other, False)[0] is first
    binary = wsframes.frame_of(factory, text.encode(), True)[0]
    assert binary != first and parse(binary) == (0x82, text.encode())  # text and bytes apart
    for i in range(wsframes.KEEP):
        wsframes.frame_of(factory, f"filler {i}", False)
    again = wsframes.frame_of(factory, text, False)[0]
    assert again == first and again is not first  # forgotten, built again


class Transport(tcp.Connection):
    """A twisted TCP connection over a real socket, with the state ``write_through`` reads
    set by hand (no reactor); ``write`` records what would have been queued with twisted."""

    def __init__(self, sock: socket.socket) -> None:  # not twisted's: no reactor here
        self.socket = sock
        self.TLS = False
        self.connected = 1
        self.disconnecting = False
        self._writeDisconnected = False
        self.dataBuffer = b""
        self._tempDataBuffer: list[bytes] = []
        self.queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.queued.append(data)


def received(sock: socket.socket, size: int) -> bytes:
    got = b""
    while len(got) < size:
        chunk = sock.recv(size - len(got))
        assert chunk, "closed early"
        got += chunk
    return got


def test_with_nothing_queued_the_frame_goes_to_the_socket_at_once() -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    with ours, peer:
        t = Transport(ours)
        wsframes.write_through(t, b"hello")
        assert t.queued == []
        assert received(peer, 5) == b"hello"


@pytest.mark.parametrize(
    "queued_before",
    [
        {"_tempDataBuffer": [b"ping"]},
        {"dataBuffer": b"half-sent"},
        {"TLS": True},
        {"disconnecting": True},
        {"_writeDisconnected": True},
        {"connected": 0},
    ],
)
def test_behind_anything_queued_or_unusual_the_frame_is_queued_with_twisted(
    queued_before: dict[str, Any],
) -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    with ours, peer:
        t = Transport(ours)
        for name, value in queued_before.items():
            setattr(t, name, value)
        wsframes.write_through(t, b"frame")
        assert t.queued == [b"frame"]
        with pytest.raises(BlockingIOError):
            peer.recv(10)  # nothing overtook the queue


def test_what_the_socket_does_not_take_is_queued_in_order() -> None:
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    with ours, peer:
        t = Transport(ours)
        data = bytes(range(256)) * 4096  # 1 MiB: more than the socket's buffers hold
        wsframes.write_through(t, data)
        assert len(t.queued) == 1 and 0 < len(t.queued[0]) < len(data)
        sent = len(data) - len(t.queued[0])
        assert received(peer, sent) + t.queued[0] == data


def test_a_failing_socket_leaves_the_frame_to_twisted() -> None:
    ours, peer = socket.socketpair()
    peer.close()
    ours.setblocking(False)
    with ours:
        t = Transport(ours)
        wsframes.write_through(t, b"frame")  # EPIPE: twisted meets it and closes its way
        assert t.queued == [b"frame"]


def test_a_transport_that_is_not_a_plain_tcp_connection_is_written_the_ordinary_way() -> None:
    """Twisted's TLS wrapper hands unknown attributes through to the TCP connection beneath,
    socket included: only a real ``tcp.Connection`` is ever written to directly."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    peer.setblocking(False)
    with ours, peer:
        inner = Transport(ours)

        class Wrapper:
            queued: list[bytes] = []

            def __getattr__(self, name: str) -> Any:
                return getattr(inner, name)

            def write(self, data: bytes) -> None:
                self.queued.append(data)

        wrapper = Wrapper()
        wsframes.write_through(wrapper, b"frame")
        assert wrapper.queued == [b"frame"] and inner.queued == []
        with pytest.raises(BlockingIOError):
            peer.recv(10)


def serve(tmp_path: Path, *endpoint: str) -> Iterator[int]:
    """A real daphne serving ``wsframes_app`` (pinging every second); yields its port."""
    port = free_port()
    log = tmp_path / "daphne.log"
    where = [ep.format(port=port) for ep in endpoint] or ["-b", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "daphne", *where),
            *("--ping-interval", "1", "--ping-timeout", "30"),
            "tests.agentops.wsframes_app:app",
        ],
        cwd=ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, timeout=30)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def daphne(tmp_path: Path) -> Iterator[str]:
    for port in serve(tmp_path):
        yield f"ws://127.0.0.1:{port}/"


def test_a_crowd_under_daphne_gets_every_message_whole_and_in_order(daphne: str) -> None:
    """40 sockets, one of which stops reading for a while, get 60 messages each (small ones
    written at once, 200 KB ones that fill the socket and queue with twisted), half of them
    through the direct send, while daphne pings every second; a standard client (websockets,
    strict about frames) checks them."""
    from websockets.asyncio.client import connect

    async def main() -> tuple[list[list[str]], str]:
        port = int(daphne.rstrip("/").rsplit(":", 1)[1])
        slow = socket.create_connection(("127.0.0.1", port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        # The first socket stops reading (a small buffer, a queue of one message): the
        # server's writes to it fill the socket and queue with twisted.
        sockets = [await connect(daphne, sock=slow, max_size=2**24, max_queue=1)]
        # Half the crowd is sent to through the ASGI send, half through the direct send.
        sockets += [
            await connect(daphne + ("direct/" if i % 2 else ""), max_size=2**24) for i in range(39)
        ]
        sizes = [("20", "3000"), ("10", "100000"), ("30", "300")]
        expected = [f"{i}:" + "é" * int(chars) for count, chars in sizes for i in range(int(count))]
        for count, chars in sizes:
            await sockets[1].send(f"send {count} {chars}")
        await asyncio.sleep(1.5)  # the slow reader's buffers fill; pings go out meanwhile

        async def read_all(ws: Any) -> list[str]:
            return [await asyncio.wait_for(ws.recv(), 60) for _ in expected]

        got = await asyncio.gather(*(read_all(ws) for ws in sockets))
        await sockets[1].send("count")
        count = await asyncio.wait_for(sockets[1].recv(), 30)
        for ws in sockets:
            await ws.close()
        return [[g for g in mine] for mine in got], count, expected  # type: ignore[return-value]

    got, count, expected = asyncio.run(main())  # type: ignore[misc]
    for mine in got:
        assert mine == expected
    _, sends, queued, direct = count.split()
    assert int(sends) == 40 * len(expected)  # every send took the framed path
    assert 0 < int(queued) < int(sends)  # most went out at once, some queued behind others
    assert int(direct) == 19 * len(expected)  # the /direct/ sockets: by the direct send


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_over_tls_every_message_arrives_whole(tmp_path: Path) -> None:
    """Under TLS the transport is twisted's TLS wrapper: frames must go through it (written
    straight to the socket beneath, they would be plaintext in a TLS stream)."""
    import ssl

    from websockets.asyncio.client import connect

    key, cert = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert)
    context.check_hostname = False
    endpoint = f"ssl:{{port}}:privateKey={key}:certKey={cert}:interface=127.0.0.1"

    async def main(port: int) -> list[list[str]]:
        base = f"wss://127.0.0.1:{port}/"
        sockets = [
            await connect(base + path, ssl=context, max_size=2**24) for path in ("", "direct/")
        ]
        await sockets[0].send("send 5 3000")
        await sockets[0].send("send 2 100000")
        got = [[await asyncio.wait_for(ws.recv(), 30) for _ in range(7)] for ws in sockets]
        for ws in sockets:
            await ws.close()
        return got

    for port in serve(tmp_path, "-e", endpoint):
        got = asyncio.run(main(port))
    expected = [f"{i}:" + "é" * 3000 for i in range(5)] + [f"{i}:" + "é" * 100000 for i in (0, 1)]
    assert got == [expected, expected]


def test_daphne_offers_the_direct_send_and_it_goes_no_further_than_an_open_socket(
    daphne: str,
) -> None:
    from websockets.asyncio.client import connect

    async def main() -> str:
        async with connect(daphne + "direct/") as ws:  # closed with 4000 if not offered
            await ws.send("send 1 10")
            return await asyncio.wait_for(ws.recv(), 30)

    assert asyncio.run(main()) == "0:" + "é" * 10


def test_the_direct_send_of_a_socket_not_open_sends_nothing() -> None:
    protocol = wsframes.FramedWebSocketProtocol()
    sent: list[Any] = []
    protocol.serverSend = lambda *a: sent.append(a)  # type: ignore[method-assign]
    for state in (protocol.STATE_CONNECTING, protocol.STATE_CLOSING, protocol.STATE_CLOSED):
        protocol.state = state
        assert protocol.send_text("late") is False
    protocol.state = protocol.STATE_OPEN
    assert protocol.send_text("now") is True
    assert sent == [("now",)]
