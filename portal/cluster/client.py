"""The portal's Kubernetes client: set-up from a kubeconfig (or in-cluster), creating and deleting
a job's objects idempotently, reading logs. API errors become ClusterError with a message a person
can read and whether retrying may help. The only module that talks to the cluster."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .manifests import ClusterSettings, JobRequest, build, name_of, owned_by


class ClusterError(Exception):
    def __init__(self, message: str, status: int = 0, retryable: bool = False):
        super().__init__(message)
        self.message, self.status, self.retryable = message, status, retryable


def _error(exc: Exception) -> ClusterError:
    if isinstance(exc, ApiException):
        try:
            body = json.loads(exc.body or "{}")
        except ValueError:
            body = {}
        message = body.get("message") or exc.reason or "Kubernetes API error"
        return ClusterError(message, exc.status or 0, retryable=(exc.status or 0) >= 500 or exc.status == 429)
    return ClusterError(f"The cluster cannot be reached: {exc}", 0, retryable=True)


@dataclass
class Cluster:
    api: client.ApiClient
    settings: ClusterSettings

    @classmethod
    def connect(cls, kubeconfig: str, settings: ClusterSettings) -> "Cluster":
        """A client of its own (never the process-global default configuration)."""
        if kubeconfig:
            api = config.new_client_from_config(config_file=kubeconfig)
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api = client.ApiClient(configuration)
        return cls(api, settings)

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

    def create_job(self, req: JobRequest, token: str = "") -> str:
        """Create the Job, then its Secret/Service/Ingress owned by it. A retry of the same job is
        safe: an object that already exists counts as created. Returns the Job's uid."""
        ns = self.settings.namespace
        objects = build(req, self.settings, token)
        try:
            try:
                job = self.batch.create_namespaced_job(ns, objects["Job"])
                uid = job.metadata.uid
            except ApiException as exc:
                if exc.status != 409:
                    raise
                uid = self.batch.read_namespaced_job(name_of(req.job_id), ns).metadata.uid
            creators = {"Secret": self.core.create_namespaced_secret, "Service": self.core.create_namespaced_service,
                        "Ingress": self.networking.create_namespaced_ingress}
            for kind in ("Secret", "Service", "Ingress"):
                if kind in objects:
                    try:
                        creators[kind](ns, owned_by(objects[kind], name_of(req.job_id), uid))
                    except ApiException as exc:
                        if exc.status != 409:
                            raise
            return uid
        except (ApiException, OSError) as exc:
            raise _error(exc) from exc

    def delete_job(self, job_id: int) -> None:
        """Delete the Job and, through ownerReferences, everything it owns; then the Secret,
        Service and Ingress by name too, in case a failed submit created them before they had
        their owner. Objects already gone are fine."""
        ns, name = self.settings.namespace, name_of(job_id)
        deletions = [lambda: self.batch.delete_namespaced_job(name, ns, propagation_policy="Background"),
                     lambda: self.core.delete_namespaced_secret(name, ns),
                     lambda: self.core.delete_namespaced_service(name, ns),
                     lambda: self.networking.delete_namespaced_ingress(name, ns)]
        for delete in deletions:
            try:
                delete()
            except ApiException as exc:
                if exc.status != 404:
                    raise _error(exc) from exc
            except OSError as exc:
                raise _error(exc) from exc

    def job_objects(self, job_id: int) -> tuple[dict | None, list[dict]]:
        """The Job and its pods, as plain dicts (for status mapping)."""
        ns, name = self.settings.namespace, name_of(job_id)
        sanitize = self.api.sanitize_for_serialization
        try:
            try:
                job = sanitize(self.batch.read_namespaced_job(name, ns))
            except ApiException as exc:
                if exc.status != 404:
                    raise
                job = None
            pods = self.core.list_namespaced_pod(ns, label_selector=f"crater.io/job-id={job_id}").items
            return job, [sanitize(p) for p in pods]
        except (ApiException, OSError) as exc:
            raise _error(exc) from exc

    def jupyter_token(self, job_id: int) -> str:
        """The access token of a JupyterLab job, read from its Secret (the only place it is kept)."""
        try:
            secret = self.core.read_namespaced_secret(name_of(job_id), self.settings.namespace)
        except (ApiException, OSError) as exc:
            raise _error(exc) from exc
        data = secret.data or {}
        if "token" in data:
            return base64.b64decode(data["token"]).decode()
        return (secret.string_data or {}).get("token", "")

    def jupyter_url(self, job_id: int) -> str:
        """Where the job's JupyterLab is published: the ingress host (https) and its path."""
        path = f"{self.settings.jupyter_base_path.rstrip('/')}/{name_of(job_id)}/"
        return f"https://{self.settings.ingress_host}{path}" if self.settings.ingress_host else path

    def log(self, pod: str, tail_lines: int = 500) -> str:
        try:
            return self.core.read_namespaced_pod_log(pod, self.settings.namespace, tail_lines=tail_lines)
        except (ApiException, OSError) as exc:
            raise _error(exc) from exc
