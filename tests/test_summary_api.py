"""A scored job's statistics through the API and a real worker: the summary's intervals and
comparisons match an independent computation from the result rows; /summary and /summary.csv."""

from __future__ import annotations

import csv
import io
from itertools import combinations

import pytest

from tests.conftest import wait_for_job
from tests.imagegen import make_folder
from tests.test_stats import fisher_by_enumeration, wilson_by_bisection

pytestmark = pytest.mark.slow

GROUPS = ("variant_a", "variant_b", "variant_c")


def holm_by_definition(p: list[float]) -> list[float]:
    """Holm: the i-th smallest p-value times (m - i), made monotone by a running maximum."""
    order = sorted(range(len(p)), key=p.__getitem__)
    scaled = [min(1.0, (len(p) - rank) * p[i]) for rank, i in enumerate(order)]
    out = [0.0] * len(p)
    for rank, i in enumerate(order):
        out[i] = max(scaled[: rank + 1])
    return out


@pytest.fixture(scope="module")
def scored_job(settings, model_version, worker, base_dir):
    """36 small images over three variants (3 corrupt in the first), scored by the worker."""
    from api import create_app

    client = create_app(settings).test_client()
    root = base_dir / "stats36"
    make_folder(root, 36, groups=GROUPS, max_side=160)
    resp = client.post("/v1/jobs", json={"type": "classify", "source": str(root)})
    assert resp.status_code == 202, resp.get_json()
    record = wait_for_job(client, resp.get_json()["id"])
    assert record["status"] == "succeeded", record
    body = client.get(f"/v1/jobs/{record['id']}/results?limit=1000").get_json()
    return record, body["rows"]


def test_the_summary_statistics_match_an_independent_computation(client, scored_job):
    record, rows = scored_job
    summary = record["summary"]
    classes = summary["classes"]
    counts = {g: {c: sum(1 for r in rows if r["group"] == g and r["label"] == c) for c in classes}
              for g in GROUPS}
    scored = {g: sum(counts[g].values()) for g in GROUPS}
    assert scored["variant_a"] == 12 and summary["groups"]["variant_a"]["failed"] == 3
    for g in GROUPS:
        for c in classes:
            cell = summary["groups"][g]["labels"][c]
            assert cell["count"] == counts[g][c]
            assert cell["share"] == pytest.approx(counts[g][c] / scored[g], abs=1e-6)
            assert cell["ci95"] == pytest.approx(wilson_by_bisection(counts[g][c], scored[g]),
                                                 abs=2e-6)
    expected = []
    for c in classes:
        pairs = list(combinations(sorted(GROUPS), 2))
        p = [fisher_by_enumeration(counts[a][c], scored[a] - counts[a][c],
                                   counts[b][c], scored[b] - counts[b][c]) for a, b in pairs]
        for (a, b), p_value, adjusted in zip(pairs, p, holm_by_definition(p), strict=True):
            expected.append((c, a, b, counts[a][c] / scored[a] - counts[b][c] / scored[b],
                             p_value, adjusted))
    got = summary["comparisons"]
    assert [(x["label"], x["a"], x["b"]) for x in got] == [e[:3] for e in expected]
    for x, (_, _, _, difference, p_value, adjusted) in zip(got, expected, strict=True):
        assert x["difference"] == pytest.approx(difference, abs=1e-6)
        assert x["p_value"] == pytest.approx(p_value, rel=1e-9)
        assert x["p_adjusted"] == pytest.approx(adjusted, rel=1e-9)
        assert x["significant"] is (adjusted < 0.05)
    assert summary["comparisons_left_out"] == []


def test_the_whole_summary_and_summary_csv_are_served(client, scored_job):
    record, _ = scored_job
    whole = client.get(f"/v1/jobs/{record['id']}/summary")
    assert whole.status_code == 200
    assert whole.get_json() == record["summary"]  # three groups: nothing bounded away
    resp = client.get(f"/v1/jobs/{record['id']}/summary.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert list(table[0]) == ["group", "label", "count", "share", "ci95_low", "ci95_high"]
    classes = record["summary"]["classes"]
    assert [(r["group"], r["label"]) for r in table] == [(g, c) for g in GROUPS for c in classes]
    for r in table:
        cell = record["summary"]["groups"][r["group"]]["labels"][r["label"]]
        assert int(r["count"]) == cell["count"] and float(r["share"]) == cell["share"]
        assert [float(r["ci95_low"]), float(r["ci95_high"])] == cell["ci95"]


def test_a_summary_before_results_is_a_409_and_an_unknown_job_a_404(client, redis_url, settings):
    import redis

    from facesense.state.records import JobRecords
    from facesense.storage import store_from_settings

    jobs = JobRecords(redis.Redis.from_url(redis_url), store_from_settings(settings))
    job = jobs.create("classify", source="store:none", model="production")  # queued, never sent
    for path in ("summary", "summary.csv"):
        early = client.get(f"/v1/jobs/{job['id']}/{path}")
        assert early.status_code == 409
        assert "no results yet" in early.get_json()["error"]["message"]
        assert client.get(f"/v1/jobs/0123456789ab/{path}").status_code == 404
