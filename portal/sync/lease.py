"""Leader election through a coordination.k8s.io/v1 Lease: one replica acts, the others wait.

The holder renews every third of the lease duration. It counts itself the leader only until two
thirds of the duration after the start of its last successful renewal, so a replica that cannot
renew (the API away, a partition) stops acting a third of the duration before any other replica
may take the Lease over (which needs a renewTime older than the full duration). Writes are
compare-and-swap on the Lease's resourceVersion: two replicas racing for it cannot both win."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, UTC

from ..cluster.client import ClusterError
from .clock import Clock

log = logging.getLogger("crater.sync")
LEASE_NAME = "crater-syncer"
RETRY_SECONDS = 1.0  # how often a replica that does not lead tries for the Lease


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> float | None:
    """An RFC 3339 time (MicroTime) as epoch seconds; None when missing or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class LeaseElector:
    def __init__(self, cluster, identity: str, clock: Clock, lease_seconds: float = 15.0, name: str = LEASE_NAME):
        self.cluster, self.identity, self.clock = cluster, identity, clock
        self.lease_seconds, self.name = float(lease_seconds), name
        self._valid_until = 0.0  # monotonic
        self._was_leading = False
        self.last_error = ""
        self.on_gain = lambda: None  # called when this replica starts to lead

    def leading(self) -> bool:
        return self.clock.monotonic() < self._valid_until

    def step(self) -> bool:
        """Acquire or renew once; True while this replica leads."""
        started, wall = self.clock.monotonic(), self.clock.time()
        try:
            if self._acquire_or_renew(wall):
                self._valid_until = started + self.lease_seconds * 2 / 3
            else:
                self._valid_until = 0.0
            self.last_error = ""
        except ClusterError as exc:
            self.last_error = exc.message
            log.warning("lease: %s", exc.message)
        self._note_change()
        return self.leading()

    def _note_change(self) -> None:
        now = self.leading()
        if now != self._was_leading:
            log.info("syncer %s %s", self.identity, "leads" if now else "no longer leads")
            self._was_leading = now
            if now:
                self.on_gain()

    def _acquire_or_renew(self, wall: float) -> bool:
        lease = self.cluster.read_lease(self.name)
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, int(round(self.lease_seconds))),
                "renewTime": _iso(wall)}
        if lease is None:
            spec["acquireTime"] = _iso(wall)
            return self.cluster.write_lease(self.name, spec)
        current = lease.get("spec") or {}
        holder = current.get("holderIdentity") or ""
        if holder and holder != self.identity:
            renewed = _parse(current.get("renewTime"))
            duration = float(current.get("leaseDurationSeconds") or self.lease_seconds)
            if renewed is not None and wall - renewed < duration:
                return False
        spec["acquireTime"] = current.get("acquireTime") if holder == self.identity else _iso(wall)
        return self.cluster.write_lease(self.name, spec, lease["metadata"]["resourceVersion"])

    def release(self) -> None:
        """Hand the Lease back (best effort) so another replica takes over at once."""
        was = self.leading()
        self._valid_until = 0.0
        self._note_change()
        if not was:
            return
        try:
            lease = self.cluster.read_lease(self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = dict(lease["spec"], holderIdentity="")
                self.cluster.write_lease(self.name, spec, lease["metadata"]["resourceVersion"])
        except ClusterError:
            pass

    def run(self, stop: threading.Event, on_lead=lambda: None) -> None:
        """Renew every third of the duration while leading (then `on_lead()`, e.g. a heartbeat);
        while not, try every RETRY_SECONDS at most, so a replica cut off from the API leads again
        within moments of its return."""
        while not stop.is_set():
            if self.step():
                on_lead()
                self.clock.wait(stop, self.lease_seconds / 3)
            else:
                self.clock.wait(stop, min(RETRY_SECONDS, self.lease_seconds / 3))
