"""Run the service with uvicorn: blocking (``trt-edge serve``) or in a background thread (tests,
embedding).

Shutdown is graceful: on SIGINT/SIGTERM uvicorn stops accepting connections and waits up to
``graceful_timeout_s`` for in-flight requests; then the app's lifespan drains every model's queue
and closes its execution instances (waiting for borrowed ones). TLS: give ``ssl_certfile`` /
``ssl_keyfile`` (``--ssl-certfile``/``--ssl-keyfile``; uvicorn's own TLS support), or put the
service behind a TLS-terminating proxy.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import threading
import time
from typing import Any, Iterator

from .._lazy import require
from ..errors import InvalidInputError, TrtEdgeError
from .app import ServeOptions, create_app

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    http_port: int = 8000
    metrics_port: int | None = 8002       # None: no metrics endpoint
    graceful_timeout_s: float = 30.0
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_ca_certs: str | None = None
    backlog: int = 2048
    limit_concurrency: int | None = None  # uvicorn answers 503 above this many connections+tasks

    def __post_init__(self) -> None:
        for name in ("http_port", "metrics_port"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 65535:
                raise InvalidInputError(f"{name.replace('_', '-')} must be 0..65535, got {v}.")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise InvalidInputError("TLS needs both --ssl-certfile and --ssl-keyfile.")


def _bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidInputError(f"Cannot listen on {host}:{port} ({exc}); choose another --http-port or "
                                "stop the process using it.") from exc
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: Any, cfg: ServerConfig) -> Any:
    uvicorn = require("uvicorn", "`trt-edge serve`")
    config = uvicorn.Config(app, lifespan="on", access_log=False, log_config=None,
                            timeout_graceful_shutdown=cfg.graceful_timeout_s, backlog=cfg.backlog,
                            limit_concurrency=cfg.limit_concurrency, ssl_certfile=cfg.ssl_certfile,
                            ssl_keyfile=cfg.ssl_keyfile, ssl_ca_certs=cfg.ssl_ca_certs,
                            server_header=False, date_header=False)

    class Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        """uvicorn's server, except that a SIGTERM/SIGINT that led to a graceful shutdown is not
        raised again afterwards: a drained server exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)


def _metrics(cfg: ServerConfig) -> Any:
    if cfg.metrics_port is None:
        return None
    from .metrics import ServeMetrics  # noqa: PLC0415
    return ServeMetrics()


def serve(options: ServeOptions, cfg: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM (blocking)."""
    metrics = _metrics(cfg)
    app = create_app(options, metrics)
    sock = _bind(cfg.host, cfg.http_port, cfg.backlog)
    metrics_server = metrics.serve(cfg.host, cfg.metrics_port) if metrics is not None else None
    server = _uvicorn_server(app, cfg)
    scheme = "https" if cfg.ssl_certfile else "http"
    log.info("serving %s on %s://%s:%d (KServe v2)", options.model_repository, scheme, cfg.host,
             sock.getsockname()[1])
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if metrics_server is not None:
            metrics_server.shutdown()
    if not server.started:
        raise TrtEdgeError("the server did not start; see the log above.")
    log.info("stopped: in-flight requests drained, models closed")


class BackgroundServer:
    """The service in a background thread on a free loopback port (``http_port=0``).

    ``with BackgroundServer(options) as srv: srv.url ...``; ``stop()`` drains like SIGTERM.
    """

    def __init__(self, options: ServeOptions, cfg: ServerConfig | None = None) -> None:
        self.cfg = cfg or ServerConfig(http_port=0, metrics_port=0)
        self.metrics = _metrics(self.cfg)
        self.app = create_app(options, self.metrics)
        self._sock = _bind(self.cfg.host, self.cfg.http_port, self.cfg.backlog)
        self.port = self._sock.getsockname()[1]
        self._metrics_server: Any = None
        self.metrics_port: int | None = None
        self._server = _uvicorn_server(self.app, self.cfg)
        self._thread = threading.Thread(target=self._run, name="trt-edge-serve", daemon=True)
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{self.cfg.host}:{self.port}"

    @property
    def service(self) -> Any:
        return self.app.state.service

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc

    def start(self, timeout_s: float = 120.0) -> "BackgroundServer":
        if self.metrics is not None:
            self._metrics_server = self.metrics.serve(self.cfg.host, self.cfg.metrics_port or 0)
            self.metrics_port = self._metrics_server.server_port
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise TrtEdgeError(f"the server failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TrtEdgeError(f"the server did not start within {timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
