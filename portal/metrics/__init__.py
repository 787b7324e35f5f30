"""GPU metrics: the only code that talks to Prometheus (its HTTP API: instant and range queries,
with a timeout on every call). It reads the series the NVIDIA DCGM exporter publishes (kubesim
serves the same names and labels), and turns answers into plain data: GPU devices with the pod
that holds them, chart series aligned for the browser, and the GPU summary of a job (mean and peak
utilisation, peak memory, GPU-seconds used and idle per day). Whatever goes wrong becomes
`MetricsError` with words a person can read; callers show "no metrics" and carry on."""
from __future__ import annotations

import gc
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import orjson
import requests

UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
# The DCGM exporter's labels (a Prometheus that does not honour the exporter's labels renames
# namespace/pod to exported_namespace/exported_pod: set CRATER_DCGM_POD_LABELS=exported).
NODE, GPU, UUID, MODEL = "Hostname", "gpu", "UUID", "modelName"
MAX_POINTS = 10_000  # per series in one range query (Prometheus refuses more than 11,000)
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="prometheus")
POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


_gc_lock = threading.Lock()
_gc_state = {"holders": 0, "was_enabled": True}


@contextmanager
def no_gc():
    """No cyclic garbage collection while a large answer is parsed and reshaped: those build tens
    of thousands of small lists and create no cycles, but the allocation burst would otherwise set
    off full collections over the whole process's heap (measured: 105 -> 29 ms for a day of 8
    GPUs). Counted, so overlapping threads restore it only when the last one is done."""
    with _gc_lock:
        if _gc_state["holders"] == 0:
            _gc_state["was_enabled"] = gc.isenabled()
        _gc_state["holders"] += 1
        gc.disable()
    try:
        yield
    finally:
        with _gc_lock:
            _gc_state["holders"] -= 1
            if _gc_state["holders"] == 0 and _gc_state["was_enabled"]:
                gc.enable()


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
    def from_config(cls, config) -> MetricsSettings:
        exported = config.get("DCGM_POD_LABELS", "") == "exported"
        return cls(url=(config.get("PROMETHEUS_URL") or "").rstrip("/"), timeout=float(config.get("PROMETHEUS_TIMEOUT", 5.0)),
                   step=float(config.get("PROMETHEUS_STEP", 15.0)), idle_percent=float(config.get("GPU_IDLE_PERCENT", 0)),
                   pod_label="exported_pod" if exported else "pod",
                   namespace_label="exported_namespace" if exported else "namespace")


class Prometheus:
    def __init__(self, settings: MetricsSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()

    def ranges_raw(self, queries: list[str], start: float, end: float, step: float) -> list[list[tuple[dict, list]]]:
        """Several range queries at once (Prometheus answers them on its own cores), in order."""
        futures = [self.range_raw_async(q, start, end, step) for q in queries[1:]]
        first = self.range_raw(queries[0], start, end, step)
        return [first] + [f.result() for f in futures]

    def range_raw_async(self, query: str, start: float, end: float, step: float):
        """A range query on a thread of its own (with its own connection): a future."""
        return _POOL.submit(Prometheus(self.settings).range_raw, query, start, end, step)

    def _get(self, path: str, params: dict) -> dict:
        if not self.settings.enabled:
            raise MetricsError("Prometheus is not configured (CRATER_PROMETHEUS_URL).")
        timeout = self.settings.timeout
        try:
            # No compression: Prometheus usually sits next to the portal, and gzip costs both sides CPU.
            answer = self.session.get(self.settings.url + path, params=params, timeout=(min(3.0, timeout), timeout),
                                      headers={"Accept-Encoding": "identity"})
        except requests.Timeout:
            raise MetricsError(f"Prometheus did not answer within {timeout:g} s.") from None
        except requests.ConnectionError:
            raise MetricsError("Prometheus cannot be reached (connection refused or reset).") from None
        except requests.RequestException as exc:
            raise MetricsError(f"Prometheus could not be asked ({type(exc).__name__}).") from None
        try:
            with no_gc():
                body = orjson.loads(answer.content)  # a day of samples is megabytes of JSON: the fast parser
        except (orjson.JSONDecodeError, ValueError):
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

    def range_raw(self, query: str, start: float, end: float, step: float) -> list[tuple[dict, list]]:
        """A range query's series as Prometheus sends them: (labels, [[time, "value"], ...]). The
        start is moved up to a multiple of the step, so answers line up with `axis`."""
        start = math.ceil(start / step) * step
        data = self._get("/api/v1/query_range", {"query": query, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step:g}"})
        if data.get("resultType") != "matrix":
            raise MetricsError("Prometheus answered a range query with an unexpected result type.")
        return [(r.get("metric") or {}, r.get("values") or []) for r in data.get("result") or []]

    def range(self, query: str, start: float, end: float, step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        return [(labels, [(float(t), _number(v)) for t, v in values])
                for labels, values in self.range_raw(query, start, end, step)]


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
    """{namespace="...",pod="a"} (or pod=~"a|b" for several): only DNS-1123 names (anything else
    is not a pod of ours)."""
    names = sorted({p for p in pods if POD_NAME.match(p or "")})
    if not names:
        raise MetricsError("The job has no pods to ask about.")
    if len(names) == 1:  # an equality matcher is cheaper for Prometheus than a regex
        return f"{{{settings.namespace_label}={quote(namespace)},{settings.pod_label}={quote(names[0])}}}"
    pattern = "|".join(n.replace(".", "\\\\.") for n in names)
    return f'{{{settings.namespace_label}={quote(namespace)},{settings.pod_label}=~"{pattern}"}}'


def step_for(settings: MetricsSettings, start: float, end: float) -> float:
    """The scrape interval, or coarser where the span would need more points than one answer holds."""
    return max(settings.step, math.ceil(max(0.0, end - start) / MAX_POINTS))


def epoch(moment: datetime) -> float:
    """A naive UTC datetime (as the database keeps them) as seconds since the epoch."""
    return moment.replace(tzinfo=UTC).timestamp()


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


MEMORY_STEPS = 4  # memory moves slowly: charted as the peak of every 4 scrape intervals


def _by_metric(prom: Prometheus, selector: str, start: float, end: float, step: float, raw: bool = False) -> dict:
    """Utilisation (every step) and memory (the peak of every MEMORY_STEPS steps) of the selected
    GPUs, asked in parallel: {metric name: (series, step)}."""
    coarse = step * MEMORY_STEPS
    util = prom.range_raw_async(f"{UTIL}{{{selector}}}", start, end, step)
    memory = prom.range_raw(f"max_over_time({FB_USED}{{{selector}}}[{coarse:g}s])", start, end, coarse)
    util = util.result()
    for labels, _values in memory:
        labels.setdefault("__name__", FB_USED)
    if not raw:
        convert = lambda answer: [(labels, [(float(t), _number(v)) for t, v in values]) for labels, values in answer]  # noqa: E731
        with no_gc():
            util, memory = convert(util), convert(memory)
    return {UTIL: (util, step), FB_USED: (memory, coarse)}


def _job_selector(settings: MetricsSettings, namespace: str, pods: list[str]) -> str:
    return pods_selector(settings, namespace, pods)[1:-1]


def job_series(prom: Prometheus, namespace: str, pods: list[str], start: float, end: float, step: float) -> dict[str, list[Series]]:
    """Utilisation (%) and memory used (MiB) of each GPU of the job's pods (labelled by pod when
    there are several, as for distributed jobs)."""
    answer = _by_metric(prom, _job_selector(prom.settings, namespace, pods), start, end, step)
    label = _gpu_label(prom.settings, with_pod=len(pods) > 1)
    return {"util": _series(answer[UTIL][0], label), "memory": _series(answer[FB_USED][0], label)}


def job_charts(prom: Prometheus, namespace: str, pods: list[str], start: float, end: float, step: float) -> dict[str, dict]:
    """The same as charts: {"util": chart, "memory": chart}, built straight from the answer."""
    answer = _by_metric(prom, _job_selector(prom.settings, namespace, pods), start, end, step, raw=True)
    with no_gc():
        return _gpu_charts(answer, start, end, _gpu_label(prom.settings, with_pod=len(pods) > 1))


def _gpu_charts(answer: dict, start: float, end: float, label) -> dict[str, dict]:
    return {"util": columns(answer[UTIL][0], start, end, answer[UTIL][1], label),
            "memory": columns(answer[FB_USED][0], start, end, answer[FB_USED][1], label)}


def node_charts(prom: Prometheus, node: str, start: float, end: float, step: float) -> dict[str, dict]:
    """A node's GPUs, one series each (in index order): DCGM labels a GPU's samples by the pod
    holding it, so the series are merged per GPU, else the legend names a GPU once per pod."""
    selector, coarse = f"{NODE}={quote(node)}", step * MEMORY_STEPS
    util = prom.range_raw_async(f"max by ({GPU}) ({UTIL}{{{selector}}})", start, end, step)
    memory = prom.range_raw(f"max by ({GPU}) (max_over_time({FB_USED}{{{selector}}}[{coarse:g}s]))", start, end, coarse)

    def by_index(answer):
        return sorted(answer, key=lambda item: (not str(item[0].get(GPU, "")).isdigit(), int(item[0][GPU])
                                                if str(item[0].get(GPU, "")).isdigit() else 0, str(item[0].get(GPU, ""))))
    answer = {UTIL: (by_index(util.result()), step), FB_USED: (by_index(memory), coarse)}
    with no_gc():
        return _gpu_charts(answer, start, end, _gpu_label(prom.settings, with_pod=False))


def cluster_charts(prom: Prometheus, start: float, end: float, step: float, words: dict) -> dict[str, dict]:
    """GPUs in the cluster and GPUs held by a pod; the mean utilisation of all GPUs. `words`: the
    series' labels in the reader's language (total, in use, mean)."""
    pod = prom.settings.pod_label
    total, held, mean = (a[:1] for a in prom.ranges_raw(
        [f"count({UTIL})", f'count({UTIL}{{{pod}!=""}})', f"avg({UTIL})"], start, end, step))
    return {"gpus": columns([({"k": "total"}, total[0][1] if total else []), ({"k": "in use"}, held[0][1] if held else [])],
                            start, end, step, lambda labels: words[labels["k"]], keep_empty=True),
            "util": columns([({"k": "mean"}, mean[0][1] if mean else [])], start, end, step,
                            lambda labels: words[labels["k"]], keep_empty=True)}


def axis(start: float, end: float, step: float) -> list[float]:
    first = math.ceil(start / step) * step
    count = min(MAX_POINTS + 1, int((end - first) // step) + 1) if end >= first else 0
    return [round(first + i * step, 3) for i in range(count)]


def columns(answer: list[tuple[dict, list]], start: float, end: float, step: float, label_of, keep_empty: bool = False) -> dict:
    """uPlot's shape from a range answer: one x axis (seconds) and a column of values per series
    (None where a series has no sample). Prometheus answers at start + k * step, so a sample's
    place is arithmetic, not a lookup."""
    xs = axis(start, end, step)
    first, n = (xs[0] if xs else 0.0), len(xs)
    out = []
    for labels, values in answer:
        column: list[float | None] = [None] * n
        if values:
            i0 = int((float(values[0][0]) - first) / step + 0.5)
            i1 = int((float(values[-1][0]) - first) / step + 0.5)
            if i0 >= 0 and i1 < n and i1 - i0 + 1 == len(values):  # contiguous: a sample at every step between
                numbers = map(float, (v for _t, v in values))
                column[i0:i1 + 1] = [x if x == x else None for x in numbers]  # NaN -> None
            else:
                for t, v in values:
                    i = int((float(t) - first) / step + 0.5)
                    if 0 <= i < n:
                        number = _number(v)
                        column[i] = None if math.isnan(number) else number
        out.append({"label": label_of(labels), "values": column})
    if not keep_empty:
        out = [c for c in out if any(v is not None for v in c["values"])]
    out.sort(key=lambda c: c["label"])
    return {"x": xs, "series": out}


def chart(series: list[Series], start: float, end: float, step: float) -> dict:
    """uPlot's shape from Series (points as (time, value) pairs)."""
    return columns([({"label": s.label}, s.points) for s in series], start, end, step, lambda labels: labels["label"],
                   keep_empty=True)


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
            day = datetime.fromtimestamp(when, UTC).date()
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
