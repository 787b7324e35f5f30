"""Kubernetes objects for a portal job, built from plain values (pure: no I/O, no config reads).

Every object is named `crater-<id>` and labelled as DESIGN.md says. Whatever a form posted, pods
never get privileged mode, host namespaces, host paths, host ports, added capabilities or a
service account token: the builders only ever emit the fields listed here.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..vocabulary import JOB_TYPES, JobType
from .labels import (CHECKPOINT_DIR_ENV, DISPLAY_NAME, GPU_PRODUCT_LABEL, PREEMPTIBLE_ENV, RESERVED_FOR, job_class,
                     job_labels, job_selector, object_name)
JUPYTER_PORT = 8888
RDZV_PORT = 29500


@dataclass(frozen=True)
class Mount:
    """A subPath of the shared RWX claim mounted at `path` (the user's home, the account's share)."""
    sub_path: str
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class JobRequest:
    job_id: int
    job_type: str  # jupyter | batch | distributed
    username: str
    account: str
    display_name: str
    image: str
    command: tuple[str, ...] | str = ()  # argv, or shell text run with /bin/sh -c
    env: tuple[tuple[str, str], ...] = ()
    gpu_model: str = ""
    gpus: int = 0  # per worker
    cpu: str = "2"
    memory: str = "8Gi"
    shm: str = ""  # size of /dev/shm (a memory emptyDir); empty = none
    working_dir: str = ""
    time_limit_seconds: int = 0  # activeDeadlineSeconds; 0 = none
    workers: int = 1  # distributed: the number of nodes/pods
    mounts: tuple[Mount, ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()  # extra pod annotations (e.g. simulation hints)
    borrowed: bool = False  # runs beyond its account's guarantee: may be preempted
    grace_seconds: int | None = None  # terminationGracePeriodSeconds (None: the cluster's default)
    checkpoint_dir: str = ""  # told to the containers (CRATER_CHECKPOINT_DIR); "" = none
    ports: tuple[int, ...] = ()  # published behind the portal's sign-in (port_objects), owned by the Job


@dataclass(frozen=True)
class ClusterSettings:
    namespace: str = "crater-jobs"
    gpu_resource: str = "nvidia.com/gpu"
    shared_claim: str = ""  # an RWX PersistentVolumeClaim for homes and shares; empty = no mounts
    ingress_class: str = ""
    ingress_host: str = ""
    jupyter_base_path: str = "/jupyter"  # JupyterLab is served under <base>/crater-<id>/
    ingress_url: str = ""  # where links to notebooks point (scheme://host:port); "" = https://ingress_host
    auth_url: str = ""  # the portal's external-auth endpoint the ingress controller calls ("" = none)
    auth_signin: str = "/login"  # where the ingress sends a browser that is not signed in
    ttl_seconds_after_finished: int = 3600
    backoff_limit: int = 0


def name_of(job_id: int) -> str:
    return object_name(job_id)


def labels_of(req: JobRequest) -> dict[str, str]:
    return job_labels(req.job_id, req.username, req.account, req.job_type, job_class(req.borrowed))


def jupyter_path(req: JobRequest, settings: ClusterSettings) -> str:
    return f"{settings.jupyter_base_path.rstrip('/')}/{name_of(req.job_id)}/"


def build(req: JobRequest, settings: ClusterSettings, token_secret: str = "") -> dict[str, dict]:
    """All objects of a job by kind: "Job" always; "Secret", "Service", "Ingress" as the type needs.
    The Job goes first; the others get an ownerReference to it once its uid is known
    (`owned_by`)."""
    if req.job_type not in JOB_TYPES:
        raise ValueError(f"unknown job type {req.job_type!r}")
    objects = {"Job": _job(req, settings)}
    if req.job_type == JobType.JUPYTER:
        objects["Secret"] = _secret(req, settings, token_secret)
        objects["Service"] = _service(req, settings, headless=False)
        objects["Ingress"] = _ingress(req, settings)
    elif req.job_type == JobType.DISTRIBUTED:
        objects["Service"] = _service(req, settings, headless=True)
    return objects


def owned_by(obj: dict, job_name: str, job_uid: str) -> dict:
    return {**obj, "metadata": {**obj["metadata"], "ownerReferences": [{
        "apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid,
        "controller": True, "blockOwnerDeletion": True}]}}


def _meta(req: JobRequest, settings: ClusterSettings) -> dict:
    return {"name": name_of(req.job_id), "namespace": settings.namespace, "labels": labels_of(req),
            "annotations": {DISPLAY_NAME: req.display_name}}


def _container(req: JobRequest, settings: ClusterSettings) -> dict:
    resources = {"requests": {"cpu": req.cpu, "memory": req.memory}, "limits": {"memory": req.memory}}
    if req.gpus:
        resources["limits"][settings.gpu_resource] = str(req.gpus)
        resources["requests"][settings.gpu_resource] = str(req.gpus)
    container = {
        "name": "main", "image": req.image, "resources": resources,
        "env": [{"name": k, "value": v} for k, v in req.env] + _preemption_env(req),
        "securityContext": {"privileged": False, "allowPrivilegeEscalation": False},
    }
    command = _command(req, settings)
    if command:
        container["command"] = command
    if req.working_dir:
        container["workingDir"] = req.working_dir
    mounts = [{"name": "shared", "mountPath": m.path, "subPath": m.sub_path, "readOnly": m.read_only}
              for m in req.mounts if settings.shared_claim]
    if req.shm:
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _preemption_env(req: JobRequest) -> list[dict]:
    """Where to write a checkpoint (a preempted job gets SIGTERM, then its grace period) and
    whether the job may be preempted."""
    env = [{"name": PREEMPTIBLE_ENV, "value": "true" if req.borrowed else "false"}]
    if req.checkpoint_dir:
        env.append({"name": CHECKPOINT_DIR_ENV, "value": req.checkpoint_dir})
    return env


def _command(req: JobRequest, settings: ClusterSettings) -> list[str]:
    if req.job_type == JobType.JUPYTER:
        return ["start-notebook.py", f"--ServerApp.base_url={jupyter_path(req, settings)}", "--ServerApp.ip=0.0.0.0",
                f"--ServerApp.port={JUPYTER_PORT}", "--ServerApp.allow_origin=*"]
    if isinstance(req.command, str):
        return ["/bin/sh", "-c", req.command] if req.command.strip() else []
    return list(req.command)


def _pod_spec(req: JobRequest, settings: ClusterSettings) -> dict:
    container = _container(req, settings)
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "containers": [container]}
    if req.gpu_model:
        spec["nodeSelector"] = {GPU_PRODUCT_LABEL: req.gpu_model}
    if req.grace_seconds is not None:
        spec["terminationGracePeriodSeconds"] = int(req.grace_seconds)
    # Nodes an admin reserved for this account carry a taint only its jobs tolerate.
    spec["tolerations"] = [{"key": RESERVED_FOR, "operator": "Equal", "value": req.account, "effect": "NoSchedule"}]
    volumes = []
    if settings.shared_claim and req.mounts:
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": settings.shared_claim}})
    if req.shm:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": req.shm}})
    if volumes:
        spec["volumes"] = volumes
    if req.job_type == JobType.JUPYTER:
        container["ports"] = [{"name": "http", "containerPort": JUPYTER_PORT}]
        container["env"].append({"name": "JUPYTER_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": name_of(req.job_id), "key": "token"}}})
    if req.job_type == JobType.DISTRIBUTED:
        name = name_of(req.job_id)
        spec["subdomain"] = name
        container["ports"] = [{"name": "rdzv", "containerPort": RDZV_PORT}]
        container["env"] += [
            {"name": "MASTER_ADDR", "value": f"{name}-0.{name}.{settings.namespace}.svc"},
            {"name": "MASTER_PORT", "value": str(RDZV_PORT)},
            {"name": "WORLD_SIZE", "value": str(req.workers)},
            {"name": "NNODES", "value": str(req.workers)},
            {"name": "NPROC_PER_NODE", "value": str(max(1, req.gpus))},
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
        ]
    return spec


def _job(req: JobRequest, settings: ClusterSettings) -> dict:
    meta = _meta(req, settings)
    template_meta = {"labels": labels_of(req), "annotations": {DISPLAY_NAME: req.display_name,
                                                              **dict(req.annotations)}}
    spec = {"backoffLimit": settings.backoff_limit, "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "template": {"metadata": template_meta, "spec": _pod_spec(req, settings)}}
    if req.time_limit_seconds:
        spec["activeDeadlineSeconds"] = req.time_limit_seconds
    if req.job_type == JobType.DISTRIBUTED:
        spec.update({"completionMode": "Indexed", "completions": req.workers, "parallelism": req.workers})
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def _secret(req: JobRequest, settings: ClusterSettings, token: str) -> dict:
    if not token:
        raise ValueError("a JupyterLab job needs its access token")
    return {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(req, settings), "type": "Opaque",
            "stringData": {"token": token}}


def _service(req: JobRequest, settings: ClusterSettings, headless: bool) -> dict:
    selector = job_selector(req.job_id)
    if headless:
        spec = {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True,
                "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT}]}
    else:
        spec = {"selector": selector, "ports": [{"name": "http", "port": JUPYTER_PORT, "targetPort": JUPYTER_PORT}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(req, settings), "spec": spec}


def _ingress(req: JobRequest, settings: ClusterSettings) -> dict:
    rule = {"http": {"paths": [{"path": jupyter_path(req, settings), "pathType": "Prefix", "backend": {
        "service": {"name": name_of(req.job_id), "port": {"number": JUPYTER_PORT}}}}]}}
    if settings.ingress_host:
        rule["host"] = settings.ingress_host
    spec = {"rules": [rule]}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    meta = _meta(req, settings)
    if settings.auth_url:  # ingress-nginx's external auth: the portal says who may pass, and hands the token on
        meta["annotations"] = {**meta["annotations"], AUTH_URL: settings.auth_url, AUTH_SIGNIN: settings.auth_signin,
                               AUTH_RESPONSE_HEADERS: "Authorization"}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": spec}


def published_url(settings: ClusterSettings, path: str) -> str:
    """Where a path behind the ingress (a notebook, a job's port) answers: CRATER_INGRESS_URL, else
    https://ingress_host, else the bare path."""
    if settings.ingress_url:
        return settings.ingress_url.rstrip("/") + path
    return f"https://{settings.ingress_host}{path}" if settings.ingress_host else path


def port_path(job_id: int, port: int) -> str:
    return f"/ports/{name_of(job_id)}-{port}/"


def port_objects(job: dict, job_id: int, port: int, settings: ClusterSettings) -> tuple[dict, dict]:
    """The Service and the Ingress that publish a job's port at /ports/crater-<id>-<port>/ behind
    the portal's sign-in (the same external auth as notebooks), owned by the Job: they go with it."""
    name = f"{name_of(job_id)}-p{port}"
    labels = dict((job.get("metadata") or {}).get("labels") or {})
    meta = {"name": name, "namespace": settings.namespace, "labels": labels}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": dict(meta),
               "spec": {"selector": job_selector(job_id), "ports": [{"name": "http", "port": port, "targetPort": port}]}}
    rule = {"http": {"paths": [{"path": port_path(job_id, port), "pathType": "Prefix", "backend": {
        "service": {"name": name, "port": {"number": port}}}}]}}
    if settings.ingress_host:
        rule["host"] = settings.ingress_host
    spec = {"rules": [rule]}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    ingress_meta = dict(meta)
    if settings.auth_url:
        ingress_meta["annotations"] = {AUTH_URL: settings.auth_url, AUTH_SIGNIN: settings.auth_signin}
    ingress = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": ingress_meta, "spec": spec}
    uid = (job.get("metadata") or {}).get("uid", "")
    return owned_by(service, name_of(job_id), uid), owned_by(ingress, name_of(job_id), uid)


AUTH_URL = "nginx.ingress.kubernetes.io/auth-url"
AUTH_SIGNIN = "nginx.ingress.kubernetes.io/auth-signin"
AUTH_RESPONSE_HEADERS = "nginx.ingress.kubernetes.io/auth-response-headers"


__all__ = ["ClusterSettings", "JobRequest", "Mount", "build", "name_of", "labels_of", "owned_by"]
