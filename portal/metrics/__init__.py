"""GPU metrics: the only code that talks to Prometheus (its HTTP API: instant and range queries,
with a timeout on every call). It reads the series the NVIDIA DCGM exporter publishes (kubesim
serves the same names and labels), and turns answers into plain data: GPU devices with the pod
that holds them, chart series aligned for the browser, and the GPU summary of a job (mean and peak
utilisation, peak memory, GPU-seconds used and idle per day). Whatever goes wrong becomes
`MetricsError` with words a person can read; callers show "no metrics" and carry on."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

import requests

UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
# The DCGM exporter's labels (a Prometheus that does not honour the exporter's labels renames
# namespace/pod to exported_namespace/exported_pod: set CRATER_DCGM_POD_LABELS=exported).
NODE, GPU, UUID, MODEL = "Hostname", "gpu", "UUID", "modelName"
MAX_POINTS = 10_000  # per series in one range query (Prometheus refuses more than 11,000)
POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class MetricsError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class MetricsSettings:
    url: str = ""
    timeout: float = 5.0
    step: float = 15.0  # the exporter's scrape interval: the finest resolution worth asking for
    idle_percent: float = 0.0
    pod_label: str = "pod"
    namespace_label: str = "namespace"

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    @classmethod
    def from_config(cls, config) -> "MetricsSettings":
        exported = config.get("DCGM_POD_LABELS", "") == "exported"
        return cls(url=(config.get("PROMETHEUS_URL") or "").rstrip("/"), timeout=float(config.get("PROMETHEUS_TIMEOUT", 5.0)),
                   step=float(config.get("PROMETHEUS_STEP", 15.0)), idle_percent=float(config.get("GPU_IDLE_PERCENT", 0)),
                   pod_label="exported_pod" if exported else "pod",
                   namespace_label="exported_namespace" if exported else "namespace")


class Prometheus:
    def __init__(self, settings: MetricsSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()

    def _get(self, path: str, params: dict) -> dict:
        if not self.settings.enabled:
            raise MetricsError("Prometheus is not configured (CRATER_PROMETHEUS_URL).")
        timeout = self.settings.timeout
        try:
            answer = self.session.get(self.settings.url + path, params=params, timeout=(min(3.0, timeout), timeout))
        except requests.Timeout:
            raise MetricsError(f"Prometheus did not answer within {timeout:g} s.") from None
        except requests.ConnectionError:
            raise MetricsError("Prometheus cannot be reached (connection refused or reset).") from None
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus could not be asked ({type(exc).__name__}).") from None
        try:
            body = answer.json()
        except ValueError:
            raise MetricsError(f"Prometheus answered {answer.status_code} with something that is not its JSON.") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error", "") if isinstance(body, dict) else ""
            raise MetricsError(f"Prometheus refused the query ({answer.status_code}): {str(error)[:200]}")
        return body.get("data") or {}

    def instant(self, query: str, at: float | None = None) -> list[tuple[dict, float]]:
        params = {"query": query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data.get("resultType") != "vector":
            raise MetricsError("Prometheus answered a query with an unexpected result type.")
        return [(r.get("metric") or {}, _number(r["value"][1])) for r in data.get("result") or []]

    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step:g}"})
        if data.get("resultType") != "matrix":
            raise MetricsError("Prometheus answered a range query with an unexpected result type.")
        return [(r.get("metric") or {}, [(float(t), _number(v)) for t, v in r.get("values") or []])
                for r in data.get("result") or []]


def _number(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def quote(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def pods_selector(settings: MetricsSettings, namespace: str, pods: list[str]) -> str:
    """{namespace="...",pod=~"a|b"}: only DNS-1123 names (anything else is not a pod of ours)."""
    names = sorted({p for p in pods if POD_NAME.match(p or "")})
    if not names:
        raise MetricsError("The job has no pods to ask about.")
    pattern = "|".join(n.replace(".", "\\\\.") for n in names)
    return f'{{{settings.namespace_label}={quote(namespace)},{settings.pod_label}=~"{pattern}"}}'


def step_for(settings: MetricsSettings, start: float, end: float) -> float:
    """The scrape interval, or coarser where the span would need more points than one answer holds."""
    return max(settings.step, math.ceil(max(0.0, end - start) / MAX_POINTS))


def epoch(moment: datetime) -> float:
    """A naive UTC datetime (as the database keeps them) as seconds since the epoch."""
    return moment.replace(tzinfo=timezone.utc).timestamp()


# ---- GPU devices (the syncer's sampling pass) --------------------------------------------------

@dataclass
class Device:
    node: str
    index: int
    uuid: str = ""
    model: str = ""
    util: float | None = None
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    namespace: str = ""
    pod: str = ""


def gpu_devices(prom: Prometheus) -> list[Device]:
    """Every GPU the exporters report right now, with its utilisation, memory and holder."""
    s = prom.settings
    found: dict[tuple[str, int], Device] = {}
    free: dict[tuple[str, int], float] = {}
    for labels, value in prom.instant(f'{{__name__=~"{UTIL}|{FB_USED}|{FB_FREE}"}}'):
        try:
            key = (labels[NODE], int(labels[GPU]))
        except (KeyError, ValueError):
            continue
        device = found.setdefault(key, Device(node=key[0], index=key[1]))
        device.uuid, device.model = labels.get(UUID, device.uuid), labels.get(MODEL, device.model)
        device.namespace = labels.get(s.namespace_label, device.namespace)
        device.pod = labels.get(s.pod_label, device.pod)
        if math.isnan(value):
            continue
        name = labels.get("__name__")
        if name == UTIL:
            device.util = value
        elif name == FB_USED:
            device.memory_used_mib = int(value)
        elif name == FB_FREE:
            free[key] = value
    for key, value in free.items():
        device = found[key]
        device.memory_total_mib = int(value + (device.memory_used_mib or 0))
    return sorted(found.values(), key=lambda d: (d.node, d.index))


# ---- series for charts -------------------------------------------------------------------------

@dataclass
class Series:
    label: str
    points: list[tuple[float, float]] = field(default_factory=list)


def _series(answer, label_of) -> list[Series]:
    out = [Series(label_of(labels), [(t, v) for t, v in points if not math.isnan(v)]) for labels, points in answer]
    return sorted(out, key=lambda s: s.label)


def _gpu_label(settings: MetricsSettings, with_pod: bool):
    def label(labels: dict) -> str:
        text = f"GPU {labels.get(GPU, '?')}"
        if with_pod and labels.get(settings.pod_label):
            text = f"{labels[settings.pod_label]} · {text}"
        return text
    return label


def job_series(prom: Prometheus, namespace: str, pods: list[str], start: float, end: float, step: float) -> dict[str, list[Series]]:
    """Utilisation (%) and memory used (MiB) of each GPU of the job's pods (labelled by pod when
    there are several, as for distributed jobs)."""
    selector = pods_selector(prom.settings, namespace, pods)
    label = _gpu_label(prom.settings, with_pod=len(pods) > 1)
    return {"util": _series(prom.range(UTIL + selector, start, end, step), label),
            "memory": _series(prom.range(FB_USED + selector, start, end, step), label)}


def node_series(prom: Prometheus, node: str, start: float, end: float, step: float) -> dict[str, list[Series]]:
    selector = f"{{{NODE}={quote(node)}}}"
    label = _gpu_label(prom.settings, with_pod=False)
    return {"util": _series(prom.range(UTIL + selector, start, end, step), label),
            "memory": _series(prom.range(FB_USED + selector, start, end, step), label)}


def cluster_series(prom: Prometheus, start: float, end: float, step: float) -> dict[str, list[Series]]:
    """GPUs in the cluster, GPUs held by a pod, and the mean utilisation of all GPUs."""
    pod = prom.settings.pod_label
    counts = [Series("total", _clean(prom.range(f"count({UTIL})", start, end, step))),
              Series("in use", _clean(prom.range(f'count({UTIL}{{{pod}!=""}})', start, end, step)))]
    return {"gpus": counts, "util": [Series("mean", _clean(prom.range(f"avg({UTIL})", start, end, step)))]}


def _clean(answer) -> list[tuple[float, float]]:
    return [(t, v) for _labels, points in answer[:1] for t, v in points if not math.isnan(v)]


def chart(series: list[Series], start: float, end: float, step: float) -> dict:
    """uPlot's shape: one x axis (seconds) and a column of values per series (None where missing)."""
    first = math.ceil(start / step) * step
    xs = []
    t = first
    while t <= end + 1e-6 and len(xs) <= MAX_POINTS:
        xs.append(round(t, 3))
        t += step
    index = {x: i for i, x in enumerate(xs)}
    columns = []
    for s in series:
        values: list[float | None] = [None] * len(xs)
        for when, value in s.points:
            i = index.get(round(when, 3))
            if i is not None:
                values[i] = round(value, 2)
        columns.append({"label": s.label, "values": values})
    return {"x": xs, "series": columns}


# ---- a job's GPU summary -----------------------------------------------------------------------

@dataclass
class Summary:
    util_mean: float | None = None
    util_peak: float | None = None
    memory_peak_mib: int | None = None
    used_by_day: dict[date, float] = field(default_factory=dict)  # GPU-seconds
    idle_by_day: dict[date, float] = field(default_factory=dict)
    measured_by_day: dict[date, float] = field(default_factory=dict)  # GPU-seconds with a sample

    @property
    def has_metrics(self) -> bool:
        return self.util_mean is not None


def summarize(util: list[Series], memory: list[Series], step: float, idle_percent: float) -> Summary:
    """Pure: every utilisation sample stands for `step` seconds of one GPU; a sample at or below
    `idle_percent` is idle time."""
    values = [v for s in util for _t, v in s.points]
    summary = Summary()
    if not values:
        return summary
    summary.util_mean = round(sum(values) / len(values), 2)
    summary.util_peak = max(values)
    peaks = [v for s in memory for _t, v in s.points]
    summary.memory_peak_mib = int(max(peaks)) if peaks else None
    for s in util:
        for when, value in s.points:
            day = datetime.fromtimestamp(when, timezone.utc).date()
            summary.used_by_day[day] = summary.used_by_day.get(day, 0.0) + value / 100.0 * step
            summary.measured_by_day[day] = summary.measured_by_day.get(day, 0.0) + step
            if value <= idle_percent:
                summary.idle_by_day[day] = summary.idle_by_day.get(day, 0.0) + step
    return summary


def job_summary(prom: Prometheus, namespace: str, pods: list[str], start: float, end: float) -> Summary:
    step = step_for(prom.settings, start, end)
    series = job_series(prom, namespace, pods, start, end, step)
    return summarize(series["util"], series["memory"], step, prom.settings.idle_percent)


def day_overlaps(start: datetime, end: datetime) -> dict[date, float]:
    """Seconds of [start, end) that fall on each UTC day."""
    out: dict[date, float] = {}
    cursor = start
    while cursor < end:
        midnight = datetime.combine(cursor.date() + timedelta(days=1), datetime.min.time())
        stop = min(end, midnight)
        out[cursor.date()] = out.get(cursor.date(), 0.0) + (stop - cursor).total_seconds()
        cursor = stop
    return out
