"""Request bodies over ``MAX_REQUEST_BYTES`` are refused with 413 before they are read whole.

A pure ASGI middleware: a declared ``Content-Length`` over the limit is answered at once, without
reading the body; a body without one (chunked) is counted as it streams in, and the route reading it
gets an :class:`~starlette.exceptions.HTTPException` 413 as soon as the count passes the limit.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large(limit: int) -> str:
    return f"request body larger than MAX_REQUEST_BYTES ({limit} bytes)"


class BodySizeLimit:
    """Wrap ``app`` so that no request body over ``max_bytes`` reaches it whole (0: no limit)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.max_bytes:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    response = JSONResponse(
                        {"detail": too_large(limit)}, status_code=413, headers={"Connection": "close"}
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, counted, send)
