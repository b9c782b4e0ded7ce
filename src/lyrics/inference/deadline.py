"""A deadline on request bodies, as ASGI middleware (`lyrics serve` installs it in `create_app`).

Why in the ASGI layer: uvicorn's timeouts cover idle keep-alive connections and graceful shutdown,
not a body that stops mid-stream. A client that declares `Content-Length: 1000` and sends 9 bytes
leaves the handler awaiting the rest forever, holding a connection and a buffer; a thousand such
clients hold a thousand. Wrapping `receive` bounds every await on the body, whatever server runs
the app, and the handler's own error path turns the timeout into an OpenAI-shaped 408.

The deadline covers the whole body, counted from the request's start, so a client trickling one
byte a second is cut off too (an idle-only timeout would let it go on). Once the body is complete
`receive` is passed through untouched: a streaming response listens on it for the client leaving.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from lyrics.inference.inputs import InputError

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class BodyTimeout(InputError):
    """The body did not arrive in time (HTTP 408)."""

    def __init__(self, timeout_s: float, received: int, declared: str | None):
        of = f" of the {declared} declared" if declared else ""
        super().__init__(
            f"request body not received in full within {timeout_s:g} s ({received} bytes{of} arrived); "
            "the connection is closed", status=408, code="request_timeout",
        )  # fmt: skip


class BodyDeadline:
    """ASGI middleware: a request's body must arrive in full within `timeout_s` of its start.

    A `receive()` still waiting at the deadline raises `BodyTimeout` (an `InputError` with status 408)
    inside the handler that reads the body; the app's `InputError` handler answers it.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], timeout_s: float):
        self.app, self.timeout_s = app, timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1") or None
        received, complete = 0, False

        async def timed_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise BodyTimeout(self.timeout_s, received, declared) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
            else:  # http.disconnect: nothing more will come
                complete = True
            return message

        await self.app(scope, timed_receive, send)
