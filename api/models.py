"""/v1/models: versions, aliases, promotion."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api.auth import caller, require_admin
from api.schemas import check_fields, json_body
from api.services import services
from facesense.registry import check_name

bp = Blueprint("models", __name__, url_prefix="/v1/models")


def registry():
    """The app's model registry."""
    return services().registry


@bp.get("")
def list_models():
    """Every version (newest first) and every alias."""
    return jsonify({"versions": registry().versions(), "aliases": registry().aliases()})


@bp.get("/<version>")
def get_model(version: str):
    """One version's manifest, plus the aliases pointing at it."""
    manifest = registry().manifest(version)
    aliases = [name for name, a in registry().aliases().items() if a["version"] == version]
    return jsonify({**manifest, "aliases": aliases})


@bp.post("/<version>/promote")
def promote(version: str):
    """Point an alias (default production) at this version; the move is kept in history.
    A version that does not beat chance needs "force": true (409 without it)."""
    require_admin("promoting a model")
    body = check_fields(json_body(request), {"alias": str, "force": bool}, ())
    alias = check_name(body.get("alias", "production"), "alias")
    who = caller().name
    by = f"key {who}" if who else f"request from {request.remote_addr}"
    return jsonify(registry().promote(version, alias, by=by, force=body.get("force", False)))
