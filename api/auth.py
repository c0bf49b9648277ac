"""Bearer-token API keys: who is calling, and which jobs they may see."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, current_app, g, request
from werkzeug.exceptions import Forbidden

from api.errors import error_response
from facesense.errors import JobNotFound
from facesense.keys import ANONYMOUS, KEY_PREFIX, OPEN, Caller, Keyring

log = logging.getLogger(__name__)

OPEN_BLUEPRINTS = {"health"}  # liveness for orchestrators, which hold no key
REALM = 'Bearer realm="facesense"'


def public(view: Callable) -> Callable:
    """Mark a view as open to callers without a key."""
    view.facesense_public = True
    return view


def install(app: Flask, keyring: Keyring) -> None:
    """Check the bearer token before every request that is not public."""
    app.extensions["facesense_keys"] = keyring

    @app.before_request
    def authenticate():
        if key_in_url():  # a URL ends up in access logs, proxies and browser history
            return unauthorized("an API key never goes in the URL: send it in the header "
                                "'Authorization: Bearer <key>' (and consider that one "
                                "leaked)", ', error="invalid_request"')
        g.caller = ANONYMOUS if keyring.enabled else OPEN
        if not keyring.enabled or is_public(app):
            return None  # a public view runs as ANONYMOUS: it sees no job
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return unauthorized("send an API key: 'Authorization: Bearer <key>'", "")
        caller = keyring.identify(token.strip())
        if caller is None:
            # Log who tried from where, never what they sent: it may be a real key mistyped.
            log.warning("rejected an invalid API key from %s for %s %s", request.remote_addr,
                        request.method, request.path)
            return unauthorized("the API key is not valid", ', error="invalid_token"')
        g.caller = caller
        return None


URL_KEY_NAMES = {"api_key", "apikey", "key", "token", "access_token"}


def key_in_url() -> bool:
    """True if the query string carries something that is, or is named like, an API key."""
    return any(name.lower() in URL_KEY_NAMES or value.startswith(KEY_PREFIX)
               for name, value in request.args.items(multi=True))


def is_public(app: Flask) -> bool:
    """True for open blueprints and views marked @public (unknown routes are not public)."""
    if request.blueprint in OPEN_BLUEPRINTS:
        return True
    view = app.view_functions.get(request.endpoint or "")
    return bool(getattr(view, "facesense_public", False))


def unauthorized(message: str, extra: str):
    """401 with the JSON error body and a WWW-Authenticate challenge."""
    response, status = error_response(401, "unauthorized", message)
    response.headers["WWW-Authenticate"] = REALM + extra
    return response, status


def caller() -> Caller:
    """Who is calling this request (OPEN when authentication is off)."""
    return g.get("caller", ANONYMOUS)


def auth_enabled() -> bool:
    """True when the app requires keys."""
    return current_app.extensions["facesense_keys"].enabled


def visible(record: dict) -> dict:
    """The job record if the caller may see it; otherwise the same 404 as an unknown id."""
    if not caller().sees(record.get("owner")):
        raise JobNotFound(f"no job {record['id']!r}")
    return record


def require_admin(action: str) -> None:
    """403 unless the caller holds an admin key (or authentication is off)."""
    if not caller().admin:
        raise Forbidden(f"{action} needs an admin key (FACESENSE_ADMIN_KEYS)")
