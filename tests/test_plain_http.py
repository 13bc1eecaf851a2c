"""The artifact store's kept-alive connections (`mmq.tasks.plain_http`) against a real HTTP server
on loopback: one connection for many requests, a connection the server closed while idle replaced
once, a refused connection the caller's to handle, and none shared with a forked child."""

import http.server
import os
import socket
import ssl
import threading
import time

import pytest

from mmq.tasks.plain_http import KeepAlive

from .redis_servers import make_certificates


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.peers: list[tuple[str, int]] = []  # the client's address of each request
        self.close_after: set[int] = set()  # request numbers answered with `Connection: close`
        self.drop_after: set[int] = set()  # request numbers after which the connection is closed, unsaid
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        self._answer(b"")

    def do_PUT(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, received: bytes) -> None:
        server: Server = self.server  # type: ignore[assignment]
        server.peers.append(self.client_address)
        closing = len(server.peers) in server.close_after
        status = 404 if self.path.startswith("/missing") else 200
        body = b"%s %s %s" % (self.command.encode(), self.path.encode(), received)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if closing:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = closing or len(server.peers) in server.drop_after

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def tls_server(tmp_path):
    certificates = make_certificates(tmp_path / "tls")
    server = Server()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.cert_file, certificates.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, certificates
    server.shutdown()
    server.server_close()


def test_https_is_verified_against_the_systems_authorities(tls_server, monkeypatch):
    """As urllib3 did: the system's CAs (OpenSSL's, which SSL_CERT_FILE names); a certificate
    they did not sign is refused, and the caller (the store) reads through boto3 instead."""
    server, certificates = tls_server
    url = server.url.replace("http:", "https:") + "/secret"
    with pytest.raises(ssl.SSLCertVerificationError):
        KeepAlive().request("GET", url)
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates.ca_file))
    http = KeepAlive()
    assert [http.request("GET", url).data for _ in range(2)] == [b"GET /secret "] * 2
    assert len(set(server.peers)) == 1  # kept alive over TLS too


def test_requests_share_one_kept_alive_connection_whatever_their_answer(server):
    http = KeepAlive()
    first = http.request("GET", f"{server.url}/a?X-Amz-Signature=1")
    assert (first.status, first.data) == (200, b"GET /a?X-Amz-Signature=1 ")
    assert http.request("GET", f"{server.url}/missing").status == 404  # read whole: the connection stays usable
    put = http.request("PUT", f"{server.url}/b", body=b"bytes", headers={"Content-Type": "image/png"})
    assert (put.status, put.data) == (200, b"PUT /b bytes")
    assert len(set(server.peers)) == 1


def test_a_connection_the_server_closed_is_replaced_once_and_an_announced_close_is_not_reused(server):
    http = KeepAlive()
    server.drop_after.add(1)  # as when the server's keep-alive runs out while the connection is idle
    http.request("GET", f"{server.url}/a")
    time.sleep(0.2)  # (the server has closed its end)
    assert http.request("GET", f"{server.url}/b").data == b"GET /b "
    server.close_after.add(3)
    assert http.request("GET", f"{server.url}/c").status == 200  # answered with Connection: close
    http.request("GET", f"{server.url}/d")
    assert len(set(server.peers)) == 3  # the first connection, its replacement, and one after the close


def test_a_refused_connection_is_the_callers_to_handle_and_a_url_must_be_http(server):
    http = KeepAlive(connect_timeout_s=2)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        http.request("GET", f"http://127.0.0.1:{port}/a")
    with pytest.raises(ValueError, match="not an http"):
        http.request("GET", "s3://bucket/key")


def test_a_forked_child_opens_its_own_connection(server):
    http = KeepAlive()
    http.request("GET", f"{server.url}/parent")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its parent's idle connection is not its own
        ok = False
        try:
            ok = http.request("GET", f"{server.url}/child").data == b"GET /child "
        finally:
            os.write(writer, b"1" if ok else b"0")
            os._exit(0)
    os.close(writer)
    assert os.read(reader, 1) == b"1"
    os.waitpid(pid, 0)
    http.request("GET", f"{server.url}/parent-again")
    parent, child, again = server.peers
    assert parent == again != child  # the parent's connection, still its own after the fork
