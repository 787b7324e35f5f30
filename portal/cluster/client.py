"""The portal's Kubernetes client: set-up from a kubeconfig (or in-cluster), creating and deleting
a job's objects idempotently, reading logs, lists and watches as plain dicts, the syncer's Lease.
The only module that talks to the cluster.

Every request carries a (connect, read) timeout; watches also ask the server to end them
(`timeoutSeconds`) and read with a client timeout a little longer, so a half-open connection is
noticed. Whatever goes wrong (refused, reset, DNS, TLS, timeout, 5xx, 429, an answer that is not
what the API promises) becomes ClusterError with a message a person can read and whether
retrying may help: no other exception type leaves this module for a cluster call."""
from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable, Iterator

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.utils import parse_quantity  # noqa: F401  (for the syncer's writers)

from .labels import MANAGED_BY, class_patch, job_label_selector, resume_patch, suspend_patch
from .manifests import (ClusterSettings, JobRequest, build, name_of, owned_by, port_objects, port_path,
                        published_url)

DEFAULT_TIMEOUT = (3.0, 5.0)  # seconds: connect, read
SHELL = ("/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh")  # bash where the image has it
WATCH_READ_SLACK = 10.0  # a watch's client read timeout = its server timeout + this
LEASE_API = "coordination.k8s.io/v1"


class ClusterError(Exception):
    def __init__(self, message: str, status: int = 0, retryable: bool = False, reason: str = ""):
        super().__init__(message)
        self.message, self.status, self.retryable, self.reason = message, status, retryable, reason

    @property
    def answered(self) -> bool:
        """The API server answered (a status code): it is up, it said no."""
        return self.status > 0

    @property
    def not_started(self) -> bool:
        """A log was asked of a container that has not started yet (the API's 400 says so)."""
        return self.status == 400 and "waiting to start" in self.message


class Gone(ClusterError):
    """A watch's resourceVersion is too old (410): list again."""


def _error(exc: BaseException) -> ClusterError:
    if isinstance(exc, ClusterError):
        return exc
    if isinstance(exc, ApiException):
        status = exc.status or 0
        try:
            body = json.loads(exc.body or "{}")
        except (ValueError, TypeError):
            body = {}
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message") or exc.reason or "Kubernetes API error")[:1000]
        if status == 0:  # the client's own wrapper of a transport problem
            return ClusterError(f"The cluster cannot be reached: {message}", 0, retryable=True)
        kind = Gone if status == 410 else ClusterError
        return kind(message, status, retryable=status >= 500 or status == 429, reason=str(body.get("reason") or ""))
    if isinstance(exc, (urllib3.exceptions.TimeoutError, TimeoutError)) or "timed out" in str(exc).lower():
        return ClusterError("The cluster did not answer in time.", 0, retryable=True)
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        return ClusterError(f"The cluster cannot be reached ({_transport_words(exc)}).", 0, retryable=True)
    return ClusterError("The cluster sent an answer the portal cannot read; it may be overloaded or misconfigured.", 0,
                        retryable=True)


def _transport_words(exc: BaseException) -> str:
    """What went wrong on the way, in words (never the request, its headers or a token)."""
    text = f"{exc!r} {getattr(exc, 'reason', '')!r}".lower()
    for needle, words in (("refused", "connection refused"), ("reset", "connection reset"),
                          ("name or service", "unknown host name"), ("nodename", "unknown host name"),
                          ("ssl", "TLS error"), ("certificate", "TLS error"), ("unreachable", "network unreachable"),
                          ("remotedisconnected", "connection closed without an answer"),
                          ("protocol", "connection closed without an answer")):
        if needle in text:
            return words
    return "network error"


def _lines(response) -> Iterator[bytes]:
    """The non-empty lines of a streamed answer as they arrive, the last one even without its
    newline (so a body that is no watch stream at all is read, and refused, too)."""
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


# What a call to the API can raise besides ApiException: transport errors, and a malformed answer
# (the generated models raise ValueError/TypeError/KeyError, pydantic's errors are ValueErrors).
FAILURES = (ApiException, OpenApiException, urllib3.exceptions.HTTPError, OSError, ValueError, TypeError, KeyError,
            AttributeError)


def _calling(fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except FAILURES as exc:
        raise _error(exc) from exc



@dataclass(frozen=True)
class Kind:
    """A watched kind: how to list it, in which namespace, with which selector."""
    name: str
    api: str  # core | batch | networking | coordination
    method: str  # list_namespaced_job, list_node, ...
    namespaced: bool
    managed_only: bool


KINDS = {
    "jobs": Kind("jobs", "batch", "list_namespaced_job", True, True),
    "pods": Kind("pods", "core", "list_namespaced_pod", True, True),
    "events": Kind("events", "core", "list_namespaced_event", True, False),
    "nodes": Kind("nodes", "core", "list_node", False, False),
    "allpods": Kind("allpods", "core", "list_pod_for_all_namespaces", False, False),
    "secrets": Kind("secrets", "core", "list_namespaced_secret", True, True),
    "services": Kind("services", "core", "list_namespaced_service", True, True),
    "ingresses": Kind("ingresses", "networking", "list_namespaced_ingress", True, True),
}


@dataclass
class Cluster:
    api: client.ApiClient
    settings: ClusterSettings
    timeout: tuple[float, float] = DEFAULT_TIMEOUT

    @classmethod
    def connect(cls, kubeconfig: str, settings: ClusterSettings, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> Cluster:
        """A client of its own (never the process-global default configuration). Transport
        retries are limited to one reconnect: a read that timed out is never repeated, so a
        hung API costs one timeout, not four."""
        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)
        configuration.retries = urllib3.Retry(total=1, connect=1, read=0, status=0, redirect=0, other=0)
        return cls(client.ApiClient(configuration), settings, tuple(timeout))

    def close(self) -> None:
        self.api.close()

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def networking(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    @property
    def coordination(self) -> client.CoordinationV1Api:
        return client.CoordinationV1Api(self.api)

    def _api_of(self, kind: Kind):
        return {"core": self.core, "batch": self.batch, "networking": self.networking}[kind.api]

    def _call(self, fn: Callable, *args, **kwargs):
        kwargs.setdefault("_request_timeout", self.timeout)
        return _calling(fn, *args, **kwargs)

    def _raw(self, fn: Callable, *args, **kwargs) -> dict:
        """Call without building the client's models (much faster for lists): the JSON body."""
        response = self._call(fn, *args, _preload_content=False, **kwargs)
        try:
            body = json.loads(response.data)
        except (ValueError, TypeError) as exc:
            raise _error(exc) from exc
        if not isinstance(body, dict):
            raise ClusterError("The cluster sent an answer the portal cannot read.", 0, retryable=True)
        return body

    # ---- a job's objects ------------------------------------------------------------------

    def create_job(self, req: JobRequest, token: str = "") -> str:
        """Create the Job, then its Secret/Service/Ingress owned by it. A retry of the same job is
        safe: an object that already exists counts as created. Returns the Job's uid."""
        ns = self.settings.namespace
        objects = build(req, self.settings, token)
        try:
            uid = self._raw(self.batch.create_namespaced_job, ns, objects["Job"])["metadata"]["uid"]
        except ClusterError as exc:
            if exc.status != 409:
                raise
            existing = self._raw(self.batch.read_namespaced_job, name_of(req.job_id), ns)
            uid = existing["metadata"]["uid"]
            if (existing.get("spec") or {}).get("suspend"):  # a preempted job runs again: resumed, not recreated
                self._raw(self.batch.patch_namespaced_job, name_of(req.job_id), ns, resume_patch(req.borrowed),
                          _content_type="application/merge-patch+json")
        except KeyError as exc:
            raise _error(exc) from exc
        creators = {"Secret": self.core.create_namespaced_secret, "Service": self.core.create_namespaced_service,
                    "Ingress": self.networking.create_namespaced_ingress}
        owned = [(creators[kind], owned_by(objects[kind], name_of(req.job_id), uid))
                 for kind in ("Secret", "Service", "Ingress") if kind in objects]
        job = {"metadata": {**objects["Job"]["metadata"], "uid": uid}}
        for port in req.ports:  # the ports its owner asked to open on the form (a Service and an Ingress each)
            service, ingress = port_objects(job, req.job_id, port, self.settings)
            owned += [(creators["Service"], service), (creators["Ingress"], ingress)]
        for create, obj in owned:
            try:
                self._raw(create, ns, obj)
            except ClusterError as exc:
                if exc.status != 409:
                    raise
        return uid

    def delete_job(self, job_id: int) -> None:
        """Delete the Job and, through ownerReferences, everything it owns; then the Secret,
        Service and Ingress by name too, in case a failed submit created them before they had
        their owner. Objects already gone are fine."""
        ns, name = self.settings.namespace, name_of(job_id)
        deletions = [(self.batch.delete_namespaced_job, {"propagation_policy": "Background"}),
                     (self.core.delete_namespaced_secret, {}), (self.core.delete_namespaced_service, {}),
                     (self.networking.delete_namespaced_ingress, {})]
        for delete, kwargs in deletions:
            try:
                self._raw(delete, name, ns, **kwargs)  # the answer must be the API's JSON, not just a 200
            except ClusterError as exc:
                if exc.status != 404:
                    raise

    def open_port(self, job_id: int, port: int) -> str:
        """Publish a running job's port behind the portal's sign-in (a Service and an Ingress owned
        by the Job; one that exists already counts). Returns the port's URL."""
        ns = self.settings.namespace
        job = self._raw(self.batch.read_namespaced_job, name_of(job_id), ns)
        service, ingress = port_objects(job, job_id, port, self.settings)
        for create, obj in ((self.core.create_namespaced_service, service),
                            (self.networking.create_namespaced_ingress, ingress)):
            try:
                self._raw(create, ns, obj)
            except ClusterError as exc:
                if exc.status != 409:
                    raise
        return self.port_url(job_id, port)

    def close_port(self, job_id: int, port: int) -> None:
        ns, name = self.settings.namespace, f"{name_of(job_id)}-p{port}"
        for delete in (self.networking.delete_namespaced_ingress, self.core.delete_namespaced_service):
            try:
                self._raw(delete, name, ns)
            except ClusterError as exc:
                if exc.status != 404:
                    raise

    def port_url(self, job_id: int, port: int) -> str:
        return published_url(self.settings, port_path(job_id, port))

    def job_objects(self, job_id: int) -> tuple[dict | None, list[dict]]:
        """The Job and its pods, as plain dicts (for status mapping)."""
        ns, name = self.settings.namespace, name_of(job_id)
        try:
            job = self._raw(self.batch.read_namespaced_job, name, ns)
        except ClusterError as exc:
            if exc.status != 404:
                raise
            job = None
        pods = self._raw(self.core.list_namespaced_pod, ns, label_selector=job_label_selector(job_id))
        return job, list(pods.get("items") or [])

    def jupyter_token(self, job_id: int) -> str:
        """The access token of a JupyterLab job, read from its Secret (the only place it is kept)."""
        secret = self._raw(self.core.read_namespaced_secret, name_of(job_id), self.settings.namespace)
        data = secret.get("data") or {}
        try:
            if "token" in data:
                return base64.b64decode(data["token"]).decode()
        except (ValueError, TypeError) as exc:
            raise _error(exc) from exc
        return (secret.get("stringData") or {}).get("token", "")

    def jupyter_url(self, job_id: int) -> str:
        """Where the job's JupyterLab is published: the ingress host (https) and its path."""
        return published_url(self.settings, f"{self.settings.jupyter_base_path.rstrip('/')}/{name_of(job_id)}/")

    def log(self, pod: str, tail_lines: int = 500) -> str:
        response = self._call(self.core.read_namespaced_pod_log, pod, self.settings.namespace, tail_lines=tail_lines,
                              _preload_content=False)
        return response.data.decode("utf-8", errors="replace")

    def follow_log(self, pod: str, tail_lines: int = 500, seconds: float = 120.0):
        """The log as it grows (chunks of bytes), until the container ends, `seconds` pass, or no
        byte comes for the read timeout of a follow (60 s, then it just ends: ask again)."""
        connect = self.timeout[0]
        response = self._call(self.core.read_namespaced_pod_log, pod, self.settings.namespace, follow=True,
                              tail_lines=tail_lines, _preload_content=False, _request_timeout=(connect, 60.0))
        deadline = time.monotonic() + seconds
        try:
            for chunk in response.stream(4096, decode_content=True):
                yield chunk
                if time.monotonic() > deadline:
                    return
        except FAILURES:
            return  # quiet for a minute, or the connection ended: the caller may ask again
        finally:
            response.release_conn()

    def exec_shell(self, pod: str, container: str = "main", command: tuple[str, ...] = SHELL):
        """An interactive shell in a pod's container (Kubernetes exec over a websocket, the
        channel protocol v5 or v4, through the official client's `stream`): the client's
        WSClient, or ClusterError; a hung API costs one timeout."""
        from kubernetes.stream import stream
        # `stream` swaps its API client's request function for the websocket one while it runs:
        # on the shared client, other threads' calls (the syncer's, other requests') would go
        # through it too. A client of its own for each exec.
        own = client.ApiClient(self.api.configuration)
        # The client opens the websocket without any timeout (its socket blocks for ever on a hung
        # API): it connects in a thread of its own, waited for at most the read timeout; a shell
        # that connects after the caller gave up is closed at once.
        outcome: dict = {}
        lock = threading.Lock()

        def connect() -> None:
            try:
                shell = _calling(stream, client.CoreV1Api(own).connect_get_namespaced_pod_exec, pod,
                                 self.settings.namespace, container=container, command=list(command), stdin=True,
                                 stdout=True, stderr=True, tty=True, _preload_content=False,
                                 _request_timeout=self.timeout)
                shell.sock.settimeout(max(self.timeout))  # reads and writes of the session: bounded too
            except ClusterError as exc:
                shell, outcome["error"] = None, exc
            finally:
                own.close()
            with lock:
                if outcome.get("gave_up") and shell is not None:
                    shell.close()
                outcome["shell"] = shell
        waiter = threading.Thread(target=connect, name="exec-connect", daemon=True)
        waiter.start()
        waiter.join(sum(self.timeout))
        with lock:
            if "shell" not in outcome:
                outcome["gave_up"] = True
                raise ClusterError("The cluster did not answer in time.", retryable=True)
        if outcome.get("error") is not None:
            raise outcome["error"]
        return outcome["shell"]

    # ---- lists and watches, for the syncer --------------------------------------------------

    def _list_args(self, kind: Kind) -> tuple[Callable, tuple, dict]:
        fn = getattr(self._api_of(kind), kind.method)
        args = (self.settings.namespace,) if kind.namespaced else ()
        kwargs = {"label_selector": f"app.kubernetes.io/managed-by={MANAGED_BY}"} if kind.managed_only else {}
        return fn, args, kwargs

    def list(self, kind: str) -> tuple[list[dict], str]:
        """(objects, resourceVersion) of a kind, as plain dicts."""
        fn, args, kwargs = self._list_args(KINDS[kind])
        body = self._raw(fn, *args, **kwargs)
        return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, kind: str, resource_version: str, timeout_seconds: int = 300) -> Iterator[dict]:
        """Events ({"type", "object"}) of a kind from a resourceVersion, as plain dicts, until the
        server ends the watch after `timeout_seconds`. BOOKMARK events carry only a new
        resourceVersion. Raises Gone when the version is too old, ClusterError otherwise."""
        fn, args, kwargs = self._list_args(KINDS[kind])
        response = self._call(fn, *args, watch=True, resource_version=resource_version, timeout_seconds=timeout_seconds,
                              allow_watch_bookmarks=True, _preload_content=False,
                              _request_timeout=(self.timeout[0], timeout_seconds + WATCH_READ_SLACK), **kwargs)
        try:
            for line in _lines(response):
                try:
                    event = json.loads(line)
                    obj = event["object"]
                    kind_of_event = event["type"]
                except (ValueError, KeyError, TypeError) as exc:
                    raise _error(exc) from exc
                if kind_of_event == "ERROR":
                    code = int(obj.get("code") or 500)
                    kind_cls = Gone if code == 410 else ClusterError
                    raise kind_cls(str(obj.get("message") or "watch error"), code, retryable=True,
                                   reason=str(obj.get("reason") or ""))
                yield {"type": kind_of_event, "object": obj}
        except FAILURES as exc:
            raise _error(exc) from exc
        finally:
            response.release_conn()

    def suspend_job(self, job_id: int) -> None:
        """Preempt a job: suspend its Job (the object and its spec stay; its pods are stopped with
        their grace period). A Job already gone is fine: there is nothing left to stop."""
        try:
            self._raw(self.batch.patch_namespaced_job, name_of(job_id), self.settings.namespace, suspend_patch(),
                      _content_type="application/merge-patch+json")
        except ClusterError as exc:
            if exc.status != 404:
                raise

    def set_job_class(self, job_id: int, borrowed: bool) -> None:
        """The class label on a Job (a borrowed job reclassified within its guarantee)."""
        self._raw(self.batch.patch_namespaced_job, name_of(job_id), self.settings.namespace, class_patch(borrowed),
                  _content_type="application/merge-patch+json")

    def set_time_limit(self, job_id: int, seconds: int) -> None:
        """Move a running Job's deadline (spec.activeDeadlineSeconds is mutable)."""
        self._raw(self.batch.patch_namespaced_job, name_of(job_id), self.settings.namespace,
                  {"spec": {"activeDeadlineSeconds": int(seconds)}}, _content_type="application/merge-patch+json")

    # ---- node administration ----------------------------------------------------------------

    def read_node(self, name: str) -> dict:
        return self._raw(self.core.read_node, name)

    def patch_node(self, name: str, patch: dict) -> dict:
        """A JSON merge patch of a Node (RFC 7386: null removes a key, lists are replaced). With
        metadata.resourceVersion in the patch the change applies only to that version (409 if the
        node changed meanwhile)."""
        return self._raw(self.core.patch_node, name, patch, _content_type="application/merge-patch+json")

    # ---- the syncer's Lease -----------------------------------------------------------------

    def read_lease(self, name: str) -> dict | None:
        try:
            return self._raw(self.coordination.read_namespaced_lease, name, self.settings.namespace)
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    def write_lease(self, name: str, spec: dict, resource_version: str = "") -> bool:
        """Create the Lease (no resourceVersion) or replace it (compare-and-swap on the version).
        False when another replica got there first (409)."""
        body = {"apiVersion": LEASE_API, "kind": "Lease", "metadata": {"name": name}, "spec": spec}
        ns = self.settings.namespace
        try:
            if resource_version:
                body["metadata"]["resourceVersion"] = resource_version
                self._raw(self.coordination.replace_namespaced_lease, name, ns, body)
            else:
                self._raw(self.coordination.create_namespaced_lease, ns, body)
            return True
        except ClusterError as exc:
            if exc.status == 409:
                return False
            raise
