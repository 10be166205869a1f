"""Daphne's WebSocket sends, made cheap for one frame sent to many sockets.

A change to a run watched by 1,000 open pages is one render sent 1,000 times (the run hub,
``runs.consumers.RunHub``). Per socket, daphne encodes the text, autobahn frames it, and
twisted queues the bytes, registers the socket with the event loop, and writes it on the
loop's next turn (through its logging context), then unregisters it: 40-60 µs a socket,
most of it the deferred write, so the last of 1,000 viewers waited 50 ms or more behind the
first.

``FramedWebSocketProtocol`` changes two things and nothing else:

- the frame of a text (or bytes) is built once and kept for the next sends of the same
  content (autobahn's ``prepareMessage``, made for broadcasting): server frames are not
  masked, so every socket gets the same bytes;
- the frame is written to the socket at once when nothing is queued before it on that
  connection (the ordinary case), and whatever the socket does not take is queued with
  twisted as before, which also keeps every error path (a full buffer, a reset peer, a
  socket closing) twisted's own.

Anything unusual (a handshake still in progress, a closing socket, compression,
fragmenting, a message over the size limit, TLS, autobahn's timing or octet logging) takes
daphne's own path unchanged.

Each such socket's ``send_text`` is also offered to the application in the ASGI scope's
``extensions`` (``direct_send(scope)``): the run hub's hand-over calls it, skipping the
layers of an ASGI send (channels' session wrapper, daphne's reply coroutine) per viewer.
It sends only on an open socket and says whether it did; otherwise the caller uses the
ordinary send.

``install()`` sets both up. ``agentops.asgi`` calls it, so it holds however daphne serves
the application (``daphne``, ``manage.py serve``, ``runserver``); under another ASGI server
nothing changes and ``direct_send`` finds nothing. It leans on daphne's, autobahn's and
twisted's internals (``tests/agentops/test_wsframes.py`` runs a real daphne, plain and over
TLS, and fails if an upgrade takes the direct path away or breaks it).

Measured with 1,000 viewers of one run on one daphne, the sends of one hand-over took
40-70 ms through daphne's own path, 18-30 ms with the frames alone, and 11-15 ms with the
direct send too (three quarters of it the ``send`` system call itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp

#: Frames of the last few distinct payload objects sent (a hand-over sends one or two
#: renders to every viewer, one after another; several runs may hand over at once).
KEEP = 32


class FramedWebSocketProtocol(WebSocketProtocol):
    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        # Read defensively: an autobahn that renamed any of these takes the ordinary path.
        if (
            self.state != self.STATE_OPEN
            or getattr(self, "send_state", None) != self.SEND_STATE_GROUND
            or getattr(self, "_perMessageCompress", True) is not None
            or getattr(self, "autoFragmentSize", True)
            or getattr(self, "send_queue", True)
            or getattr(self, "trackedTimings", True)
            or getattr(self, "logOctets", True)
            or getattr(self, "logFrames", True)
        ):
            super().serverSend(content, binary)
            return
        frame, size = frame_of(self.factory, content, binary)
        if 0 < getattr(self, "maxMessagePayloadSize", 1) < size:
            super().serverSend(content, binary)  # autobahn refuses it, as it always did
            return
        write_through(self.transport, frame)

    def send_text(self, text: str) -> bool:
        """Send ``text`` on this socket now, if it is open (False, and nothing sent, if not)."""
        if self.state != self.STATE_OPEN:
            return False
        self.serverSend(text)
        return True


_frames: dict[tuple[bool, str | bytes], tuple[bytes, int]] = {}


def frame_of(factory: Any, content: str | bytes, binary: bool) -> tuple[bytes, int]:
    """The WebSocket frame of ``content`` and its payload's size, built once while it is
    among the last ``KEEP`` sent. Keyed by the content itself: a str or bytes keeps its
    hash, so the 1,000 sends of one render look it up without reading it again."""
    key = (binary, content)
    kept = _frames.get(key)
    if kept is not None:
        return kept
    payload = content if binary else content.encode("utf8")  # type: ignore[union-attr]
    kept = factory.prepareMessage(payload, binary).payloadHybi, len(payload)
    if len(_frames) >= KEEP:
        del _frames[next(iter(_frames))]
    _frames[key] = kept
    return kept


def write_through(transport: Any, data: bytes) -> None:
    """Write ``data`` on ``transport`` now if nothing is queued before it; queue the rest.

    Only a plain twisted TCP (or Unix) connection is written to directly. Anything else, a
    TLS connection first of all (twisted's TLS wrapper hands unknown attributes through to
    the TCP connection beneath it, whose socket carries ciphertext), is written the
    ordinary way."""
    if (
        not isinstance(transport, tcp.Connection)
        or getattr(transport, "TLS", True)
        or not getattr(transport, "connected", False)
        or getattr(transport, "disconnecting", True)
        or getattr(transport, "_writeDisconnected", True)
        or getattr(transport, "dataBuffer", b"")
        or getattr(transport, "_tempDataBuffer", True)
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except BlockingIOError:
        sent = 0
    except OSError:
        # Let twisted meet the error on its own write and close the connection its way.
        transport.write(data)
        return
    if sent < len(data):
        transport.write(data[sent:])


#: The ASGI scope extension naming a socket's direct send: ``{"send_text": callable}``.
EXTENSION = "agentops.frames"


def install() -> None:
    """Make daphne's WebSocket factory build ``FramedWebSocketProtocol``, and daphne's server
    offer each such socket's ``send_text`` to the application in the scope's extensions.
    (Twice is once.) Another ASGI server never calls either, so nothing changes there."""
    from daphne.server import Server

    WebSocketFactory.protocol = FramedWebSocketProtocol
    original = Server.create_application
    if getattr(original, "offers_direct_send", False):
        return

    def create_application(
        self: Any, protocol: Any, scope: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        if isinstance(protocol, FramedWebSocketProtocol):
            scope.setdefault("extensions", {})[EXTENSION] = {"send_text": protocol.send_text}
        return original(self, protocol, scope, *args, **kwargs)

    create_application.offers_direct_send = True  # type: ignore[attr-defined]
    Server.create_application = create_application  # type: ignore[method-assign]


def direct_send(scope: dict[str, Any]) -> Callable[[str], bool] | None:
    """The socket's direct send, when the server offers one."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    return extension["send_text"] if extension else None
