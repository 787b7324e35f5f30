"""GPU metrics in the DCGM exporter's format (names and labels), so a real Prometheus can scrape
kubesim and the portal can read utilisation the way it will from dcgm-exporter.

Each GPU of each node is a series; GPUs held by a running pod carry namespace/pod/container.
Utilisation comes from the pod's kubesim.crater.io/gpu-util annotation: a number ("85"), a range
("40-90", a new value each scrape), or "idle" (0). Without it, training workloads are busy
(70-95 %) and notebooks and servers idle (0 %), which is what the idle-GPU policy looks for."""
from __future__ import annotations

import random
import zlib

A = "kubesim.crater.io/"
DRIVER = "550.54.15"
SERIES = [
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "gauge"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", "gauge"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "gauge"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "gauge"),
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "gauge"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "gauge"),
]


def _util(pod: dict | None, busy_default: bool) -> float:
    if pod is None:
        return 0.0
    spec = (pod["metadata"].get("annotations") or {}).get(A + "gpu-util")
    if spec is None:
        return random.uniform(70, 95) if busy_default else 0.0
    if spec == "idle":
        return 0.0
    if "-" in spec:
        low, high = (float(x) for x in spec.split("-", 1))
        return random.uniform(low, high)
    return float(spec)


def render(nodes: list[dict], allocations: dict, pods: dict, busy: dict) -> str:
    """nodes: Node objects; allocations: node -> {gpu index: (pod key, container)};
    pods: pod key -> Pod; busy: pod key -> whether its workload is a busy one by default."""
    samples = {name: [] for name, _h, _t in SERIES}
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        labels = node["metadata"].get("labels") or {}
        count = int(labels.get("nvidia.com/gpu.count", "0") or 0)
        if not count:
            continue
        host = node["metadata"]["name"]
        model = labels.get("nvidia.com/gpu.product", "").replace("-", " ")
        total = int(labels.get("nvidia.com/gpu.memory", "0") or 0)
        for index in range(count):
            uuid = f"GPU-{zlib.crc32(host.encode()):08x}-kubesim-{index:02d}"
            base = (f'gpu="{index}",UUID="{uuid}",pci_bus_id="00000000:{index + 16:02X}:00.0",device="nvidia{index}",'
                    f'modelName="{model}",Hostname="{host}",DCGM_FI_DRIVER_VERSION="{DRIVER}"')
            held = allocations.get(host, {}).get(index)
            pod = pods.get(held[0]) if held else None
            if pod is not None:
                base += f',container="{held[1]}",namespace="{pod["metadata"]["namespace"]}",pod="{pod["metadata"]["name"]}"'
            util = _util(pod, busy.get(held[0], False) if held else False)
            annotations = (pod["metadata"].get("annotations") or {}) if pod else {}
            used = float(annotations.get(A + "gpu-memory-use", (0.6 * total if util > 0 else 512) if pod else 0))
            used = min(used, total)
            samples["DCGM_FI_DEV_GPU_UTIL"].append((base, round(util)))
            samples["DCGM_FI_DEV_MEM_COPY_UTIL"].append((base, round(util * 0.6)))
            samples["DCGM_FI_DEV_FB_USED"].append((base, int(used)))
            samples["DCGM_FI_DEV_FB_FREE"].append((base, int(total - used)))
            samples["DCGM_FI_DEV_GPU_TEMP"].append((base, 34 + round(util * 0.4)))
            samples["DCGM_FI_DEV_POWER_USAGE"].append((base, round(60 + util * 3.4, 3)))
    out = []
    for name, help_text, kind in SERIES:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{{{labels}}} {value}" for labels, value in samples[name])
    return "\n".join(out) + "\n"
