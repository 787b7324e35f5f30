"""kubesim: a simulated GPU cluster that speaks the Kubernetes REST API (see sim.KubeSim).

Imports nothing from the portal; the portal imports nothing from it (only the demo command and
the tests start it)."""
from .sim import DEFAULT_TOKEN, KubeSim

__all__ = ["KubeSim", "DEFAULT_TOKEN"]
