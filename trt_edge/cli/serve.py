"""trt-edge serve: the KServe v2 / Triton HTTP inference service on a Triton-layout repository."""
from __future__ import annotations

import argparse
import logging
import os
import sys

ORDER = 80
log = logging.getLogger("trt_edge")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a Triton-layout model repository over the KServe v2 / Triton HTTP protocol",
        description="Serve DIR/NAME/config.pbtxt + DIR/NAME/VERSION/model.onnx|plan (Triton's layout; the same "
                    "folder loads in NVIDIA Triton) over HTTP with the KServe v2 protocol: JSON and binary "
                    "tensors, dynamic batching, Prometheus metrics on their own port, optional API keys. "
                    "Flag names follow tritonserver's.")
    p.add_argument("--model-repository", help="the repository folder (write one with `trt-edge export-triton`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 for all interfaces)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000; 0: any free port)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--allow-metrics", choices=["true", "false"], default="true",
                   help="expose metrics (default true)")
    p.add_argument("--model-control-mode", choices=["none", "explicit", "poll"], default="none",
                   help="none: load every model at start, refuse load/unload; explicit: load --load-model "
                        "models and allow the repository load/unload API; poll: load every model and reload "
                        "one whose folder, config.pbtxt or registry state changes (hot reload)")
    p.add_argument("--repository-poll-secs", type=float, default=15.0,
                   help="with --model-control-mode poll: seconds between repository checks (default 15)")
    p.add_argument("--require-signed", action="store_true",
                   help="serve only versions whose OpenSSF model signature (model.sig) verifies with a "
                        "--trusted-key or --trusted-ca; unsigned or tampered versions are refused")
    p.add_argument("--trusted-key", action="append", default=[], metavar="PUB",
                   help="a trusted EC public key (PEM) for model signatures; repeatable")
    p.add_argument("--trusted-ca", action="append", default=[], metavar="CA",
                   help="trusted CA certificate(s) for certificate model signatures; repeatable")
    p.add_argument("--encryption-key", metavar="FILE",
                   help="key of versions stored encrypted (model.onnx.enc); default $TRT_EDGE_MODEL_KEY if set")
    p.add_argument("--drift-threshold", type=float, default=0.25,
                   help="input-drift PSI above which a warning is logged (versions with drift_reference.json)")
    p.add_argument("--load-model", action="append", default=None, metavar="NAME",
                   help="with --model-control-mode explicit: a model to load at start ('*' = all); repeatable")
    p.add_argument("--instances", type=int, default=None,
                   help="execution instances per model version (overrides instance_group count)")
    p.add_argument("--http-max-input-size", type=int, default=64 * 1024 * 1024,
                   help="largest request body in bytes, after decompression (default 64 MiB)")
    p.add_argument("--api-key-file", help="enable API keys: a file of 'NAME sha256:HEX [rate=R/s] [burst=B] "
                   "[scopes=infer,repository]' lines (health endpoints stay open)")
    p.add_argument("--hash-api-key", metavar="NAME", help="read a key on stdin, print its key-file line, exit")
    p.add_argument("--http-restricted-api", action="append", default=[], metavar="API[,API]:HEADER=VALUE",
                   help="answer 403 on these API groups (model-repository, statistics, metadata, inference) "
                        "unless the request has HEADER: VALUE; repeatable")
    p.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--ssl-keyfile", help="private key of --ssl-certfile (PEM)")
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="seconds to wait for in-flight requests on SIGTERM/SIGINT (default 30)")
    p.add_argument("--exit-on-error", choices=["true", "false"], default="true",
                   help="stop when a model fails to load at start (default true, as tritonserver)")
    p.add_argument("--no-access-log", action="store_true", help="no per-request JSON access log lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..errors import InvalidInputError
    from ..serve import auth
    from ..serve.app import ServeOptions
    from ..serve.protocol import Limits
    from ..serve.server import ServerConfig, serve

    if args.hash_api_key:
        key = sys.stdin.readline().strip()
        print(f"{args.hash_api_key} {auth.hash_key(key)}")
        return 0
    if not args.model_repository:
        raise InvalidInputError("--model-repository DIR is required (a folder of NAME/config.pbtxt and "
                                "NAME/VERSION/model.onnx; `trt-edge export-triton` writes one).")
    if not Path(args.model_repository).is_dir():
        raise InvalidInputError(f"--model-repository '{args.model_repository}' is not a folder.")
    if args.load_model and args.model_control_mode != "explicit":
        raise InvalidInputError("--load-model needs --model-control-mode explicit (mode none loads every model).")
    if (args.trusted_key or args.trusted_ca) and not args.require_signed:
        log.info("trusted keys given without --require-signed: signed versions are verified, unsigned ones "
                 "load with a warning")
    trust = None
    if args.require_signed or args.trusted_key or args.trusted_ca:
        from ..registry.policy import TrustPolicy
        trust = TrustPolicy.from_args(args.require_signed, args.trusted_key, args.trusted_ca)
    enc_key = None
    if args.encryption_key or os.environ.get("TRT_EDGE_MODEL_KEY"):
        from ..registry.encryption import load_key
        enc_key = load_key(args.encryption_key)
    if args.drift_threshold <= 0:
        raise InvalidInputError(f"--drift-threshold must be > 0, got {args.drift_threshold}.")
    keys = tuple(auth.load_key_file(args.api_key_file)) if args.api_key_file else ()
    options = ServeOptions(
        model_repository=Path(args.model_repository), model_control_mode=args.model_control_mode,
        load_models=tuple(args.load_model) if args.load_model else (("*",) if args.model_control_mode == "none"
                                                                    else ()),
        limits=Limits(max_input_size=args.http_max_input_size), api_keys=keys,
        restricted_apis=tuple(auth.RestrictedApi.parse(s) for s in args.http_restricted_api),
        instances=args.instances, access_log=not args.no_access_log, exit_on_error=args.exit_on_error == "true",
        trust=trust, encryption_key=enc_key, repository_poll_secs=args.repository_poll_secs,
        drift_threshold=args.drift_threshold)
    cfg = ServerConfig(host=args.host, http_port=args.http_port,
                       metrics_port=args.metrics_port if args.allow_metrics == "true" else None,
                       graceful_timeout_s=args.graceful_timeout, ssl_certfile=args.ssl_certfile,
                       ssl_keyfile=args.ssl_keyfile)
    serve(options, cfg)
    return 0
