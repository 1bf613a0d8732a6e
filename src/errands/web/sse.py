"""The ASGI answer of the live streams (``text/event-stream``): one that stops writing
the moment its client leaves.

A client that leaves is normal (a browser closes the tab, follows a link). Starlette's
``StreamingResponse`` writes frame after frame while the next one is ready without
letting the event loop run in between; a finished task with thousands of outputs has
them all ready, so after the client reset the connection the server went on writing
into the dead socket until the loop next ran, and asyncio logged
``WARNING socket.send() raised exception.`` for each frame (hundreds in a few
milliseconds). ``EventStreamResponse`` lets the loop run after every frame (the
server then hears of the lost connection before writing again), watches the ASGI
``receive`` channel for ``http.disconnect`` and, when it comes, cancels the stream at
once: its generator is closed, releasing what it watched. Nothing is logged above
debug for a client that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .protocol import SSE, SSE_HEADERS
from .streams import race, until_disconnected

log = logging.getLogger("errands.web")


class EventStreamResponse(StreamingResponse):
    """A streaming answer that ends as soon as the client is gone (see the module)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._write(send))
        watcher = asyncio.ensure_future(until_disconnected(receive))
        await race(work, watcher)
        if watcher.done() and not watcher.cancelled():
            log.debug("%s: the client left; the stream stopped", scope.get("path"))

    async def _write(self, send: Send) -> None:
        frames = self.body_iterator
        try:
            async with contextlib.aclosing(frames):  # type: ignore[type-var]
                start = {"status": self.status_code, "headers": self.raw_headers}
                await send({"type": "http.response.start", **start})
                async for frame in frames:
                    body = frame if isinstance(frame, bytes) else str(frame).encode()
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    # Let the loop run: a lost connection is heard of before the next frame.
                    await asyncio.sleep(0)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError as exc:  # ASGI 2.4 servers raise it for a client that left
            log.debug("the client left the stream: %s", exc)


def sse_response(frames: AsyncIterator[bytes]) -> StreamingResponse:
    """A ``text/event-stream`` response of ``frames``, which stops (closing ``frames``,
    releasing what they watched) as soon as the client leaves."""
    return EventStreamResponse(frames, headers=SSE_HEADERS, media_type=SSE)


__all__ = ["EventStreamResponse", "sse_response"]
