"""An ingress controller stand-in (`kubesim serve --ingress-port PORT`): serves the cluster's
Ingress rules on a port of its own, as ingress-nginx would for the subset the portal uses.

A request is matched to the Ingress path with the longest prefix (and its host, when the rule
names one). When the Ingress has `nginx.ingress.kubernetes.io/auth-url`, that URL is called first
(GET, a 5 s timeout) with the browser's Cookie and X-Original-URL / X-Original-Method /
X-Forwarded-Host / X-Forwarded-Proto, as ingress-nginx does: 2xx passes (the headers named in
`auth-response-headers` go on to the backend), 401 sends a browser to `auth-signin` with
`?rd=<the original URL>` (or answers 401 without one), 403 answers 403, anything else 500.
The backend Service's running pods answer with a small simulated app: a JupyterLab-like page for
port 8888, a plain page for any other port; none running: 503. A development tool on loopback.
"""
from __future__ import annotations

import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlsplit

import requests

AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
AUTH_SIGNIN = "nginx.ingress.kubernetes.io/auth-signin"
AUTH_RESPONSE_HEADERS = "nginx.ingress.kubernetes.io/auth-response-headers"
JUPYTER_PORT = 8888


class IngressServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, sim):
        super().__init__(address, IngressHandler)
        self.sim = sim
        self.auth_calls = 0  # how often an auth URL was asked (tests read it)


class IngressHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "kubesim-ingress"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        host_header = self.headers.get("Host", "")
        host = host_header.rsplit(":", 1)[0] if ":" in host_header else host_header
        path = urlsplit(self.path).path
        match = self._match(host, path)
        if match is None:
            return self._answer(404, "<h1>404 Not Found</h1><p>default backend (kubesim ingress)</p>")
        ingress, backend = match
        annotations = ingress["metadata"].get("annotations") or {}
        upstream_headers: dict[str, str] = {}
        auth_url = annotations.get(AUTH_URL)
        if auth_url:
            original = f"http://{host_header}{self.path}"
            self.server.auth_calls += 1
            try:
                answer = requests.get(auth_url, timeout=5, allow_redirects=False, headers={
                    "Cookie": self.headers.get("Cookie", ""), "X-Original-URL": original, "X-Original-Method": method,
                    "X-Forwarded-Host": host_header, "X-Forwarded-Proto": "http", "X-Auth-Request-Redirect": self.path})
            except requests.RequestException:
                return self._answer(500, "<h1>500 Internal Server Error</h1><p>the auth service did not answer</p>")
            if answer.status_code == 401:
                signin = annotations.get(AUTH_SIGNIN)
                if signin:
                    joiner = "&" if "?" in signin else "?"
                    return self._answer(302, "", {"Location": f"{signin}{joiner}rd={quote(original, safe='')}"})
                return self._answer(401, "<h1>401 Authorization Required</h1>")
            if answer.status_code == 403:
                return self._answer(403, "<h1>403 Forbidden</h1>")
            if not 200 <= answer.status_code < 300:
                return self._answer(500, "<h1>500 Internal Server Error</h1>")
            for name in (annotations.get(AUTH_RESPONSE_HEADERS) or "").split(","):
                name = name.strip()
                if name and name in answer.headers:
                    upstream_headers[name] = answer.headers[name]
        pods = self._backend_pods(ingress["metadata"]["namespace"], backend)
        if not pods:
            return self._answer(503, "<h1>503 Service Temporarily Unavailable</h1>")
        port = backend.get("port", {}).get("number")
        pod = html.escape(pods[0]["metadata"]["name"])
        auth = "signed in through the portal; the notebook's token came from the auth answer" \
            if upstream_headers.get("Authorization") else "no token"
        if port == JUPYTER_PORT:
            body = (f"<!doctype html><title>JupyterLab</title><h1>JupyterLab</h1><p id='kubesim-app'>simulated by kubesim: "
                    f"pod {pod}, {html.escape(auth)}</p><p>path {html.escape(path)}</p>")
        else:
            body = (f"<!doctype html><title>port {port}</title><h1>Port {port}</h1><p id='kubesim-app'>simulated by "
                    f"kubesim: pod {pod}, {html.escape(auth)}</p><p>path {html.escape(path)}</p>")
        return self._answer(200, body)

    def _match(self, host: str, path: str):
        from .resources import lookup
        rtype = lookup("networking.k8s.io", "v1", "ingresses")
        best = None
        for ingress in self.server.sim.store.all(rtype):
            for rule in (ingress.get("spec") or {}).get("rules") or []:
                if rule.get("host") and rule["host"] != host:
                    continue
                for p in (rule.get("http") or {}).get("paths") or []:
                    prefix = p.get("path") or "/"
                    exact = p.get("pathType") == "Exact"
                    ok = path == prefix if exact else (path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/")
                                                       or prefix == "/")
                    if ok and (best is None or len(prefix) > len(best[2])):
                        best = (ingress, p.get("backend", {}).get("service") or {}, prefix)
        return None if best is None else (best[0], best[1])

    def _backend_pods(self, namespace: str, backend: dict) -> list[dict]:
        from .resources import core
        from .selectors import matcher
        service = self.server.sim.store.find(core("services"), namespace, backend.get("name", ""))
        if service is None:
            return []
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:
            return []
        match = matcher(",".join(f"{k}={v}" for k, v in selector.items()), None)
        pods = self.server.sim.store.list(core("pods"), namespace, match)[0]
        return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]

    def _answer(self, code: int, body: str, headers: dict | None = None) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def serve(sim, host: str, port: int) -> IngressServer:
    server = IngressServer((host, port), sim)
    threading.Thread(target=server.serve_forever, name="kubesim-ingress", daemon=True).start()
    return server
