"""The cluster's words for Crater's objects, in one place: object names (`crater-<id>`), the labels
on every object and pod, the node annotations, taint and label Crater sets, and the patches that
set them. Services say what they want (cordon with a reason, reserve for an account); this module
knows how the cluster spells it. Pure: no I/O, no `kubernetes` import."""
from __future__ import annotations

MANAGED_BY = "crater-portal"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
JOB_ID_LABEL = "crater.io/job-id"
USER_LABEL = "crater.io/user"
ACCOUNT_LABEL = "crater.io/account"
TYPE_LABEL = "crater.io/type"
CLASS_LABEL = "crater.io/class"  # guaranteed (within the account's quota) or borrowed (beyond it, preemptible)
CHECKPOINT_DIR_ENV = "CRATER_CHECKPOINT_DIR"  # where a job writes checkpoints it can resume from after a preemption
PREEMPTIBLE_ENV = "CRATER_PREEMPTIBLE"  # "true" in a borrowed job's containers
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"  # GPU feature discovery's model label
CORDON_REASON = "crater.io/cordon-reason"  # node annotation: why it is cordoned, shown to everyone
CORDONED_BY = "crater.io/cordoned-by"
RESERVED_FOR = "crater.io/reserved-for"  # node taint key (and label): the account it is reserved for
RESERVE_REASON = "crater.io/reserve-reason"  # node annotation: why it is reserved, shown to everyone
NAME_PREFIX = "crater-"
DISPLAY_NAME = "crater.io/display-name"  # annotation: the job's name as its owner wrote it (may be Chinese)


def object_name(job_id: int) -> str:
    """The name of a job's Job, Service, Ingress and Secret (deterministic: a retried create is safe)."""
    return f"{NAME_PREFIX}{job_id}"


def job_labels(job_id: int, username: str, account: str, job_type: str, job_class: str = "guaranteed") -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, JOB_ID_LABEL: str(job_id), USER_LABEL: username, ACCOUNT_LABEL: account,
            TYPE_LABEL: job_type, CLASS_LABEL: job_class}


def job_class(borrowed: bool) -> str:
    return "borrowed" if borrowed else "guaranteed"


# ---- job patches ---------------------------------------------------------------------------------

def suspend_patch() -> dict:
    """Preempt: the Job stays (its spec too); its pods get SIGTERM and their grace period."""
    return {"spec": {"suspend": True}}


def resume_patch(borrowed: bool) -> dict:
    """Run a preempted Job again (new pods from the same template), with its class now."""
    return {"spec": {"suspend": False}, "metadata": {"labels": {CLASS_LABEL: job_class(borrowed)}}}


def class_patch(borrowed: bool) -> dict:
    return {"metadata": {"labels": {CLASS_LABEL: job_class(borrowed)}}}


def job_selector(job_id: int) -> dict[str, str]:
    return {JOB_ID_LABEL: str(job_id), MANAGED_BY_LABEL: MANAGED_BY}


def job_label_selector(job_id: int) -> str:
    return f"{JOB_ID_LABEL}={job_id}"


def job_id_of(obj: dict) -> int:
    """The job a managed object (or pod) belongs to, from its label; 0: none."""
    try:
        return int(obj["metadata"]["labels"][JOB_ID_LABEL])
    except (KeyError, TypeError, ValueError):
        return 0


def job_id_of_name(name: str) -> int:
    """The job an object named crater-<id> (or a pod of it, crater-<id>-...) belongs to; 0: none."""
    if not name.startswith(NAME_PREFIX):
        return 0
    head = name[len(NAME_PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else 0


# ---- node patches -------------------------------------------------------------------------------

def cordon_patch(reason: str, by: str) -> dict:
    return {"spec": {"unschedulable": True}, "metadata": {"annotations": {CORDON_REASON: reason, CORDONED_BY: by}}}


def uncordon_patch() -> dict:
    return {"spec": {"unschedulable": None}, "metadata": {"annotations": {CORDON_REASON: None, CORDONED_BY: None}}}


def taints_without_reservation(node: dict) -> list[dict]:
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != RESERVED_FOR]


def reserve_patch(node: dict, account: str, reason: str = "") -> tuple[dict, list[dict]]:
    """A NoSchedule taint only `account`'s jobs tolerate (and a label), replacing any other
    reservation; guarded by the node's resourceVersion. (the patch, the node's taints after it)"""
    taints = taints_without_reservation(node) + [{"key": RESERVED_FOR, "value": account, "effect": "NoSchedule"}]
    return {"spec": {"taints": taints}, "metadata": {"resourceVersion": node["metadata"].get("resourceVersion"),
                                                     "labels": {RESERVED_FOR: account},
                                                     "annotations": {RESERVE_REASON: reason or None}}}, taints


def unreserve_patch(node: dict) -> tuple[dict, list[dict]]:
    taints = taints_without_reservation(node)
    return {"spec": {"taints": taints or None}, "metadata": {"resourceVersion": node["metadata"].get("resourceVersion"),
                                                             "labels": {RESERVED_FOR: None},
                                                             "annotations": {RESERVE_REASON: None}}}, taints


def label_patch(key: str, value: str | None) -> dict:
    """Set a node label (None: remove it)."""
    return {"metadata": {"labels": {key: value}}}


def reserved_for(taints: list[dict]) -> str:
    """The account a node's taints reserve it for ("" if none)."""
    return next((str(t.get("value") or "")[:64] for t in taints if t.get("key") == RESERVED_FOR), "")
