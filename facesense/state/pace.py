"""A job's pace: how fast it has gone since it started, and the time it has left at that rate."""

from __future__ import annotations

from facesense.state.status import FINISHED, now


def timing(record: dict, at: float | None = None) -> dict | None:
    """{unit, elapsed_s, rate (units a second), eta_s} of a job that started; None before.

    The rate is the average since the job started (images for scoring, epochs for training);
    eta_s is None while it can't be known (nothing done yet, or the total still being listed),
    0 once the job finished."""
    started = record.get("started_at")
    if not started:
        return None
    finished = record.get("status") in FINISHED
    end = record.get("finished_at") if finished else None
    elapsed = max(0.0, (end or at or now()) - started)
    done, total = record.get("done") or 0, record.get("total") or 0
    rate = done / elapsed if done and elapsed > 0 else None
    if finished:
        eta = 0.0
    elif rate and total >= done:
        eta = round((total - done) / rate, 1)
    else:
        eta = None
    return {"unit": "epochs" if record.get("type") == "train" else "images",
            "elapsed_s": round(elapsed, 1), "rate": None if rate is None else round(rate, 3),
            "eta_s": eta}
