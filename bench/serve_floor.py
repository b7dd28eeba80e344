"""The serving floor of ``bench/serve.py``: the least an aiohttp server can do to serve the model.

``ModelFloor`` answers ``POST`` v2 binary infer requests for one model on aiohttp's low-level
server (``web.Server``: no application, router or middleware) with nothing but what serving the
model needs: it takes the buffered body as it lies, reads the JSON header and the one input
tensor, stacks the requests that arrive together into one batch (the node's growth rule: the
batch grows while a request joined in the last two turns of the loop, up to ``max_batch`` rows),
runs ``session.run`` on the event loop (no thread hop) and answers each request its own rows as
a v2 binary response. No token, admission, deadlines, metrics, validation or error handling:
a malformed request fails its connection. It is a measuring stick, never a server to run.

Its req/s at 32 clients, over the hello-world's on the same loop, bounds what any aiohttp server
of this model on this core can reach; the node's req/s over the floor's is what moltmesh keeps of
that bound. Loop-confined (one event loop); ``start`` returns the URL to post to.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from aiohttp import web

from moltmesh import v2

FLOOR_PATH = "/v2/models/floor/infer"


class ModelFloor:
    """A minimal batched binary-v2 server of one onnxruntime session (see the module doc)."""

    def __init__(self, session: Any, max_batch: int) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self._max_batch = max_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._heads: dict[tuple[int, ...], tuple[bytes, dict[str, str]]] = {}
        self._runner: web.ServerRunner | None = None

    async def start(self, host: str = "127.0.0.1") -> str:
        """Serve on ``host`` at a port the OS picks; the URL to post infer requests to."""
        self._runner = web.ServerRunner(web.Server(self.handle, access_log=None))
        await self._runner.setup()
        await web.TCPSite(self._runner, host, 0).start()
        port = self._runner.addresses[0][1]
        return f"http://{host}:{port}{FLOOR_PATH}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        content = request.content
        body = content.read_nowait() if content.is_eof() else await request.read()
        length = int(request.headers[v2.HEADER_LENGTH])
        (tensor,) = json.loads(body[:length])["inputs"]
        image = np.frombuffer(body, "<f4", offset=length).reshape(tensor["shape"])
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().create_task(self._run_batch())
        self._pending.append((image, future))
        rows = await future
        head, headers = self._head(rows.shape)
        return web.Response(body=head + rows.tobytes(), headers=headers)

    async def _run_batch(self) -> None:
        while len(self._pending) < self._max_batch:
            before = len(self._pending)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if len(self._pending) == before:
                break
        batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        if self._pending:  # more arrived than one batch holds: they open the next
            asyncio.get_running_loop().create_task(self._run_batch())
        stacked = np.concatenate([image for image, _ in batch])
        (out,) = self._session.run([self._output], {self._input: stacked})
        start = 0
        for image, future in batch:
            end = start + image.shape[0]
            future.set_result(out[start:end])
            start = end

    def _head(self, shape: tuple[int, ...]) -> tuple[bytes, dict[str, str]]:
        """The JSON header of an answer of ``shape`` and the response headers (cached)."""
        got = self._heads.get(shape)
        if got is None:
            size = int(np.prod(shape)) * 4
            output = {"name": self._output, "datatype": "FP32", "shape": list(shape),
                      "parameters": {"binary_data_size": size}}  # fmt: skip
            head = json.dumps({"model_name": "floor", "outputs": [output]}).encode()
            headers = {"Content-Type": "application/octet-stream", v2.HEADER_LENGTH: str(len(head))}
            got = self._heads[shape] = (head, headers)
        return got
