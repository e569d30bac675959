"""The one-write HTTP protocol `provenroute serve` runs: each response's head leaves with its
body in one write (a transport double counts writes), and over a real uvicorn server every
kind of response still arrives whole: plain, streamed, HEAD, 204, 100-continue, keep-alive."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse

from api.http_protocol import OneWriteHttpToolsProtocol, _OneWritePerResponse
from infra.processes import free_port

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def proxy() -> tuple[_OneWritePerResponse, RecordingTransport]:
    inner = RecordingTransport()
    return _OneWritePerResponse(inner, asyncio.get_running_loop()), inner  # type: ignore[arg-type]


async def test_a_head_leaves_with_its_body_in_one_write() -> None:
    transport, inner = proxy()
    transport.write(HEAD)
    assert inner.writes == []
    transport.write(b"ok")
    assert inner.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)  # the end-of-iteration flush finds nothing left
    assert inner.writes == [HEAD + b"ok"]


async def test_a_head_without_a_body_yet_leaves_at_the_end_of_the_iteration() -> None:
    transport, inner = proxy()
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert inner.writes == [HEAD]
    transport.write(b"ok")
    assert inner.writes == [HEAD, b"ok"]


async def test_continue_and_other_bytes_are_never_held() -> None:
    transport, inner = proxy()
    transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    transport.write(b"3\r\nabc\r\n")
    assert inner.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"3\r\nabc\r\n"]


async def test_close_flushes_abort_drops_and_the_rest_is_the_transports() -> None:
    transport, inner = proxy()
    transport.write(HEAD)
    transport.close()
    assert inner.writes == [HEAD] and inner.closed
    transport, inner = proxy()
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert inner.writes == [] and inner.aborted
    assert transport.get_extra_info("socket") == "info:socket"


# ---- over a real server ----------------------------------------------------------------


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(3):
                await asyncio.sleep(0.01)
                yield f"chunk{i};".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.api_route("/plain", methods=["GET", "HEAD"])
    async def plain() -> Response:
        return Response(b"plain body", media_type="text/plain")

    @app.delete("/nothing", status_code=204)
    async def nothing() -> Response:
        return Response(status_code=204)

    return app


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        _app(), host="127.0.0.1", port=port, http=OneWriteHttpToolsProtocol, log_level="warning"
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


def test_every_kind_of_response_arrives_whole(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as http:  # one keep-alive connection throughout
        for i in range(20):
            body = f"request {i} ".encode() * (1 + i * 300)
            r = http.post("/echo", content=body)
            assert (r.status_code, r.content) == (200, body)
        r = http.get("/stream")
        assert (r.status_code, r.text) == (200, "chunk0;chunk1;chunk2;")
        r = http.head("/plain")
        assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"", "10")
        assert http.get("/plain").content == b"plain body"
        r = http.delete("/nothing")
        assert (r.status_code, r.content) == (204, b"")
        assert http.get("/plain").content == b"plain body"


def test_expect_continue_gets_its_interim_answer_before_the_body(base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = _read_until(sock, b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b"hello")
        answer = _read_until(sock, b"hello")
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello"), answer


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data
