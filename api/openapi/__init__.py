"""GET /openapi.json: an OpenAPI 3.1 description of every route (tests check none is missing).
A blueprint module may add its own routes with an `openapi_paths()` function, built with
`builders`. The package may import api.auth and the core."""

from __future__ import annotations

import copy
import sys

from flask import Blueprint, current_app, jsonify

from api.auth import auth_enabled, public
from api.openapi.builders import json_content, op, ref
from api.openapi.paths import job_paths, model_paths
from api.openapi.schemas import SCHEMAS

bp = Blueprint("openapi", __name__)


def document() -> dict:
    """The OpenAPI document for this app (security reflects whether keys are configured)."""
    paths = {**job_paths(), **model_paths(),
             "/healthz": {"get": op("Redis and storage answer (503 names what failed)", 200,
                                    ref("Health"), open_=True)},
             "/openapi.json": {"get": op("This document", 200, {"type": "object"}, open_=True)}}
    for blueprint in current_app.blueprints.values():  # e.g. the dashboard's own routes
        extra = getattr(sys.modules.get(blueprint.import_name), "openapi_paths", None)
        if extra and blueprint.import_name != __name__:  # merged: a path may gain a method
            for path, operations in extra().items():
                paths.setdefault(path, {}).update(operations)
    paths["/healthz"]["get"]["responses"]["503"] = {
        "description": "Redis or storage down", "content": json_content(ref("Health"))}
    doc = {"openapi": "3.1.0",
           "info": {"title": "FaceSense", "version": "1",
                    "description": "Bulk image scoring and retraining jobs. Every error is "
                                   '{"error": {"code", "message"}}.'},
           "paths": paths,  # a copy: a caller may change its document, never the next one
           "components": {"schemas": copy.deepcopy(SCHEMAS)}}
    if auth_enabled():
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"apiKey": []}]
    return doc


@bp.get("/openapi.json")
@public
def openapi():
    """The OpenAPI document, open like /healthz so tools can discover the API."""
    doc = current_app.extensions.get("facesense_openapi")
    if doc is None:
        doc = current_app.extensions["facesense_openapi"] = document()
    return jsonify(doc)
