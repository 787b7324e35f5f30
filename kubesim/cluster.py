"""Cluster definitions: node pools (count, GPU model and count, CPU, memory, labels, taints) read
from YAML, turned into Node objects the way a kubelet with the NVIDIA device plugin and GPU
feature discovery would register them."""
from __future__ import annotations

from pathlib import Path

import yaml

DEMO_CLUSTER = {
    "namespaces": ["crater-jobs"],
    "nodePools": [
        {"name": "a100", "count": 2, "cpu": 128, "memory": "1024Gi",
         "gpu": {"model": "NVIDIA-A100-SXM4-80GB", "count": 8, "memoryMiB": 81920}},
        {"name": "rtx4090", "count": 2, "cpu": 64, "memory": "256Gi",
         "gpu": {"model": "NVIDIA-GeForce-RTX-4090", "count": 4, "memoryMiB": 24564}},
        {"name": "cpu", "count": 2, "cpu": 32, "memory": "128Gi"},
    ],
}

GPU_RESOURCE = "nvidia.com/gpu"


def load(source) -> dict:
    """A cluster definition from a path, a YAML string, a dict, or None (the demo cluster)."""
    if source is None:
        return DEMO_CLUSTER
    if isinstance(source, dict):
        return source
    path = Path(source)
    if path.exists():
        return yaml.safe_load(path.read_text())
    return yaml.safe_load(source)


def nodes(definition: dict) -> list[dict]:
    result = []
    index = 0
    for pool in definition.get("nodePools", []):
        for n in range(int(pool.get("count", 1))):
            result.append(_node(pool, n, index))
            index += 1
    return result


def _node(pool: dict, n: int, index: int) -> dict:
    name = f"{pool['name']}-{n}"
    gpu = pool.get("gpu") or {}
    labels = {
        "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": pool["name"], "crater.io/node-pool": pool["name"],
    }
    capacity = {"cpu": str(pool.get("cpu", 8)), "memory": str(pool.get("memory", "32Gi")), "pods": str(pool.get("maxPods", 110)),
                "ephemeral-storage": str(pool.get("ephemeralStorage", "1Ti"))}
    if gpu:
        labels.update({"nvidia.com/gpu.product": gpu["model"], "nvidia.com/gpu.count": str(gpu["count"]),
                       "nvidia.com/gpu.memory": str(gpu.get("memoryMiB", 0)), "nvidia.com/gpu.present": "true"})
        capacity[GPU_RESOURCE] = str(gpu["count"])
    labels.update(pool.get("labels") or {})
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "capacity": capacity, "allocatable": dict(capacity),
            "conditions": ready_conditions(True),
            "addresses": [{"type": "InternalIP", "address": f"10.0.{index // 250}.{index % 250 + 1}"},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-kubesim", "kubeProxyVersion": "v1.32.0-kubesim",
                         "containerRuntimeVersion": "containerd://1.7.0-kubesim", "osImage": "Ubuntu 22.04 (kubesim)",
                         "kernelVersion": "6.1.0", "operatingSystem": "linux", "architecture": "amd64",
                         "machineID": f"kubesim-{index}", "systemUUID": f"kubesim-{index}", "bootID": f"kubesim-{index}"},
        },
    }
    if pool.get("taints"):
        node["spec"]["taints"] = [dict(t) for t in pool["taints"]]
    return node


def ready_conditions(ready: bool, now: str = "2026-01-01T00:00:00Z") -> list[dict]:
    ok = [("MemoryPressure", "KubeletHasSufficientMemory"), ("DiskPressure", "KubeletHasNoDiskPressure"),
          ("PIDPressure", "KubeletHasSufficientPID")]
    conditions = [{"type": t, "status": "False", "reason": r, "message": "kubesim", "lastHeartbeatTime": now,
                   "lastTransitionTime": now} for t, r in ok]
    conditions.append({"type": "Ready", "status": "True" if ready else "Unknown",
                       "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                       "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status.",
                       "lastHeartbeatTime": now, "lastTransitionTime": now})
    return conditions
