"""Daphne's WebSocket sends, made cheap for one frame sent to many sockets.

A change to a run watched by 1,000 open pages is one render sent 1,000 times (the run hub,
``runs.consumers.RunHub``). Per socket, daphne encodes the text, autobahn frames it, and
twisted queues the bytes, registers the socket with the event loop, and writes it on the
loop's next turn (through its logging context), then unregisters it: 40-60 µs a socket,
most of it the deferred write, so the last of 1,000 viewers waited 50 ms or more behind the
first.

``FramedWebSocketProtocol`` changes two things and nothing else:

- the frame of a text (or bytes) object is built once and kept for the next sends of that
  very object (autobahn's ``prepareMessage``, made for broadcasting): server frames are not
  masked, so every socket gets the same bytes;
- the frame is written to the socket at once when nothing is queued before it on that
  connection (the ordinary case), and whatever the socket does not take is queued with
  twisted as before, which also keeps every error path (a full buffer, a reset peer, a
  socket closing) twisted's own.

Anything unusual (a handshake still in progress, a closing socket, compression, TLS in
twisted, autobahn's timing or octet logging) takes daphne's own path unchanged.

Each such socket's ``send_text`` is also offered to the application in the ASGI scope's
``extensions`` (``direct_send(scope)``): the run hub's hand-over calls it, skipping the
layers of an ASGI send (channels' session wrapper, daphne's reply coroutine) per viewer.
It sends only on an open socket and says whether it did; otherwise the caller uses the
ordinary send.

``install()`` sets both up. ``agentops.asgi`` calls it, so it holds however daphne serves
the application (``daphne``, ``manage.py serve``, ``runserver``); under another ASGI server
nothing changes and ``direct_send`` finds nothing.

Measured with 1,000 viewers of one run on one daphne, the sends of one hand-over took
40-70 ms through daphne's own path, 18-30 ms with the frames alone, and 11-13 ms with the
direct send too (about 8 µs a socket is the ``send`` system call itself).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

#: Frames of the last few distinct payload objects sent (a hand-over sends one or two
#: renders to every viewer, one after another).
KEEP = 8


class FramedWebSocketProtocol(WebSocketProtocol):
    def serverSend(self, content: str | bytes, binary: bool = False) -> None:
        # Read defensively: an autobahn that renamed any of these takes the ordinary path.
        if (
            self.state != self.STATE_OPEN
            or getattr(self, "_perMessageCompress", True) is not None
            or getattr(self, "send_queue", True)
            or getattr(self, "trackedTimings", True)
            or getattr(self, "logOctets", True)
            or getattr(self, "logFrames", True)
        ):
            super().serverSend(content, binary)
            return
        write_through(self.transport, frame_of(self.factory, content, binary))

    def send_text(self, text: str) -> bool:
        """Send ``text`` on this socket now, if it is open (False, and nothing sent, if not)."""
        if self.state != self.STATE_OPEN:
            return False
        self.serverSend(text)
        return True


_frames: dict[int, tuple[object, bool, bytes]] = {}


def frame_of(factory: Any, content: str | bytes, binary: bool) -> bytes:
    """The WebSocket frame of ``content``, built once per object (kept while it is among
    the last ``KEEP`` sent: the entry holds the object, so its id cannot be reused)."""
    key = id(content)
    kept = _frames.get(key)
    if kept is not None and kept[0] is content and kept[1] is binary:
        return kept[2]
    payload = content if binary else content.encode("utf8")  # type: ignore[union-attr]
    frame: bytes = factory.prepareMessage(payload, binary).payloadHybi
    if len(_frames) >= KEEP:
        del _frames[next(iter(_frames))]
    _frames[key] = (content, binary, frame)
    return frame


def write_through(transport: Any, data: bytes) -> None:
    """Write ``data`` on ``transport`` now if nothing is queued before it; queue the rest."""
    sock = getattr(transport, "socket", None)
    if (
        sock is None
        or getattr(transport, "TLS", False)
        or not getattr(transport, "connected", False)
        or getattr(transport, "disconnecting", True)
        or getattr(transport, "_writeDisconnected", True)
        or getattr(transport, "dataBuffer", b"")
        or getattr(transport, "_tempDataBuffer", True)
    ):
        transport.write(data)
        return
    try:
        sent = sock.send(data)
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

_create_application: Callable[..., Any] | None = None


def _create_with_extension(
    self: Any, protocol: Any, scope: dict[str, Any], *args: Any, **kwargs: Any
) -> Any:
    if isinstance(protocol, FramedWebSocketProtocol):
        scope.setdefault("extensions", {})[EXTENSION] = {"send_text": protocol.send_text}
    assert _create_application is not None
    return _create_application(self, protocol, scope, *args, **kwargs)


def install() -> None:
    """Make daphne's WebSocket factory build ``FramedWebSocketProtocol``, and daphne's server
    offer each such socket's ``send_text`` to the application in the scope's extensions.

    The server is daphne's only if ``daphne.server`` is loaded (daphne's command line,
    ``manage.py serve`` and ``runserver`` load it before the application); importing it here
    would install twisted's reactor in a process that another server runs."""
    global _create_application
    WebSocketFactory.protocol = FramedWebSocketProtocol
    server = sys.modules.get("daphne.server")
    if server is not None and server.Server.create_application is not _create_with_extension:
        _create_application = server.Server.create_application
        server.Server.create_application = _create_with_extension


def direct_send(scope: dict[str, Any]) -> Callable[[str], bool] | None:
    """The socket's direct send, when the server offers one."""
    extension = (scope.get("extensions") or {}).get(EXTENSION)
    return extension["send_text"] if extension else None
