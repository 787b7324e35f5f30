"""GET /auth/ingress: the ingress controller's question "may this request pass?" (ingress-nginx
external auth, the `auth-url` annotation on a notebook's Ingress, or a job port's). 200 with the notebook's token in
an Authorization header for the backend when the browser's portal session is the job's owner or
an admin and the job runs; 401 without a session (the ingress then sends a browser to the
portal's sign-in, `auth-signin`, which comes back to the notebook); 403 for a signed-in user who
may not pass (a 401 would send them round the sign-in page forever). 503 when the cluster cannot
tell the token now."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from ..cluster.client import ClusterError
from ..services import ingress_auth
from .context import actor, cluster

bp = Blueprint("ingress_auth", __name__)


@bp.get("/auth/ingress")
def check():
    base = current_app.config.get("JUPYTER_BASE_PATH", "/jupyter")
    target = ingress_auth.target_of(request.headers.get("X-Original-URL", ""), base)
    who = actor()
    if not who.user or not who.user.is_authenticated:
        return Response("", 401, headers={"Cache-Control": "no-store"})  # the ingress sends the browser to sign in
    if target is None or not ingress_auth.may_pass(who, *target):
        # Signed in, but not theirs (or not running): 403, not 401, or the sign-in page (which
        # sends a signed-in browser straight back) and the ingress would redirect forever.
        return Response("", 403, headers={"Cache-Control": "no-store"})
    job_id, port = target
    if port:  # a job's own port: nothing to hand on
        return Response("", 200, headers={"Cache-Control": "no-store"})
    try:
        token = ingress_auth.token_for(job_id, cluster())
    except ClusterError:
        return Response("", 503, headers={"Cache-Control": "no-store", "Retry-After": "5"})
    return Response("", 200, headers={"Authorization": f"token {token}", "Cache-Control": "no-store"})
