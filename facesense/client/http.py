"""The client's HTTP core: one session, the API key, and error answers raised as ApiError."""

from __future__ import annotations

from collections.abc import Iterable

import requests


class ApiError(Exception):
    """The API answered with an error body, or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0, code: str = "unreachable"):
        super().__init__(message)
        self.status, self.code = status, code


class Http:
    """The session and the error mapping every call of the client goes through."""

    def __init__(self, base_url: str, timeout: float = 60, api_key: str | None = None):
        self.base_url, self.timeout = base_url.rstrip("/"), timeout
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            resp = self.http.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as e:
            raise ApiError(f"cannot reach the API at {self.base_url} ({type(e).__name__}; "
                           "is `facesense up` running? see --api)") from None
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                hint = " (set FACESENSE_API_KEY or pass --api-key)" if resp.status_code == 401 else ""
                message, code = f"{err['message']} [{resp.status_code} {err['code']}]{hint}", err["code"]
            except (ValueError, KeyError, TypeError):
                message, code = f"HTTP {resp.status_code} from {path}", "http_error"
            resp.close()
            raise ApiError(message, resp.status_code, code)
        return resp


def _optional(**fields) -> dict:
    """The fields that were given (not None)."""
    return {k: v for k, v in fields.items() if v is not None}


def _form(value):
    """A value as a multipart form's text: booleans as true / false, as the API reads them."""
    return str(value).lower() if isinstance(value, bool) else value


def _form_fields(fields: dict) -> dict:
    """Request fields as a multipart form's text (a list, the tags, comma-separated)."""
    return {k: ",".join(v) if isinstance(v, list) else _form(v) for k, v in fields.items()}


def _tags(tags: Iterable[str] | None) -> list[str] | None:
    """Tags as the JSON body's list (None: not given)."""
    return None if tags is None else list(tags)
