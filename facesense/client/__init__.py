"""The Python client of the HTTP API: what the CLI uses, and handy in scripts and notebooks.
It may import the core (errors, inputs, state) and requests, never torch.

    from facesense.client import Client
    api = Client("http://127.0.0.1:8000", api_key=None)
    job = api.submit("s3://campaigns/spring")
    api.wait(job["id"], on_update=lambda r: print(r["progress"]["done"], r["progress"]["total"]))
    for row in api.rows(job["id"]):
        ...
"""

from __future__ import annotations

from facesense.client.admin import Admin
from facesense.client.http import ApiError
from facesense.client.results import Results
from facesense.client.submit import Submitting

__all__ = ["ApiError", "Client"]


class Client(Submitting, Results, Admin):
    """Talks JSON to a FaceSense API; every method raises ApiError on an error answer."""
