"""kubesim's HTTP front: the Kubernetes REST API over HTTP/1.1 (keep-alive, TCP_NODELAY, chunked
watches), discovery for kubectl, bearer tokens, and Status errors. It parses requests and calls
`api.Api`; it holds no state of its own."""
from __future__ import annotations

import json
import select
import socket
import ssl
import struct
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

from . import errors
from .faults import ConnectionReset, Garbage


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, api, tokens: set[str], faults, ssl_context=None):
        super().__init__(address, Handler)
        self.api, self.tokens, self.faults = api, tokens, faults
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def finish_request(self, request, client_address):
        if hasattr(request, "do_handshake"):  # TLS: shake hands in the connection's own thread
            try:
                request.do_handshake()
            except OSError:
                return
        super().finish_request(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it every response waits ~40 ms for the next packet
    server_version = "kubesim"
    sys_version = ""

    def version_string(self):
        return "kubesim"

    def log_message(self, fmt, *args):  # quiet: tests and benchmarks make many requests
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_DELETE(self):
        self._handle("DELETE")

    # ---- dispatch ---------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        url = url._replace(path=url.path.rstrip("/") or "/")
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
            if url.path in ("/healthz", "/livez", "/readyz"):
                return self._send_text(200, "ok")
            if url.path == "/metrics":
                return self._send_text(200, self.server.api.metrics(), "text/plain; version=0.0.4")
            self._authenticate()
            if url.path.startswith("/kubesim/"):
                return self._send_json(200, self.server.api.control(method, url.path, query, body))
            lose_answer = self.server.faults.before_request(url.path, method)
            if url.path.endswith("/exec"):
                return self._exec(url.path, parse_qs(url.query, keep_blank_values=True))
            result = self.server.api.handle(method, url.path, query, body, self.headers)
            if lose_answer is not None:
                raise ConnectionReset()
            if result.stream is not None:
                return self._send_stream(result)
            if result.text is not None:
                return self._send_text(result.code, result.text)
            if result.raw is not None:
                return self._send_bytes(result.code, result.raw)
            return self._send_json(result.code, result.body)
        except errors.ApiError as exc:
            self._send_json(exc.code, exc.status())
        except ConnectionReset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
        except Garbage:
            self._send_bytes(200, b"<html>this is not the API you are looking for")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001  a bug in kubesim must still answer like a server
            traceback.print_exc()
            self._send_json(500, errors.ApiError(500, "InternalError", f"kubesim: {exc!r}").status())

    def _exec(self, path: str, query: dict[str, list[str]]) -> None:
        """pods/exec over a websocket (execsrv): the checks answer as HTTP errors, then 101 and the
        channel protocol until the command ends."""
        from . import execsrv
        parts = [p for p in path.split("/") if p]
        if len(parts) != 7 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] != "pods":
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        request = execsrv.ExecRequest(self.server.api.sim, parts[3], parts[5], query)  # its errors first, as a server's
        protocol = execsrv.choose_protocol(self.headers.get("Sec-WebSocket-Protocol", ""))
        key = self.headers.get("Sec-WebSocket-Key", "")
        if "websocket" not in self.headers.get("Upgrade", "").lower() or protocol is None or not key:
            raise errors.bad_request("kubesim serves exec over websockets with the v5.channel.k8s.io or "
                                     "v4.channel.k8s.io protocol (not SPDY)")
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", execsrv.accept_key(key))
        self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        execsrv.Session(request, self.rfile, self.connection, protocol).run()

    def _authenticate(self) -> None:
        if not self.server.tokens:
            return
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or header[7:].strip() not in self.server.tokens:
            raise errors.unauthorized()

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return None
        raw = self.rfile.read(length)
        ctype = self.headers.get("Content-Type", "")
        if "protobuf" in ctype:
            raise errors.ApiError(415, "UnsupportedMediaType", "kubesim speaks JSON only; send application/json")
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(f"the body of the request could not be decoded: {exc}") from None

    # ---- responses --------------------------------------------------------------------------

    def _send_json(self, code: int, body) -> None:
        self._send_bytes(code, json.dumps(body, separators=(",", ":")).encode())

    def _send_bytes(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def _send_text(self, code: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_gone(self) -> bool:
        """A watcher's client that hung up: end the watch instead of waiting for its timeout."""
        return _peek_closed(self.connection)

    def _send_stream(self, result) -> None:
        """Chunked transfer: one chunk per watch event (or log line), flushed at once."""
        self.send_response(result.code)
        self.send_header("Content-Type", result.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        try:
            for item in result.stream:
                if item is None:
                    if self._client_gone():
                        break
                    continue
                data = item if isinstance(item, bytes) else (json.dumps(item, separators=(",", ":")) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            close = getattr(result.stream, "close", None)
            if close:
                close()


def _peek_closed(sock) -> bool:
    """True when the peer has closed the connection (an EOF is waiting on the socket)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        if isinstance(sock, ssl.SSLSocket):  # TLS refuses MSG_PEEK: look at the raw bytes
            with socket.fromfd(sock.fileno(), sock.family, sock.type) as raw:
                return raw.recv(1, socket.MSG_PEEK) == b""
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def serve_forever_in(server: Server) -> None:
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


def wait_until_ready(host: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"kubesim did not start on {host}:{port}")
