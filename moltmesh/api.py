"""The node's HTTP API (aiohttp): the KServe/Triton v2 inference protocol and /metrics.

Routes (bearer token required on all but ``/v2/health/*``):

- ``GET /v2/health/live``, ``GET /v2/health/ready`` — 200, or 503 while starting/stopping;
- ``GET /v2`` — server metadata; ``POST /v2/repository/index`` — the models;
- ``GET /v2/models/{m}[/versions/{v}]``, ``.../ready``, ``.../config``;
- ``POST /v2/models/{m}[/versions/{v}]/infer`` — JSON tensors and the binary extension;
- ``GET /metrics`` — Prometheus text format.

Every error is ``{"error": message}`` with its status (400, 401, 404, 413, 429 with Retry-After,
503, 504) and is counted in ``moltmesh_bad_requests``. A client that disconnects cancels its
request (the runner is built with ``handler_cancellation=True``): it leaves the queue at once
and is counted in ``moltmesh_requests`` with status 499.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from moltmesh import __version__, v2
from moltmesh.errors import BadRequest, MoltmeshError, Overloaded, http_status
from moltmesh.identity import token_matches
from moltmesh.inference import MAX_DEADLINE_S, InferenceService
from moltmesh.logs import log_event
from moltmesh.metrics import CONTENT_TYPE, NodeMetrics, incrementer, observer
from runtimes.base import ModelMetadata
from runtimes.errors import RuntimeErrorBase

log = logging.getLogger("moltmesh.api")

SERVICE = web.AppKey("service", InferenceService)
READINESS = web.AppKey("readiness", Callable[[], "str | None"])
"""Why the node is not ready (None: it is): what ``GET /v2/health/ready`` answers."""
METRICS = web.AppKey("metrics", NodeMetrics)
TOKEN = web.AppKey("token", str)
MAX_CACHED_CHILDREN = 1024
CLIENT_GONE = 499
"""The ``status`` label of requests whose client disconnected before the answer (nginx's code)."""
UNKNOWN_MODEL = "unknown"
"""The ``model`` label of requests naming a model the node does not serve."""

BODY_LIMITS = web.AppKey("body_limits", tuple)
"""``(seconds, bytes per second)``: a request's body must arrive whole within the seconds plus
its declared length at the rate (``api.body_timeout_s``, ``api.min_body_rate``), or the answer
is 408 and the connection closes: a client dribbling a body would hold a connection (and, for
infer, a queue slot) for as long as it likes."""

PUBLIC_PREFIX = "/v2/health/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def api_middleware(token: str, metrics: NodeMetrics) -> Middleware:
    """One middleware for every route: the bearer token, then v2 JSON errors.

    ``Authorization: Bearer <token>`` is required except on health checks (the scheme is
    case-insensitive, blanks around the token are ignored). Every failure, the 401 included,
    becomes ``{"error": message}`` with its status, and each 4xx, raised or answered by a
    handler, is counted in ``moltmesh_bad_requests``. One middleware rather than two: each
    layer costs every request a coroutine and a wrapper call.
    """
    exact = f"Bearer {token}"  # what clients send; anything else goes the careful way

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            presented = request.headers.get("Authorization", "")
            if not (
                token_matches(exact, presented)
                or request.path.startswith(PUBLIC_PREFIX)
                or _bearer_matches(token, presented)
            ):
                raise web.HTTPUnauthorized(reason="missing or wrong bearer token")
            response = await handler(request)
            if 400 <= response.status < 500:  # answered, not raised (a KV 404, 409 or 413)
                metrics.bad_requests.labels(str(response.status)).inc()
            return response
        except Overloaded as e:
            response = json_error(429, str(e), {"Retry-After": str(e.retry_after_s)})
        except (MoltmeshError, RuntimeErrorBase, v2.V2Error) as e:
            response = json_error(400 if isinstance(e, v2.V2Error) else http_status(e), str(e))
        except web.HTTPRequestEntityTooLarge as e:
            response = json_error(413, e.text or "request body too large")
        except web.HTTPRequestTimeout as e:
            response = json_error(408, e.reason)
            response.force_close()  # the rest of the body is not awaited
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = json_error(e.status, e.reason)
        except Exception:
            log.exception("api.unhandled", extra={"moltmesh_fields": {"path": request.path}})
            response = json_error(500, "internal error; see the node's log")
        if 400 <= response.status < 500:
            metrics.bad_requests.labels(str(response.status)).inc()
        return response

    return middleware


def _bearer_matches(token: str, header: str) -> bool:
    """``header`` is ``Bearer <token>`` give or take the scheme's case and blanks."""
    scheme, _, presented = header.partition(" ")
    return scheme.lower() == "bearer" and token_matches(token, presented.strip())


class ServerLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The ``logger`` of the API's aiohttp server (``AppRunner(..., logger=ServerLog(m))``).

    aiohttp answers a request it cannot parse (a line or header over its limits, a bad
    Content-Length, a bad chunk size, not HTTP at all) itself, before any route or middleware,
    and logs it with a traceback. Here such a request is counted in ``moltmesh_bad_requests``
    by its status and logged as one debug line (``api.bad_http``): anyone who reaches the port
    could otherwise fill the log. Everything else aiohttp logs goes to ``moltmesh.api.server``
    unchanged.
    """

    def __init__(self, metrics: NodeMetrics) -> None:
        super().__init__(logging.getLogger("moltmesh.api.server"), {})
        self._metrics = metrics

    def exception(self, msg: object, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        if not self._bad_http(args, exc_info):
            super().exception(msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:
        if not self._bad_http(args, kw.get("exc_info")):
            super().debug(msg, *args, **kw)

    def _bad_http(self, args: tuple[Any, ...], exc_info: Any) -> bool:
        """Count and log ``exc_info`` if it is a request aiohttp could not parse."""
        if not isinstance(exc_info, HttpProcessingError):
            return False
        status = exc_info.code if 400 <= exc_info.code < 500 else 400
        self._metrics.bad_requests.labels(str(status)).inc()
        peer = args[0] if args else None
        reason = exc_info.message[:200]
        log_event(log, "api.bad_http", logging.DEBUG, status=status, reason=reason, peer=peer)
        return True


async def live(request: web.Request) -> web.Response:
    return web.json_response({"live": True})


async def read_body(request: web.Request) -> bytes:
    """The request's whole body, in time (see ``BODY_LIMITS``; 408 ``HTTPRequestTimeout``
    after)."""
    seconds, rate = request.app[BODY_LIMITS]
    allowed = seconds + (request.content_length or 0) / rate
    try:
        async with asyncio.timeout(allowed):
            return await request.read()
    except TimeoutError:
        reason = f"the request body did not arrive within {allowed:.3g} s"
        raise web.HTTPRequestTimeout(reason=reason) from None


async def ready(request: web.Request) -> web.Response:
    reason = request.app[READINESS]()
    if reason is None:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": reason}, status=503)


async def server_metadata(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "name": "moltmesh",
            "version": __version__,
            "extensions": ["binary_tensor_data", "model_repository", "parameters"],
        }
    )


async def repository_index(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    models = []
    for name in service.model_names():
        for version in service.entry(name).versions:
            models.append({"name": name, "version": version, "state": "READY"})
    return web.json_response(models)


async def model_metadata(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    name, version = request.match_info["model"], request.match_info.get("version")
    meta = service.metadata(name, version)
    body: dict[str, Any] = {
        "name": meta.name,
        "versions": list(service.entry(name).versions),
        "platform": meta.platform,
        "inputs": v2.tensor_metadata(meta.inputs),
        "outputs": v2.tensor_metadata(meta.outputs),
        "parameters": {"variant": meta.variant, "description": meta.description},
    }
    if meta.labels:
        body["parameters"]["labels"] = list(meta.labels)
    return web.json_response(body)


async def model_ready(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    _requested_metadata(request)
    return web.json_response({"ready": service.ready}, status=200 if service.ready else 503)


async def model_config(request: web.Request) -> web.Response:
    """Triton's model configuration, reduced to what clients read (name, platform, tensors)."""
    meta = _requested_metadata(request)

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": list(s.shape)}
                for s in specs]  # fmt: skip

    return web.json_response(
        {
            "name": meta.name,
            "platform": meta.platform,
            "max_batch_size": 0,
            "input": tensors(meta.inputs),
            "output": tensors(meta.outputs),
        }
    )


def _requested_metadata(request: web.Request) -> ModelMetadata:
    service = request.app[SERVICE]
    return service.metadata(request.match_info["model"], request.match_info.get("version"))


def _deadline(parameters: dict[str, Any], now: float) -> float | None:
    """Absolute monotonic deadline from ``deadline_ms``, or Triton's ``timeout`` in µs.

    The value must be a finite positive number of at most ``MAX_DEADLINE_S`` (one day);
    anything else (NaN, Infinity, a boolean, a string, an integer too big for a float) is a
    ``BadRequest`` naming the parameter.
    """
    if "deadline_ms" in parameters:
        value, scale, name = parameters["deadline_ms"], 1e-3, "deadline_ms"
    elif "timeout" in parameters:
        value, scale, name = parameters["timeout"], 1e-6, "timeout"
    else:
        return None
    seconds = math.nan
    if not isinstance(value, bool) and isinstance(value, int | float):
        with contextlib.suppress(OverflowError):  # an integer of hundreds of digits
            seconds = value * scale
    if not 0 < seconds <= MAX_DEADLINE_S:  # NaN fails too
        raise BadRequest(
            f"parameter {name!r} must be a positive number of at most "
            f"{MAX_DEADLINE_S / scale:.0f} (one day)"
        )
    return now + seconds


def _urgency(parameters: dict[str, Any]) -> float:
    value = parameters.get("urgency", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise BadRequest("parameter 'urgency' must be a number from 0 to 1")
    return float(value)


class InferRoute:
    """``POST .../infer``, holding what every request needs so it looks nothing up twice.

    Per request: one clock reading (deadline and latency both start from it), the body read
    once, the v2 codec (whose binary path reuses parsed headers and response templates), the
    runtime admitted before the body was read, and metric children cached by label values
    (a served model's success children in one lookup).
    """

    def __init__(
        self, service: InferenceService, metrics: NodeMetrics, max_body_bytes: int
    ) -> None:
        self._service = service
        self._max_body_bytes = max_body_bytes
        self._requests = metrics.requests
        self._request_seconds = metrics.request_seconds
        self._children: dict[tuple[Any, ...], Any] = {}
        # model -> (count a 200, observe its latency), for the models that answered one
        self._served: dict[str, tuple[Callable[[], None], Callable[[float], None]]] = {}

    async def infer(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        match = request.match_info
        name, version = match["model"], match.get("version")
        status, route = 500, "local"
        service = self._service
        try:
            header_length = request.headers.get(v2.HEADER_LENGTH)
            try:
                length = int(header_length) if header_length is not None else None
            except ValueError:
                raise BadRequest(f"{v2.HEADER_LENGTH} must be an integer") from None
            runtime = service.admit(name, version)  # 404, 429 or 503 before reading the body
            content = request.content
            if content.is_eof():  # all of it has arrived (a small tensor): no await, no copy
                body = self._arrived_body(content)
            else:
                body = await read_body(request)
            parsed = v2.parse_infer_request(body, length)
            parameters = parsed.parameters
            deadline = None
            if parameters:  # (binary_data_output makes it non-empty: look before calling)
                if "urgency" in parameters:
                    _urgency(parameters)
                if "deadline_ms" in parameters or "timeout" in parameters:
                    deadline = _deadline(parameters, started)
            requested = parsed.outputs
            wanted = None if requested is None else [o.name for o in requested]
            result = await service.infer_admitted(
                runtime, parsed.inputs, outputs=wanted, deadline=deadline
            )
            route = result.route
            if requested is None:
                binary = dict.fromkeys(result.outputs, parsed.binary_output)
            else:
                binary = {o.name: o.binary for o in requested}
            payload, header_len = v2.encode_infer_response(
                result.model, result.version, result.outputs, binary, parsed.request_id,
                {"node": result.node, "variant": result.variant, "route": route},
            )  # fmt: skip
            status = 200
        except Exception as e:
            status = _error_status(e)
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            if status == 200 and route == "local":
                served = self._served.get(name)
                if served is None:
                    served = self._served_children(name)
                served[0]()
                served[1](time.monotonic() - started)
            else:
                # Model names come from URLs: only served models get a label of their own.
                label = name if status == 200 or service.serves(name) else UNKNOWN_MODEL
                cache = self._children
                _child(cache, self._requests, label, route, str(status)).inc()
                _child(cache, self._request_seconds, label).observe(time.monotonic() - started)
        if header_len is None:
            return web.Response(body=payload, headers=_JSON_HEADERS)
        return web.Response(
            body=payload,
            headers={"Content-Type": "application/octet-stream", v2.HEADER_LENGTH: str(header_len)},
        )

    def _served_children(self, name: str) -> tuple[Callable[[], None], Callable[[float], None]]:
        """The success counter and latency children of ``name``, a model this node served a
        request of (so a bounded set: only loaded models answer 200)."""
        children = (
            incrementer(self._requests.labels(name, "local", "200")),
            observer(self._request_seconds.labels(name)),
        )
        self._served[name] = children
        return children

    def _arrived_body(self, content: Any) -> bytes:
        """The whole request body, already buffered by the parser: taken as it lies (no await
        and no copy; ``request.read()`` costs two coroutines, a bytearray and a copy). Over
        the size limit: 413, as ``read()``."""
        body: bytes = content.read_nowait()
        if len(body) > self._max_body_bytes:
            raise web.HTTPRequestEntityTooLarge(
                max_size=self._max_body_bytes, actual_size=len(body)
            )
        return body


_JSON_HEADERS = {"Content-Type": "application/json"}


def _error_status(error: Exception) -> int:
    """The HTTP status the middleware answers ``error`` with (for the request metrics)."""
    if isinstance(error, v2.V2Error):
        return 400
    if isinstance(error, web.HTTPException):
        return error.status
    return http_status(error)


def _child(cache: dict[tuple[Any, ...], Any], metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: the lookup takes a lock and builds keys each time.

    The cache is bounded (model names come from URLs, so a client could make many); beyond
    ``MAX_CACHED_CHILDREN`` entries lookups go straight to the metric.
    """
    key = (id(metric), *labels)
    child = cache.get(key)
    if child is None:
        child = metric.labels(*labels)
        if len(cache) < MAX_CACHED_CHILDREN:
            cache[key] = child
    return child


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


def build_app(
    service: InferenceService,
    metrics: NodeMetrics,
    token: str,
    max_body_bytes: int,
    readiness: Callable[[], str | None] | None = None,
    body_limits: tuple[float, int] = (30.0, 64 * 1024),
) -> web.Application:
    """The aiohttp application; the caller owns starting and stopping it (AppRunner).
    ``readiness`` says why the node is not ready (None: ready); by default, the inference
    service's own readiness. ``body_limits``: see ``BODY_LIMITS``."""
    app = web.Application(
        middlewares=[api_middleware(token, metrics)], client_max_size=max_body_bytes
    )
    app[SERVICE], app[METRICS], app[TOKEN] = service, metrics, token
    app[BODY_LIMITS] = body_limits
    app[READINESS] = readiness or (lambda: None if service.ready else "starting or stopping")
    infer = InferRoute(service, metrics, max_body_bytes).infer
    r = app.router
    r.add_get("/v2/health/live", live)
    r.add_get("/v2/health/ready", ready)
    r.add_get("/v2", server_metadata)
    r.add_post("/v2/repository/index", repository_index)
    bases = ("/v2/models/{model}", "/v2/models/{model}/versions/{version}")
    # aiohttp tries the routes under "/v2/models" in the order they were added, one regex and
    # one coroutine each: the hot route goes first.
    for base in bases:
        r.add_post(base + "/infer", infer)
    for base in bases:
        r.add_get(base, model_metadata)
        r.add_get(base + "/ready", model_ready)
        r.add_get(base + "/config", model_config)
    r.add_get("/metrics", metrics_handler)
    log_event(log, "api.built", routes=len(r.routes()))
    return app
