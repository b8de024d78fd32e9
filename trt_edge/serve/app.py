"""The ASGI application: KServe v2 / Triton HTTP endpoints over a :class:`ModelRepository`.

``create_app(ServeOptions(...))`` returns a Starlette app another program can mount or run with
any ASGI server; ``trt-edge serve`` runs it with uvicorn (see :mod:`trt_edge.serve.server`).
Endpoints, as Triton serves them::

    GET  /v2/health/live | /v2/health/ready          (always open, no key needed)
    GET  /v2                                          server metadata and extensions
    GET  /v2/models/{m}[/versions/{v}]                model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready | /config | /stats ;  GET /v2/models/stats
    POST /v2/models/{m}[/versions/{v}]/infer          JSON or binary tensors, gzip/deflate bodies
    POST /v2/repository/index ; POST /v2/repository/models/{m}/load | /unload

Errors answer ``{"error": "..."}`` with Triton's status codes (404 unknown model/version, 400 bad
request, 501 unsupported Content-Encoding, 503 queue full / timeout, 401/403/429 auth and limits).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from .. import __version__
from .._lazy import require
from ..errors import InvalidInputError, RunnerError, TrtEdgeError
from .auth import ApiKey, Authenticator, RestrictedApi
from .batcher import SchedulerError
from .config import config_json, np_dtype_of, wire_datatype
from .protocol import (HEADER_LENGTH, Limits, ProtocolError, decode_body, encode_infer_response,
                       header_length, parse_infer_request, parse_json)
from .repository import ModelNotFound, ModelRepository, ServedVersion

log = logging.getLogger(__name__)
access_log = logging.getLogger("trt_edge.serve.access")

EXTENSIONS = ("binary_tensor_data", "model_repository", "model_configuration", "statistics",
              "schedule_policy")
CONTROL_MODES = ("none", "explicit", "poll")


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """How the service runs (the CLI flags use Triton's names for the same things).

    ``model_control_mode``: ``none`` loads every model at start and refuses load/unload;
    ``explicit`` loads ``load_models`` (``("*",)``: all) and allows the repository API.
    ``instances``: overrides every model's ``instance_group`` count.
    ``api_keys``: when given, every endpoint but health needs a key (see :mod:`.auth`).
    ``exit_on_error``: a model that fails to load at start stops the server (Triton's default);
    otherwise it is logged, left UNAVAILABLE, and the others serve.
    """

    model_repository: Path
    model_control_mode: str = "none"
    load_models: tuple[str, ...] = ("*",)
    limits: Limits = Limits()
    api_keys: tuple[ApiKey, ...] = ()
    restricted_apis: tuple[RestrictedApi, ...] = ()
    instances: int | None = None
    server_name: str = "trt-edge"
    access_log: bool = True
    exit_on_error: bool = True
    trust: Any = None                      # trt_edge.registry.TrustPolicy: verify before loading
    encryption_key: bytes | None = None    # decrypts .enc artifacts in memory
    repository_poll_secs: float = 15.0     # with model_control_mode "poll" (Triton's flag)
    drift_threshold: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_repository", Path(self.model_repository))
        if self.model_control_mode not in CONTROL_MODES:
            raise InvalidInputError(f"model_control_mode must be one of {CONTROL_MODES}, got "
                                    f"'{self.model_control_mode}'.")
        if self.instances is not None and self.instances < 1:
            raise InvalidInputError(f"instances must be >= 1, got {self.instances}.")
        if self.repository_poll_secs <= 0:
            raise InvalidInputError(f"--repository-poll-secs must be > 0, got {self.repository_poll_secs}.")
        if self.limits.max_input_size < 1024:
            raise InvalidInputError("--http-max-input-size must be at least 1024 bytes.")


class Service:
    """State shared by the handlers of one app."""

    def __init__(self, options: ServeOptions, metrics: Any = None) -> None:
        self.options = options
        self.metrics = metrics
        hook = metrics.execution_hook if metrics is not None else None
        self.repository = ModelRepository(
            options.model_repository, execution_hook=hook, trust=options.trust,
            encryption_key=options.encryption_key, drift_threshold=options.drift_threshold,
            drift_gauge=metrics.drift_gauge if metrics is not None else None)
        self._poller: asyncio.Task[None] | None = None
        self.auth = Authenticator(list(options.api_keys)) if options.api_keys else None
        self.draining = False
        self.in_flight = 0

    async def startup(self) -> None:
        names = self.repository.names_on_disk()
        wanted = names if self.options.model_control_mode == "none" or "*" in self.options.load_models \
            else list(self.options.load_models)
        failed = []
        for name in wanted:
            try:
                await self.repository.load(name, instances=self.options.instances)
            except TrtEdgeError as exc:
                log.error("model '%s' failed to load: %s", name, exc)
                failed.append(name)
        if failed and self.options.exit_on_error:
            await self.repository.close()
            raise TrtEdgeError(f"models {failed} failed to load (see the log above); fix them, or start with "
                               "--exit-on-error false to serve the others.")
        if self.options.model_control_mode == "poll":
            self._poller = asyncio.create_task(self._poll(), name="trt-edge-repository-poll")

    async def _poll(self) -> None:
        """Hot reload (Triton's poll mode): reload a model whose folder, config or registry state
        changed. The old versions serve until the new ones loaded (verified + smoke-tested); a
        version that fails is refused and, when the registry had promoted it, rolled back."""
        seen = {name: self.repository.fingerprint(name) for name in self.repository.names_on_disk()}
        while True:
            await asyncio.sleep(self.options.repository_poll_secs)
            try:
                for name in self.repository.names_on_disk():
                    stamp = self.repository.fingerprint(name)
                    if seen.get(name) == stamp:
                        continue
                    seen[name] = stamp
                    log.info("repository poll: model '%s' changed, reloading", name)
                    if await self._reload(name):
                        # our own rollback rewrote NAME/registry.json: not a change to act on (the
                        # versions serving are the ones it now names)
                        seen[name] = self.repository.fingerprint(name)
            except Exception:  # noqa: BLE001 - the poller must survive a folder changing under it
                log.exception("repository poll failed; retrying in %.1fs", self.options.repository_poll_secs)

    async def _reload(self, name: str) -> bool:
        """Reload ``name``; True when a refused version made us roll the registry back."""
        entry = self.repository.entry(name)
        serving = sorted(entry.versions, key=int) if entry is not None else []
        try:
            await self.repository.load(name, instances=self.options.instances)
        except TrtEdgeError as exc:
            log.error("hot reload of model '%s' refused, versions %s keep serving: %s", name, serving or "none",
                      exc)
            active = self.repository.registry_active(name)
            if active is not None and serving and str(active) not in serving:
                from ..registry.store import Registry  # noqa: PLC0415
                return Registry(self.options.model_repository).roll_back_if_active(name, active, int(serving[-1]))
        except Exception:  # noqa: BLE001 - the poller must survive anything
            log.exception("hot reload of model '%s' failed unexpectedly", name)
        return False

    async def shutdown(self, timeout_s: float = 30.0) -> None:
        self.draining = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        deadline = time.monotonic() + timeout_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.repository.close()


# ---- helpers -------------------------------------------------------------------------------------

def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import Response  # noqa: PLC0415
    return Response(json.dumps(obj, separators=(",", ":")).encode(), status_code=status,
                    headers=headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Any:
    return _json({"error": message}, status, headers)


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"The request body is {declared} bytes, which exceeds the maximum allowed input "
                            f"size of {limit} bytes. Use --http-max-input-size to increase the limit.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"The request body exceeds the maximum allowed input size of {limit} bytes. "
                                "Use --http-max-input-size to increase the limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def _tensor_meta(name: str, data_type: str, dims: tuple[int, ...], batching: bool) -> dict[str, Any]:
    return {"name": name, "datatype": wire_datatype(data_type), "shape": ([-1] if batching else []) + list(dims)}


def _validate(req: Any, sv: ServedVersion) -> tuple[dict[str, np.ndarray], int]:
    cfg, name = sv.config, sv.name
    specs = {t.name: t for t in cfg.input}
    got = [i.name for i in req.inputs]
    for n in got:
        if n not in specs:
            raise ProtocolError(f"unexpected inference input '{n}' for model '{name}'")
    required = [t.name for t in cfg.input if not t.optional]
    missing = [n for n in required if n not in got]
    if missing:
        raise ProtocolError(f"expected {len(required)} inputs but got {len(got)} inputs for model '{name}'. "
                            f"Got input(s) {got}, but missing required input(s) {missing}. Please provide all "
                            "required input(s).")
    batching = cfg.batching
    batch = 1
    feed: dict[str, np.ndarray] = {}
    for i, inp in enumerate(req.inputs):
        spec = specs[inp.name]
        want = wire_datatype(spec.data_type)
        if inp.datatype != want:
            raise ProtocolError(f"inference input '{inp.name}' data-type is '{inp.datatype}', but model "
                                f"'{name}' expects '{want}'")
        dims = list(spec.reshape if spec.reshape is not None else spec.dims)
        expected = ([-1] if batching else []) + list(spec.dims)
        shape = list(inp.shape)
        body = shape[1:] if batching else shape
        if (batching and not shape) or len(body) != len(spec.dims) or any(
                d != -1 and d != s for d, s in zip(spec.dims, body)):
            raise ProtocolError(f"unexpected shape for input '{inp.name}' for model '{name}'. Expected "
                                f"{json.dumps(expected, separators=(',', ':'))}, got "
                                f"{json.dumps(shape, separators=(',', ':'))}")
        if batching:
            b = shape[0]
            if b > int(cfg.max_batch_size or 0):
                raise ProtocolError(f"inference request batch-size must be <= {cfg.max_batch_size} for "
                                    f"'{name}'")
            if b < 1:
                raise ProtocolError(f"inference request batch-size must be >= 1 for '{name}', got {b}")
            if i and b != batch:
                raise ProtocolError(f"input '{inp.name}' batch size {b} does not match other inputs ({batch}) "
                                    f"for '{name}'; every input needs the same batch size.")
            batch = b
        arr = inp.data
        if spec.reshape is not None:
            arr = arr.reshape(([batch] if batching else []) + dims)
        dtype = np_dtype_of(spec.data_type)
        if dtype != object and arr.dtype != dtype:
            arr = arr.astype(dtype)  # byte order only: the wire type already matched
        feed[inp.name] = arr
    if req.outputs is not None:
        known = {t.name for t in cfg.output}
        for o in req.outputs:
            if o.name not in known:
                raise ProtocolError(f"unexpected inference output '{o.name}' for model '{name}'")
    return feed, batch


# ---- the app -------------------------------------------------------------------------------------

Handler = Callable[[Any], Awaitable[Any]]


def create_app(options: ServeOptions, metrics: Any = None) -> Any:
    """The ASGI app (Starlette). ``app.state.service`` is the :class:`Service`."""
    require("starlette", "the `trt-edge serve` HTTP app")
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.responses import Response  # noqa: PLC0415
    from starlette.routing import Route  # noqa: PLC0415

    service = Service(options, metrics)
    limits = options.limits
    repo = service.repository
    restricted = {g: r for r in options.restricted_apis for g in r.groups}

    def guarded(group: str, handler: Handler) -> Handler:
        scope_name = "repository" if group == "model-repository" else "infer"

        async def run(request: Any) -> Any:
            request.state.group = group
            if group != "health":
                r = restricted.get(group)
                if r is not None and not r.allows(group, request.headers.get(r.header)):
                    return _error(403, f"This API is restricted, expecting header '{r.header}'")
                if service.auth is not None:
                    res = service.auth.check(request.headers.get("authorization"),
                                             request.headers.get("x-api-key"), scope_name)
                    request.state.key = res.key
                    if not res.ok:
                        hdrs = {"WWW-Authenticate": 'Bearer realm="trt-edge"'} if res.status == 401 else None
                        if res.status == 429:
                            hdrs = {"Retry-After": str(max(1, int(res.retry_after_s + 0.999)))}
                        return _error(res.status, res.message, hdrs)
            try:
                return await handler(request)
            except ModelNotFound as exc:
                return _error(404, str(exc))
            except (ProtocolError, SchedulerError) as exc:
                return _error(exc.status, str(exc))
            except InvalidInputError as exc:
                return _error(400, str(exc))
            except RunnerError as exc:
                closing = "closing" in str(exc)
                return _error(503 if closing else 500, str(exc))
            except TrtEdgeError as exc:
                return _error(400, str(exc))
        return run

    def version_of(request: Any) -> str | None:
        return request.path_params.get("version")

    # ---- health and metadata ----
    async def live(request: Any) -> Any:
        return Response(status_code=200)

    async def ready(request: Any) -> Any:
        ok = not service.draining and repo.ready()
        return Response(status_code=200 if ok else 400)

    async def server_metadata(request: Any) -> Any:
        return _json({"name": options.server_name, "version": __version__, "extensions": list(EXTENSIONS)})

    async def model_metadata(request: Any) -> Any:
        name, version = request.path_params["model"], version_of(request)
        sv = repo.get(name, version)
        entry = repo.entry(name)
        versions = [version] if version else sorted(entry.versions, key=int) if entry else [sv.version]
        cfg = sv.config
        return _json({"name": name, "versions": versions, "platform": cfg.platform,
                      "inputs": [_tensor_meta(t.name, t.data_type, t.dims, cfg.batching) for t in cfg.input],
                      "outputs": [_tensor_meta(t.name, t.data_type, t.dims, cfg.batching) for t in cfg.output]})

    async def model_ready(request: Any) -> Any:
        name = request.path_params["model"]
        try:
            repo.get(name, version_of(request))
        except ModelNotFound as exc:
            if name not in repo.names_on_disk():
                return _error(404, str(exc))
            return Response(status_code=400)
        return Response(status_code=200)

    async def model_config(request: Any) -> Any:
        sv = repo.get(request.path_params["model"], version_of(request))
        return _json(config_json(sv.config))

    async def model_stats(request: Any) -> Any:
        name = request.path_params.get("model")
        if name is None:
            rows = [sv.stats.as_json(sv.name, sv.version) for sv in repo.loaded()]
        else:
            version = version_of(request)
            if version:
                svs = [repo.get(name, version)]
            else:
                repo.get(name)
                entry = repo.entry(name)
                svs = [entry.versions[v] for v in sorted(entry.versions, key=int)] if entry else []
            rows = [sv.stats.as_json(sv.name, sv.version) for sv in svs]
        return _json({"model_stats": rows})

    # ---- inference ----
    async def infer(request: Any) -> Any:
        if service.draining:
            return _error(503, "the server is shutting down; send the request to another instance")
        name, version = request.path_params["model"], version_of(request)
        start = time.perf_counter()
        sv = repo.get(name, version)
        request.state.model = f"{name}/{sv.version}"
        service.in_flight += 1
        if metrics is not None:
            metrics.pending_gauge(name, sv.version).inc()
        ok, reason = False, "OTHER"
        try:
            raw = await _read_body(request, limits.max_input_size)
            body = decode_body(raw, request.headers.get("content-encoding"), limits)
            hl = header_length(request.headers.get(HEADER_LENGTH), len(body))
            req = parse_infer_request(body, hl, limits)
            feed, batch = _validate(req, sv)
            if sv.drift is not None:
                sv.drift.observe(feed)
            timeout = req.parameters.get("timeout")
            timeout_us = int(timeout) if isinstance(timeout, int) and not isinstance(timeout, bool) else None
            reason = "BACKEND"
            outputs = await sv.scheduler.submit(feed, batch, timeout_us)
            wanted = req.outputs if req.outputs is not None else None
            if wanted is None:
                chosen = [(t.name, outputs[t.name], req.binary_output) for t in sv.config.output
                          if t.name in outputs]
            else:
                chosen = [(o.name, outputs[o.name], o.binary) for o in wanted]
            payload, hlen = encode_infer_response(name, sv.version, req.id, chosen)
            ok = True
        except ProtocolError:
            reason = "REJECTED"
            raise
        except SchedulerError:
            reason = "REJECTED"
            raise
        finally:
            service.in_flight -= 1
            if not ok:
                sv.stats.fail.add(int((time.perf_counter() - start) * 1e9))
            if metrics is not None:
                metrics.pending_gauge(name, sv.version).dec()
                metrics.request_done(name, sv.version, ok, time.perf_counter() - start, reason)
        elapsed = int((time.perf_counter() - start) * 1e9)
        sv.stats.success.add(elapsed)
        if hlen is None:
            return Response(payload, media_type="application/json")
        return Response(payload, media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(hlen)})

    # ---- repository ----
    async def repo_index(request: Any) -> Any:
        raw = await _read_body(request, limits.max_input_size)
        ready_only = False
        if raw.strip():
            obj = parse_json(raw, limits)
            if not isinstance(obj, dict):
                raise ProtocolError("The repository index request must be a JSON object, e.g. {\"ready\": true}.")
            ready_only = bool(obj.get("ready", False))
        return _json(repo.index(ready_only))

    def _control_allowed() -> None:
        if options.model_control_mode != "explicit":
            raise ProtocolError(f"explicit model load / unload is not allowed with --model-control-mode "
                                f"{options.model_control_mode}; start the server with --model-control-mode "
                                "explicit.")

    async def repo_load(request: Any) -> Any:
        _control_allowed()
        raw = await _read_body(request, limits.max_input_size)
        if raw.strip():
            obj = parse_json(raw, limits)
            params = obj.get("parameters") if isinstance(obj, dict) else None
            if params:
                raise ProtocolError("load parameters (config or file overrides) are not supported; edit "
                                    "config.pbtxt in the repository and load again.")
        await repo.load(request.path_params["model"], instances=options.instances)
        return Response(status_code=200)

    async def repo_unload(request: Any) -> Any:
        _control_allowed()
        await repo.unload(request.path_params["model"])
        return Response(status_code=200)

    def route(path: str, fn: Handler, group: str, methods: tuple[str, ...] = ("GET",)) -> Any:
        return Route(path, guarded(group, fn), methods=list(methods))

    m, mv = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    routes = [  # inference first: Starlette matches routes in order
        route(m + "/infer", infer, "inference", ("POST",)),
        route(mv + "/infer", infer, "inference", ("POST",)),
        route("/v2/health/live", live, "health"),
        route("/v2/health/ready", ready, "health"),
        route("/v2", server_metadata, "metadata"),
        route("/v2/models/stats", model_stats, "statistics"),
        route("/v2/repository/index", repo_index, "model-repository", ("POST",)),
        route("/v2/repository/models/{model}/load", repo_load, "model-repository", ("POST",)),
        route("/v2/repository/models/{model}/unload", repo_unload, "model-repository", ("POST",)),
    ]
    for base in (mv, m):
        routes += [route(base, model_metadata, "metadata"),
                   route(base + "/ready", model_ready, "health"),
                   route(base + "/config", model_config, "metadata"),
                   route(base + "/stats", model_stats, "statistics")]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await service.startup()
        try:
            yield
        finally:
            await service.shutdown()

    async def not_found(request: Any, exc: Any) -> Any:
        status = getattr(exc, "status_code", 404)
        return _error(status, f"Not Found: {request.method} {request.url.path} is not an endpoint of this "
                      "server (KServe v2: /v2/health/ready, /v2/models/NAME/infer, ...)"
                      if status == 404 else str(getattr(exc, "detail", "error")))

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})
    app.state.service = service
    return AccessLog(app) if options.access_log else app


class AccessLog:
    """ASGI middleware: one structured (JSON) log record per HTTP request on ``trt_edge.serve.access``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state

    def __getattr__(self, name: str) -> Any:  # app.state, app.routes... of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        info = {"status": 500, "bytes": 0}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                info["status"] = message["status"]
            elif message["type"] == "http.response.body":
                info["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                state = scope.get("state") or {}
                client = scope.get("client")
                access_log.info(json.dumps({
                    "ts": round(time.time(), 3), "method": scope.get("method"), "path": scope.get("path"),
                    "status": info["status"], "duration_ms": round((time.perf_counter() - start) * 1e3, 3),
                    "bytes_out": info["bytes"], "client": f"{client[0]}:{client[1]}" if client else None,
                    "key": state.get("key"), "model": state.get("model"), "pid": os.getpid()},
                    separators=(",", ":")))
