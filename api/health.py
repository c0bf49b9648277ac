"""GET /healthz: is Redis up, is the store reachable."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.services import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """200 when Redis and storage answer, else 503 naming what failed."""
    s = services()
    checks = {}
    try:
        s.jobs.redis.ping()
        checks["redis"] = "ok"
    except Exception as e:
        checks["redis"] = f"error: {type(e).__name__}"
    try:
        s.store.exists("healthz")
        checks["store"] = "ok"
    except Exception as e:
        checks["store"] = f"error: {type(e).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ok" if ok else "degraded", **checks}), 200 if ok else 503
