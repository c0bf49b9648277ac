"""/openapi.json describes every route, and a bounded schemathesis fuzz finds no 5xx and no
response that breaks the document."""

from __future__ import annotations

import re
import time
import uuid

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app
from facesense.keys import hash_key, new_key

FUZZ_KEY = new_key()
FUZZ_EXAMPLES = 25  # per operation: ~15 operations take ~10 s here, well inside the budget
FUZZ_BUDGET_S = 60


def openapi_path(rule: str) -> str:
    """A Flask rule as an OpenAPI path: /v1/jobs/<job_id> -> /v1/jobs/{job_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_is_in_the_document(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    rules = [r for r in client.application.url_map.iter_rules() if r.endpoint != "static"]
    assert len(rules) >= 10
    for rule in rules:
        path = openapi_path(rule.rule)
        assert path in doc["paths"], f"{rule.rule} is not in /openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = doc["paths"][path].get(method.lower())
            assert operation, f"{method} {rule.rule} is not in /openapi.json"
            assert any(s.startswith("2") for s in operation["responses"]), (method, rule.rule)


def test_a_changed_document_leaves_the_next_one_as_it_was(client):
    # the dashboard's test serves an edited document: the edit must not leak into the next app's
    from api.openapi import document

    with client.application.app_context():
        first = document()
        del first["components"]["schemas"]["FinishedStatus"]
        first["components"]["schemas"]["Job"]["properties"]["status"]["enum"].append("paused")
        second = document()
    assert "FinishedStatus" in second["components"]["schemas"]
    assert "paused" not in second["components"]["schemas"]["Job"]["properties"]["status"]["enum"]


def test_every_error_response_uses_the_error_schema(client):
    doc = client.get("/openapi.json").get_json()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)


def test_the_document_shows_bearer_auth_only_when_keys_are_configured(client, settings):
    assert "security" not in client.get("/openapi.json").get_json()
    keyed = create_app(settings.replace(api_keys=f"a:{hash_key(new_key())}")).test_client()
    doc = keyed.get("/openapi.json").get_json()  # open without a key, like /healthz
    assert doc["security"] == [{"apiKey": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert "401" in doc["paths"]["/v1/jobs/{job_id}"]["get"]["responses"]


@pytest.fixture(scope="module")
def fuzz_app(settings, base_dir, redis_url):
    """The API on its own Redis database (no worker listens there, so nothing queued is ever
    run) and an empty store prefix (no model: scoring submissions stop at validation)."""
    db_url = re.sub(r"/\d+$", "/7", redis_url)
    empty_root = base_dir / f"fuzz-{uuid.uuid4().hex[:8]}"
    empty_root.mkdir()
    app = create_app(settings.replace(
        redis_url=db_url, store=f"{settings.store}-fuzz-{uuid.uuid4().hex[:8]}",
        allowed_roots=(str(empty_root),), admin_keys=f"fuzzer:{hash_key(FUZZ_KEY)}"))
    yield app
    redis.Redis.from_url(db_url).flushdb()


# No 5xx, and every status, content type and body as documented. (negative_data_rejection is
# left out: the API ignores unknown query arguments, and the fixed Authorization header undoes
# the cases that drop it.)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def fuzz(operation, deadline: float) -> tuple[int, int]:
    """Run one operation's valid and invalid examples; returns (requests sent, examples left
    unsent because the budget ran out). (Plain hypothesis over schemathesis strategies: its
    pytest plugin's lazy fixture schemas do not run under pytest 9.)"""
    sent, unsent = [], []
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))

    @given(case=cases)
    @hypothesis_settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                         database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        if time.monotonic() > deadline:
            unsent.append(1)  # counted, so the test fails instead of passing untested
            return
        case.call_and_validate(headers={"Authorization": f"Bearer {FUZZ_KEY}"}, checks=CHECKS)
        sent.append(1)

    run()
    return len(sent), len(unsent)


@pytest.mark.timeout(180)
def test_fuzz_finds_no_server_error_and_no_response_off_the_schema(fuzz_app):
    schema = schemathesis.openapi.from_wsgi("/openapi.json", fuzz_app)
    deadline = time.monotonic() + FUZZ_BUDGET_S
    sent, unsent = {}, {}
    for result in schema.get_all_operations():
        operation = result.ok()
        sent[operation.label], unsent[operation.label] = fuzz(operation, deadline)
    assert len(sent) >= 10, sorted(sent)
    assert all(n > 0 for n in sent.values()), sent  # every operation got requests
    # a budget spent before every case was sent is a failure, not a pass
    assert sum(unsent.values()) == 0, (
        f"the {FUZZ_BUDGET_S} s budget ran out with cases unsent: "
        f"{ {k: v for k, v in unsent.items() if v} }")
    # every check passed, not_a_server_error included: no 5xx
    print(f"schemathesis: {sum(sent.values())} requests over {len(sent)} operations, 0 x 5xx")
