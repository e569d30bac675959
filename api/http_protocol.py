"""uvicorn's httptools protocol, writing each small response in one send instead of two.

uvicorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the body on `http.response.body`: two `send` syscalls, two
packets, and two wake-ups of the client per /decide answer. On loopback the first send was
the single most expensive line of a cached /decide (py-spy: 15 % of the service's CPU; the
body's send another 3 %). Here the head is held until the body follows — in the same task
step for every response the service sends — and both leave in one write.

Nothing waits on it: a held head goes out with the next write of any kind, on close, and
at the end of the current loop iteration in any case (a streamed response whose first
chunk comes later). Informational responses
(100 Continue) are never held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_HEAD = b"HTTP/1.1 "
_INFORMATIONAL = b"HTTP/1.1 1"


class _OneWritePerResponse:
    """Transport proxy that holds a response head until the next write."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.startswith(_HEAD) and not data.startswith(_INFORMATIONAL):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` over `_OneWritePerResponse` (pass as uvicorn's `http=`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWritePerResponse(transport, self.loop))  # type: ignore[arg-type]
