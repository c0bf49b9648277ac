"""GET /healthz: is Redis up, is the store reachable."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 when Redis and storage answer, else 503 naming what failed."""
    services = current_app.extensions["facesense"]
    checks = {}
    try:
        services.jobs.redis.ping()
        checks["redis"] = "ok"
    except Exception as e:
        checks["redis"] = f"error: {type(e).__name__}"
    try:
        services.store.exists("healthz")
        checks["store"] = "ok"
    except Exception as e:
        checks["store"] = f"error: {type(e).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if ok else "degraded", **checks}), 200 if ok else 503
