"""A bare ASGI app for the tests of ``agentops.wsframes`` under a real daphne.

Every socket joins one room. A text ``send N CHARS`` from any socket makes the app send N
messages, each one str object handed to every socket in the room (as the run hub does):
through the ASGI send, or, for sockets opened on ``/direct/``, through the socket's direct
send that the server offers in the scope's extensions (as ``RunConsumer.deliver`` does),
numbered and padded with CHARS non-ASCII characters; ``count`` answers how many frames took
the framed path so far, after how many of them twisted held bytes queued (a socket that did
not take a whole frame, or a frame queued behind others), and how many direct sends were
made. Nothing of Django is loaded."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet import tcp

from agentops import wsframes

wsframes.install()

framed = [0, 0, 0]  # frames written, of which found bytes queued after; direct sends
_write_through = wsframes.write_through
_send_text = wsframes.FramedWebSocketProtocol.send_text


def _counting(transport: Any, data: bytes) -> None:
    framed[0] += 1
    if isinstance(transport, tcp.Connection) and not getattr(transport, "small", False):
        # A small send buffer, so that a few large messages fill it and queue with twisted.
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        transport.small = True
    _write_through(transport, data)
    if transport.dataBuffer or transport._tempDataBuffer:
        framed[1] += 1


def _counting_send_text(self: Any, text: str) -> bool:
    sent = _send_text(self, text)
    framed[2] += sent
    return sent


wsframes.write_through = _counting  # serverSend looks it up on the module at each send
wsframes.FramedWebSocketProtocol.send_text = _counting_send_text  # type: ignore[method-assign]

room: list[Any] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "websocket"
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    direct = wsframes.direct_send(scope) if scope["path"] == "/direct/" else None
    if scope["path"] == "/direct/" and direct is None:
        await send({"type": "websocket.close", "code": 4000})  # the server offers none
        return

    async def deliver(message: dict[str, Any]) -> None:
        if direct is None or not direct(message["text"]):
            await send(message)

    room.append(deliver)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            command = (message.get("text") or "").split()
            if command[:1] == ["send"]:
                count, chars = int(command[1]), int(command[2])
                for i in range(count):
                    text = f"{i}:" + "é" * chars
                    for member in list(room):
                        await member({"type": "websocket.send", "text": text})
                    # Let twisted write between messages, so a frame meets a connection
                    # that twisted has half written (the rest in its buffer).
                    await asyncio.sleep(0)
            elif command == ["count"]:
                await send(
                    {"type": "websocket.send", "text": f"count {framed[0]} {framed[1]} {framed[2]}"}
                )
    finally:
        room.remove(deliver)
