"""The inference service: KServe v2 / Triton HTTP protocol on a Triton-layout model repository.

``trt-edge serve --model-repository DIR`` runs it; :func:`create_app` gives the ASGI app to mount
in another program; :func:`export_triton` writes a repository (``trt-edge export-triton``) that
NVIDIA Triton loads unchanged. FastAPI/Starlette, uvicorn and prometheus-client are imported only
when an app is created (``pip install 'trt-edge[serve]'``).
"""
from .app import ServeOptions, Service, create_app
from .auth import ApiKey, Authenticator, RestrictedApi, hash_key, load_key_file
from .config import ModelConfig, format_config, parse_config
from .export import ExportTritonOptions, export_triton
from .protocol import Limits
from .repository import ModelRepository
from .server import BackgroundServer, ServerConfig, serve

__all__ = ["ServeOptions", "Service", "create_app", "ApiKey", "Authenticator", "RestrictedApi", "hash_key",
           "load_key_file", "ModelConfig", "format_config", "parse_config", "ExportTritonOptions",
           "export_triton", "Limits", "ModelRepository", "BackgroundServer", "ServerConfig", "serve"]
