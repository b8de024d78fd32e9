"""API keys (hashed, constant-time compare, scopes, rate limits), Triton's restricted-API header,
and the app mounted as a library inside another ASGI app."""
from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from trt_edge.errors import InvalidInputError
from trt_edge.serve.auth import Authenticator, RestrictedApi, hash_key, load_key_file

INFER_KEY = "infer-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
SLOW_KEY = "slow-key-0123456789abcdefgh"


def _key_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"# name hash options\n"
                    f"reader {hash_key(INFER_KEY)} scopes=infer\n"
                    f"admin {hash_key(ADMIN_KEY)}\n"
                    f"slow {hash_key(SLOW_KEY)} rate=0.5/s burst=2 scopes=infer\n")
    return path


def test_key_file_holds_only_hashes_and_checks_scopes(tmp_path):
    path = _key_file(tmp_path)
    assert INFER_KEY not in path.read_text()
    auth = Authenticator(load_key_file(path))
    assert auth.check(f"Bearer {INFER_KEY}", None, "infer").key == "reader"
    assert auth.check(None, ADMIN_KEY, "repository").ok
    denied = auth.check(f"Bearer {INFER_KEY}", None, "repository")
    assert denied.status == 403 and "reader" in denied.message
    assert auth.check("Bearer wrong-key-0123456789abcdef", None, "infer").status == 401
    assert auth.check(None, None, "infer").status == 401
    results = [auth.check(None, SLOW_KEY, "infer") for _ in range(3)]
    assert [r.ok for r in results] == [True, True, False] and results[2].status == 429


@pytest.mark.parametrize("line", ["k sha256:abcd", "k md5:00", f"k {hash_key(INFER_KEY)} rate=-1/s",
                                  f"k {hash_key(INFER_KEY)} scopes=admin"])
def test_bad_key_file_lines_are_refused_with_the_format(tmp_path, line):
    p = tmp_path / "k.txt"
    p.write_text(line + "\n")
    with pytest.raises(InvalidInputError, match="sha256|rate=|scopes="):
        load_key_file(p)


def test_short_keys_and_bad_restricted_specs_are_refused():
    with pytest.raises(InvalidInputError, match="at least 16"):
        hash_key("short")
    with pytest.raises(InvalidInputError, match="API\\[,API\\]:HEADER=VALUE"):
        RestrictedApi.parse("model-repository")
    r = RestrictedApi.parse("model-repository,statistics:admin-token=s3cret")
    assert r.allows("inference", None) and not r.allows("statistics", "nope") and r.allows("statistics", "s3cret")


@pytest.fixture(scope="module")
def secured(tmp_path_factory, serve_repo):
    from trt_edge.serve import BackgroundServer, ServeOptions, ServerConfig

    keys = load_key_file(_key_file(tmp_path_factory.mktemp("keys")))
    opts = ServeOptions(serve_repo, model_control_mode="explicit", load_models=("mnist",), api_keys=tuple(keys),
                        restricted_apis=(RestrictedApi.parse("model-repository:admin-token=s3cret"),))
    with BackgroundServer(opts, ServerConfig(http_port=0, metrics_port=None)) as srv:
        yield srv


def _call(srv, method, path, headers=None, body=b""):
    conn = http.client.HTTPConnection(srv.cfg.host, srv.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def test_secured_server_keeps_health_open_and_guards_the_rest(secured):
    httpclient = pytest.importorskip("tritonclient.http")
    assert _call(secured, "GET", "/v2/health/ready")[0] == 200
    assert _call(secured, "GET", "/v2/models/mnist/ready")[0] == 200
    status, headers, data = _call(secured, "GET", "/v2/models/mnist")
    assert status == 401 and "Bearer" in headers.get("www-authenticate", "") and "API key" in json.loads(data)["error"]
    c = httpclient.InferenceServerClient(secured.url)
    try:
        x = np.zeros((1, 1, 28, 28), np.float32)
        i = httpclient.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        res = c.infer("mnist", [i], headers={"Authorization": f"Bearer {INFER_KEY}"})
        assert res.as_numpy("logits").shape == (1, 10)
    finally:
        c.close()
    # Repository API: the key's scope and Triton's restricted-API header both apply.
    assert _call(secured, "POST", "/v2/repository/index", {"X-API-Key": ADMIN_KEY})[0] == 403
    status, _, data = _call(secured, "POST", "/v2/repository/index", {"X-API-Key": ADMIN_KEY,
                                                                       "admin-token": "s3cret"})
    assert status == 200 and any(r["name"] == "mnist" for r in json.loads(data))
    status, _, data = _call(secured, "POST", "/v2/repository/index", {"X-API-Key": INFER_KEY,
                                                                       "admin-token": "s3cret"})
    assert status == 403 and "may not use the repository API" in json.loads(data)["error"]
    codes = [_call(secured, "GET", "/v2/models/mnist", {"X-API-Key": SLOW_KEY})[0] for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429
    assert _call(secured, "GET", "/v2/health/live")[0] == 200


def test_app_mounts_inside_another_asgi_app(serve_repo):
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    from trt_edge.serve import ServeOptions, create_app

    inner = create_app(ServeOptions(serve_repo, model_control_mode="explicit", load_models=("mnist",),
                                    access_log=False))

    @__import__("contextlib").asynccontextmanager
    async def lifespan(app):
        async with inner.router.lifespan_context(inner):
            yield

    outer = Starlette(routes=[Mount("/triton", app=inner)], lifespan=lifespan)
    with TestClient(outer) as tc:
        assert tc.get("/triton/v2/health/ready").status_code == 200
        body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}]}
        r = tc.post("/triton/v2/models/mnist/infer", json=body)
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]


def test_tls_through_the_servers_own_options(tmp_path, serve_repo):
    """--ssl-certfile/--ssl-keyfile (uvicorn's TLS): a client that trusts the certificate gets answers."""
    import datetime
    import ipaddress
    import ssl

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from trt_edge.serve import BackgroundServer, ServeOptions, ServerConfig

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cfg = ServerConfig(http_port=0, metrics_port=None, ssl_certfile=str(cert_path), ssl_keyfile=str(key_path))
    opts = ServeOptions(serve_repo, model_control_mode="explicit", load_models=("mnist",), access_log=False)
    with BackgroundServer(opts, cfg) as srv:
        ctx = ssl.create_default_context(cafile=str(cert_path))
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=30)
        conn.request("GET", "/v2/models/mnist")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["name"] == "mnist"
        conn.close()
        plain = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)  # no TLS: refused
        with pytest.raises((http.client.HTTPException, OSError)):  # the TLS port never answers plain HTTP
            plain.request("GET", "/v2/health/ready")
            plain.getresponse()
        plain.close()
