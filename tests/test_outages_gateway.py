"""Every gateway route with Redis or S3 down answers 503 `{"error": {"code": "unavailable",
"message", "service"}}` (API key checks and job page links included), and the SDK through the
gateway raises the same types a direct client would: GatewayUnavailable when the gateway cannot be
reached, StorageUnavailable when S3 cannot be reached through a presigned URL, ArtifactAccessDenied
for an expired one.

Real: a redis-server and SeaweedFS; the gateway's ASGI app driven in-process (FastAPI's TestClient).
"Down" is a port where nothing listens. The routes come from the app: a new one fails
`test_every_route_is_classified` until it is listed here with what it needs.
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from mmq.clients import Client
from mmq.clients.direct import DirectTransport
from mmq.clients.gateway.app import api_routes, create_app
from mmq.clients.keys import KeyStore
from mmq.clients.remote import GatewayTransport, _PresignedSource
from mmq.clients.servers import free_port, start_redis, stop
from mmq.tasks import ArtifactStore, Settings
from mmq.tasks.errors import (
    ArtifactAccessDenied,
    BrokerUnavailable,
    GatewayUnavailable,
    ServiceUnavailable,
    StorageUnavailable,
)
from mmq.tasks.records import JobStatus
from tests.conftest import ROOT, base_env

JOB = "0123456789abcdef0123456789abcdef"  # replaced by a real job of the key's tenant where S3 is down
UPLOAD = "fedcba9876543210fedcba9876543210"
PNG = (ROOT / "samples" / "house.png").read_bytes()
# (method, path) of each route: the services it needs, and a request to it (path, options).
ROUTES: dict[tuple[str, str], tuple[set[str], str, dict]] = {
    ("POST", "/v1/jobs"): ({"redis", "storage"}, "/v1/jobs",
                           {"json": {"pipeline": "caption", "inputs": {"image": {"upload": UPLOAD}}}}),
    ("POST", "/v1/plans"): ({"redis", "storage"}, "/v1/plans",
                            {"json": {"request": "describe this", "inputs": {"image": {"upload": UPLOAD}}}}),
    ("GET", "/v1/jobs"): ({"redis"}, "/v1/jobs", {}),
    ("GET", "/v1/jobs/{job_id}"): ({"redis"}, f"/v1/jobs/{JOB}", {}),
    ("DELETE", "/v1/jobs/{job_id}"): ({"redis"}, f"/v1/jobs/{JOB}", {}),
    ("GET", "/v1/jobs/{job_id}/events"): ({"redis"}, f"/v1/jobs/{JOB}/events", {}),
    ("GET", "/v1/jobs/{job_id}/outputs/{name}"): ({"redis", "storage"}, f"/v1/jobs/{JOB}/outputs/image", {}),
    ("POST", "/v1/uploads"): ({"redis", "storage"}, "/v1/uploads", {"json": {"size": len(PNG)}}),
    ("GET", "/v1/pipelines"): (set(), "/v1/pipelines", {}),
    ("GET", "/v1/pipelines/{name}"): (set(), "/v1/pipelines/caption", {}),
    ("GET", "/metrics"): ({"redis"}, "/metrics", {}),
    ("GET", "/healthz"): ({"redis"}, "/healthz", {}),
    ("GET", "/jobs/{job_id}"): ({"redis"}, f"/jobs/{JOB}", {"params": {"token": "1.x"}}),
    ("GET", "/static/{path:path}"): (set(), "/static/mesh-viewer.js", {}),
    ("GET", "/openapi.json"): (set(), "/openapi.json", {}),
    ("GET", "/docs"): (set(), "/docs", {}),
    ("GET", "/docs/oauth2-redirect"): (set(), "/docs/oauth2-redirect", {}),
    ("GET", "/redoc"): (set(), "/redoc", {}),
}


def route_id(route: tuple[str, str]) -> str:
    return " ".join(route)


def needing(service: str) -> list[tuple[str, str]]:
    return sorted(route for route, (needs, _, _) in ROUTES.items() if service in needs)


def gateway_over(env: dict[str, str]) -> TestClient:
    return TestClient(create_app(Settings.from_env(env), webhooks=False))


def request(http: TestClient, route: tuple[str, str], key: str, job_id: str = JOB):
    _, path, options = ROUTES[route]
    return http.request(route[0], path.replace(JOB, job_id), headers={"Authorization": f"Bearer {key}"},
                        **options)


def sdk_over(http: TestClient, key: str) -> GatewayTransport:
    """The SDK's transport, through the in-process gateway (as its httpx client), with `key`."""
    return GatewayTransport("http://testserver", key,
                            http=TestClient(http.app, headers={"Authorization": f"Bearer {key}"}))


def assert_unavailable(response, service: str, address: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert list(body) == ["error"] and body["error"]["code"] == "unavailable", body
    assert body["error"]["service"] == service and address in body["error"]["message"], body


@pytest.fixture(scope="module")
def redis_down(s3_server, tmp_path_factory):
    """The gateway over a Redis that is down (and a working S3), and the address it cannot reach."""
    port = free_port()
    env = base_env(tmp_path_factory.mktemp("redis-down"), port, s3_server.port)
    return gateway_over(env), f"127.0.0.1:{port}", env


@pytest.fixture(scope="module")
def s3_down(s3_server, model_cache, tmp_path_factory):
    """The gateway over a working Redis and an S3 that is down; a key of tenant acme and a succeeded
    job of acme whose output is a file (as a worker leaves it)."""
    redis = start_redis(tmp_path_factory.mktemp("s3-down"), persistent=False, tied=True)
    env = base_env(model_cache, redis.port, s3_server.port)
    key = KeyStore.from_settings(Settings.from_env(env)).create("acme")[1]
    direct = DirectTransport(Settings.from_env(env))
    job_id = direct.submit("caption", {"image": PNG}, owner="acme")
    direct.jobs.finish(job_id, JobStatus.SUCCEEDED, outputs={"image": direct.record(job_id).inputs["image"]})
    direct.close()
    port = free_port()
    yield SimpleNamespace(http=gateway_over({**env, "MMQ_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}),
                          address=f"http://127.0.0.1:{port}", key=key, job_id=job_id, env=env)
    stop(redis.pid)


def test_every_route_is_classified(redis_down):
    http, _, _ = redis_down
    routes = {(method, route.path) for route in api_routes(http.app) for method in route.methods
              if method != "HEAD"}
    assert routes == set(ROUTES)


@pytest.mark.parametrize("route", needing("redis"), ids=route_id)
def test_with_redis_down(route, redis_down):
    http, address, _ = redis_down
    assert_unavailable(request(http, route, "mmq_0a1b2c3d4e5f_secret"), "redis", address)


@pytest.mark.parametrize("path", [f"/v1/jobs/{JOB}", f"/v1/jobs/{JOB}/events"])
def test_with_redis_down_a_page_token_gets_503_too(path, redis_down):
    http, address, _ = redis_down
    assert_unavailable(http.get(path, params={"token": "1.x"}), "redis", address)


def test_a_redis_error_that_no_store_translated_is_503_too(redis_down):
    _, address, env = redis_down
    app = create_app(Settings.from_env(env), webhooks=False)

    @app.get("/probe")
    def probe() -> None:  # a route that forgot the translation: redis-py's own ConnectionError
        Settings.from_env(env).redis.sync_client().ping()

    assert_unavailable(TestClient(app).get("/probe"), "redis", address)


@pytest.mark.parametrize("route", needing("storage"), ids=route_id)
def test_with_s3_down(route, s3_down):
    assert_unavailable(request(s3_down.http, route, s3_down.key, s3_down.job_id), "storage", s3_down.address)


@pytest.mark.parametrize("route", sorted(route for route, (needs, _, _) in ROUTES.items() if not needs),
                         ids=route_id)
def test_a_route_that_needs_neither_works_while_both_are_down(route, tmp_path):
    http = gateway_over(base_env(tmp_path, free_port(), free_port()))
    assert request(http, route, "mmq_0a1b2c3d4e5f_secret").status_code == 200


# -- the SDK through the gateway ----------------------------------------------------------------


def test_the_sdk_raises_the_direct_clients_types_for_what_is_down_behind_the_gateway(redis_down, s3_down):
    http, _, _ = redis_down
    with pytest.raises(BrokerUnavailable, match="Redis unreachable"):
        sdk_over(http, "mmq_0a1b2c3d4e5f_secret").list_jobs(limit=5, cursor=None)
    with pytest.raises(StorageUnavailable, match="artifact store unreachable"):  # the gateway's 503
        sdk_over(s3_down.http, s3_down.key).upload(PNG, "image/png")


def test_an_upload_to_a_presigned_url_where_s3_is_down_is_storage_unavailable(s3_down):
    port = free_port()  # the gateway reaches S3; the address it signs URLs for does not answer
    http = gateway_over({**s3_down.env, "MMQ_S3_PUBLIC_URL": f"http://127.0.0.1:{port}"})
    with pytest.raises(StorageUnavailable, match=f"artifact store unreachable at http://127.0.0.1:{port}"):
        sdk_over(http, s3_down.key).upload(PNG, "image/png")


def test_a_gateway_that_cannot_be_reached_is_gateway_unavailable():
    port = free_port()
    client = Client(gateway_url=f"http://127.0.0.1:{port}", api_key="mmq_0a1b2c3d4e5f_secret")
    with pytest.raises(GatewayUnavailable, match=f"gateway unreachable at http://127.0.0.1:{port}") as away:
        client.pipelines()
    assert isinstance(away.value, ServiceUnavailable)


def test_a_proxy_saying_the_gateway_is_down_is_gateway_unavailable():
    class Proxy(BaseHTTPRequestHandler):  # what nginx answers while nothing listens behind it
        def do_GET(self) -> None:
            body = b"<html><h1>502 Bad Gateway</h1></html>"
            self.send_response(502)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = Client(gateway_url=f"http://127.0.0.1:{server.server_port}", api_key="mmq_0a1b2c3d4e5f_x")
        with pytest.raises(GatewayUnavailable, match="answered 502"):
            client.pipelines()
    finally:
        server.shutdown()
        server.server_close()


def store_at(endpoint: str, settings: Settings) -> ArtifactStore:
    return ArtifactStore.from_settings(Settings(s3_endpoint_url=endpoint, s3_bucket=settings.s3_bucket,
                                                aws_access_key_id=settings.aws_access_key_id,
                                                aws_secret_access_key=settings.aws_secret_access_key))


def test_presigned_urls_read_by_the_sdk_expired_or_with_s3_down(redis_down):
    _, _, env = redis_down
    settings = Settings.from_env(env)
    store = store_at(settings.s3_endpoint_url, settings)
    ref = store.put_bytes(PNG)
    # 3 s, not 1: a 2-core CI machine stalled past one second between signing and the first read.
    signed_at = time.monotonic()
    expiring = _PresignedSource({ref.uri: store.presigned_url(ref, expiry_s=3)})
    assert expiring.get_bytes(ref) == PNG
    port = free_port()
    s3_away = _PresignedSource({ref.uri: store_at(f"http://127.0.0.1:{port}", settings).presigned_url(ref)})
    with pytest.raises(StorageUnavailable, match=f"artifact store unreachable at http://127.0.0.1:{port}"):
        s3_away.get_bytes(ref)
    time.sleep(max(0.0, signed_at + 4.1 - time.monotonic()))  # past the expiry, whole seconds on S3's clock
    with pytest.raises(ArtifactAccessDenied, match="expired"):
        expiring.get_bytes(ref)
