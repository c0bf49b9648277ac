"""The CLI against the embedded stack: `facesense up` with its own Redis, worker and API."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import requests

from cli.launcher import free_port
from tests.imagegen import make_folder

pytestmark = pytest.mark.slow


def facesense(*args: str, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI in a child process."""
    proc = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def wait_for_health(port: int, proc: subprocess.Popen, log: Path, timeout: float = 120) -> float:
    """Block until the API answers /healthz 200; returns the seconds it took."""
    start = time.monotonic()
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).ok:
                return time.monotonic() - start
        except requests.ConnectionError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() - start < timeout, f"no /healthz 200 within {timeout}s"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """`facesense up` on a free port with a data dir of its own; stopped with SIGTERM."""
    import torch

    from runtime.network import build_alexnet

    data = tmp_path_factory.mktemp("embedded")
    inputs = tmp_path_factory.mktemp("embedded-inputs")  # the data dir is never an input
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env.update(FACESENSE_DATA_DIR=str(data), FACESENSE_ALLOWED_ROOTS=f"{data}:{inputs}",
               FACESENSE_API_PORT=str(port), FACESENSE_SHARD_SIZE="16",
               # `classify` and the worker each choose a precision by timing: keep both on fp32
               # so their rows compare exactly (the choice itself: tests/test_precision.py)
               FACESENSE_PRECISION="fp32")
    torch.manual_seed(1)
    weights = data / "alexnet.pt"
    torch.save(build_alexnet(2).state_dict(), weights)
    imported = facesense("models", "import", str(weights), "--classes", "happy,sad",
                         "--promote", "--sample-images", "8", env=env)
    version = imported.stdout.strip()
    log = data / "up.log"  # a file, not a pipe: a pipe nobody reads fills up and blocks the stack
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", "1"],
                            env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_for_health(port, proc, log)
    yield {"env": env, "data": data, "proc": proc, "version": version, "port": port, "log": log,
           "inputs": inputs}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_models_import_registers_and_promotes(stack):
    out = facesense("models", env=stack["env"]).stdout
    assert stack["version"] in out and "production" in out
    # And the import measured each reduced precision against fp32 on generated photos
    from facesense.registry import Registry
    from facesense.storage import LocalStore
    record = Registry(LocalStore(stack["data"] / "store")).manifest(stack["version"])["precision"]
    assert record["images"] == 8 and record["sample"] == "8 generated photos"
    assert set(record["variants"]) == {"bf16", "bf16-full", "fp16", "int8"}


def test_submit_wait_and_results_through_the_cli(stack):
    folder = stack["inputs"] / "images"
    counts = make_folder(folder, 40, max_side=600)
    submitted = facesense("submit", str(folder), "--priority", "low", "--wait", env=stack["env"])
    job_id = submitted.stdout.splitlines()[0]
    assert "43/43" in submitted.stderr  # the progress bar reached the end
    record = json.loads(facesense("status", job_id, "--json", env=stack["env"]).stdout)
    summary = record["summary"]
    assert summary["overall"]["images"] == sum(counts.values())
    # the table: one line per group and one for all, each share with its Wilson interval
    lines = submitted.stdout.splitlines()
    assert lines[1] == (f"job {job_id} classify succeeded  model {stack['version']}  43/43 images, "
                        "3 failed")
    for name, tally in (*summary["groups"].items(), ("all", summary["overall"])):
        cells = [f"{c['share'] * 100:.1f}% [{c['ci95'][0] * 100:.1f}-{c['ci95'][1] * 100:.1f}]"
                 for c in tally["labels"].values()]
        row = next(line for line in lines if line.split()[:1] == [name])
        assert row.split() == [name, str(tally["scored"]), str(tally["failed"]),
                               *" ".join(cells).split()]
    significant = [c for c in summary["comparisons"] if c["significant"]]
    assert (f"significant differences ({len(significant)} of" in submitted.stdout if significant
            else "no significant differences between groups (2 comparisons;" in submitted.stdout)
    assert facesense("status", job_id, env=stack["env"]).stdout == "\n".join(lines[1:]) + "\n"
    summary_csv = stack["data"] / "summary.csv"
    facesense("results", job_id, "--summary-csv", str(summary_csv), env=stack["env"])
    assert summary_csv.read_text().splitlines() == [
        "group,label,count,share,ci95_low,ci95_high",
        *[f"{g},{c},{v['count']},{v['share']},{v['ci95'][0]},{v['ci95'][1]}"
          for g, t in summary["groups"].items() for c, v in t["labels"].items()]]

    rows = [json.loads(line) for line in facesense("results", job_id, env=stack["env"])
            .stdout.splitlines()]
    assert len(rows) == 43 and sum(1 for r in rows if r["error"]) == 3
    csv_path = stack["data"] / "out.csv"
    facesense("results", job_id, "--csv", str(csv_path), env=stack["env"])
    assert len(csv_path.read_text().splitlines()) == 44

    status = json.loads(facesense("status", job_id, "--json", env=stack["env"]).stdout)
    assert status["status"] == "succeeded" and status["model_version"] == stack["version"]
    assert status["priority"] == "low"
    assert job_id in facesense("jobs", env=stack["env"]).stdout


def test_upload_submission_keeps_sub_folders_as_groups(stack):
    folder = stack["data"] / "upload"
    make_folder(folder, 6, groups=("ad1", "ad2"), max_side=300, corrupt=False)
    submitted = facesense("submit", "--upload", str(folder), "--priority", "high", "--wait",
                          "--json", env=stack["env"])
    record = json.loads(submitted.stdout)  # --json: the record alone, for scripts
    summary = record["summary"]
    assert {g: v["images"] for g, v in summary["groups"].items()} == {"ad1": 3, "ad2": 3}
    assert {(c["a"], c["b"]) for c in summary["comparisons"]} == {("ad1", "ad2")}
    status = json.loads(facesense("status", record["id"], "--json", env=stack["env"]).stdout)
    assert status["priority"] == "high" and status == record


def test_submit_a_manifest_by_path_or_uploaded(stack, tmp_path):
    """A manifest the server can read is sent by path; one it can't (outside its roots) is
    uploaded, its absolute image paths read on the server; both rows carry their columns."""
    folder = stack["inputs"] / "manifest"
    make_folder(folder, 6, groups=("ad1", "ad2"), max_side=64, corrupt=False)
    images = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("img*"))
    (folder / "m.csv").write_text("image,cell\n" + "".join(f"{x},c{i % 2}\n"
                                                           for i, x in enumerate(images)))
    (tmp_path / "mine.csv").write_text("image,cell\n" + "".join(f"{folder / x},c{i % 2}\n"
                                                                for i, x in enumerate(images)))
    api = f"http://127.0.0.1:{stack['port']}/v1/jobs"
    for manifest, base in ((folder / "m.csv", folder.resolve().as_uri()), (tmp_path / "mine.csv", "")):
        job_id = facesense("submit", "--manifest", str(manifest), "--group-by", "cell",
                           env=stack["env"]).stdout.split()[0]
        deadline = time.monotonic() + 120
        while (record := requests.get(f"{api}/{job_id}", timeout=5).json())["status"] in (
                "queued", "running"):
            assert time.monotonic() < deadline, record
            time.sleep(0.3)
        assert record["status"] == "succeeded" and record["manifest"]["base"] == base
        assert sorted(record["summary"]["groups"]) == ["c0", "c1"]
        rows = requests.get(f"{api}/{job_id}/results", timeout=5).json()["rows"]
        assert [r["meta"]["cell"] for r in rows] == [f"c{i % 2}" for i in range(6)]
    usage = facesense("submit", "--group-by", "cell", str(folder), env=stack["env"], check=False)
    assert usage.returncode != 0 and "--group-by names a column of a manifest" in usage.stderr


def test_train_wait_prints_each_epoch_the_metrics_and_the_confusion_matrix(stack):
    from facesense.synthetic import make_dataset

    faces = stack["inputs"] / "faces"
    make_dataset(faces, per_class=8)
    params = ["--param", "epochs=2", "--param", "image_size=64", "--param", "batch_size=8",
              "--param", "patience=0", "--param", "min_steps=0", "--param", "val_split=0.34"]
    trained = facesense("train", str(faces), *params, "--wait", env=stack["env"])
    job_id, out = trained.stdout.splitlines()[0], trained.stdout
    record = json.loads(facesense("status", job_id, "--json", env=stack["env"]).stdout)
    metrics = record["metrics"]
    assert f"job {job_id} train succeeded" in out and f"model version {record['model_version']}" in out
    epochs = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [e[0] for e in epochs] == ["1", "2"]
    assert [float(e[4]) for e in epochs] == pytest.approx(
        [h["val_accuracy"] for h in record["history"]], abs=5e-4)
    assert f"validation: accuracy {metrics['accuracy']:.3f}" in out
    matrix = metrics["confusion_matrix"]
    assert "confusion matrix (rows: true class, columns: predicted):" in out
    for cls, row in zip(record["classes"], matrix, strict=True):
        assert any(line.split() == [cls, *map(str, row)] for line in out.splitlines())
    assert "not promoted" in out  # --promote never: production stays where the tests put it


def test_scoring_goes_on_while_a_long_training_runs(stack):
    # Given a training run of 1000 epochs under way on the embedded stack's default workers
    from facesense.synthetic import make_dataset

    faces = stack["inputs"] / "faces-long"
    make_dataset(faces, per_class=8)
    params = ["--param", "epochs=1000", "--param", "image_size=64", "--param", "batch_size=8",
              "--param", "patience=0", "--param", "val_split=0.34"]
    training = facesense("train", str(faces), *params, env=stack["env"]).stdout.strip()
    deadline = time.monotonic() + 120
    while (json.loads(facesense("status", training, "--json", env=stack["env"]).stdout)
           .get("epoch") or 0) < 1:
        assert time.monotonic() < deadline, "the training run did not get under way"
        time.sleep(0.5)
    # When a small scoring job is submitted, then it finishes while the training still runs
    folder = stack["inputs"] / "beside-training"
    make_folder(folder, 8, max_side=200, corrupt=False)
    start = time.monotonic()
    scored = facesense("submit", str(folder), "--wait", "--json", env=stack["env"])
    took = time.monotonic() - start
    record = json.loads(facesense("status", training, "--json", env=stack["env"]).stdout)
    facesense("cancel", training, env=stack["env"])
    assert json.loads(scored.stdout)["summary"]["overall"]["images"] == 8
    assert record["status"] == "running", record
    print(f"8 images scored in {took:.1f}s while training ran (epoch {record['epoch']})")


def test_exit_codes_say_how_a_job_ended(stack):
    folder = stack["inputs"] / "to-cancel"
    make_folder(folder, 300, max_side=64, corrupt=False)  # 19 shards: still running when cancelled
    job_id = facesense("submit", str(folder), "--priority", "low", env=stack["env"]).stdout.strip()
    facesense("cancel", job_id, env=stack["env"])
    waited = facesense("status", job_id, "--wait", env=stack["env"], check=False)
    assert waited.returncode == 3 and "cancelled" in waited.stdout.splitlines()[0]
    assert facesense("status", job_id, env=stack["env"], check=False).returncode == 3
    usage = facesense("train", str(folder), "--param", "epochs", env=stack["env"], check=False)
    assert usage.returncode == 2 and "--param needs NAME=VALUE" in usage.stderr
    assert facesense("results", env=stack["env"], check=False).returncode == 2  # argparse's


def test_models_with_no_versions_says_how_to_make_one(redis_url, tmp_path):
    from api import create_app
    from cli.main import main
    from facesense.settings import Settings
    from tests.servers import serving

    empty = Settings(redis_url=redis_url, store=str(tmp_path / "store"), allowed_roots=(str(tmp_path),))
    out = io.StringIO()
    with serving(create_app(empty)) as url, redirect_stdout(out):
        assert main(["--api", url, "models"]) == 0
    assert out.getvalue().startswith("no model versions yet. Make one:\n")
    assert "facesense train FOLDER --promote always --wait" in out.getvalue()
    assert "facesense models import WEIGHTS" in out.getvalue()


def test_errors_are_clear_and_exit_non_zero(stack):
    missing = facesense("submit", str(stack["data"] / "not-here"), env=stack["env"], check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    outside = facesense("submit", "/definitely/not/here", env=stack["env"], check=False)
    assert outside.returncode == 1 and "outside the allowed roots" in outside.stderr
    unknown = facesense("status", "0123abcd", env=stack["env"], check=False)
    assert unknown.returncode == 1 and "no job" in unknown.stderr
    down = facesense("--api", "http://127.0.0.1:9", "jobs", env=stack["env"], check=False)
    assert down.returncode == 1 and "cannot reach the API" in down.stderr


def test_classify_one_image_from_a_path_and_a_url(stack):
    import functools
    import http.server
    import threading

    from facesense.synthetic import draw_face, jpeg

    rng = __import__("random").Random(4)
    image = stack["data"] / "one.jpg"
    image.write_bytes(jpeg(draw_face(rng, True), rng))
    out = facesense("classify", str(image), env=stack["env"]).stdout.split()
    assert out[0] in ("happy", "sad") and 0.5 <= float(out[1]) <= 1

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=stack["data"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/one.jpg"
        refused = facesense("classify", url, env=stack["env"], check=False)  # the SSRF guard
        allowed = {**stack["env"], "FACESENSE_URL_ALLOW_NETWORKS": "127.0.0.1/32"}
        row = json.loads(facesense("classify", url, "--json", env=allowed).stdout)
    finally:
        server.shutdown()
    assert refused.returncode == 1 and "blocked address 127.0.0.1" in refused.stderr
    assert row["label"] == out[0] and row["model_version"] == stack["version"]
    assert set(row["probs"]) == {"happy", "sad"}
    bad = facesense("classify", str(stack["data"] / "missing.jpg"), env=stack["env"], check=False)
    assert bad.returncode == 1 and "no image file" in bad.stderr


def test_classify_with_faces_prints_a_line_per_face_with_its_box(stack):
    from bench.face_photos import group_set, matched

    _, photo, boxes = group_set(2)[1]  # three real faces
    photo.save(stack["data"] / "three.jpg", quality=92)
    lines = facesense("classify", str(stack["data"] / "three.jpg"), "--faces",
                      env=stack["env"]).stdout.splitlines()
    parsed = [re.fullmatch(r"face (\d) \[(\d+), (\d+), (\d+), (\d+)\] (happy|sad) ([0-9.]+)", line)
              for line in lines]
    assert all(parsed) and [int(m[1]) for m in parsed] == [1, 2, 3], lines
    assert matched(boxes, [tuple(int(v) for v in m.groups()[1:5]) for m in parsed]) == 3


def test_standalone_trainer_registers_and_promotes(tmp_path):
    from facesense.synthetic import make_dataset

    make_dataset(tmp_path / "faces", per_class=8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env["FACESENSE_DATA_DIR"] = str(tmp_path / "var")
    proc = subprocess.run([sys.executable, "-m", "trainer", str(tmp_path / "faces"), "--epochs",
                           "2", "--val-split", "0.34", "--image-size", "64", "--batch-size", "8",
                           "--min-steps", "0", "--store", str(tmp_path / "store"), "--promote",
                           "--force"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    manifest = json.loads((tmp_path / "store" / "models" / result["version"] /
                           "manifest.json").read_text())
    assert manifest["metrics"]["epochs_run"] == 2 and manifest["classes"] == ["happy", "sad"]
    history = json.loads((tmp_path / "store" / "models" / result["version"] /
                          "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    alias = json.loads((tmp_path / "store" / "models" / "aliases" / "production.json").read_text())
    assert alias["version"] == result["version"] and result["promotion"]["promoted"]
    # --force: a 2-epoch model may not beat chance; if not, the history says it was forced
    assert alias["history"][-1].get("forced", False) is not result["chance"]["beats_chance"]
    bad = subprocess.run([sys.executable, "-m", "trainer", str(tmp_path / "faces" / "happy"),
                          "--store", str(tmp_path / "store")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 1 and "at least 2" in bad.stderr


def children(pid: int) -> list[int]:
    """Direct child processes of pid, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def redis_child(pid: int) -> int:
    """The private redis-server among a launcher's children."""
    (found,) = [c for c in children(pid) if b"redis-server" in Path(f"/proc/{c}/cmdline").read_bytes()]
    return found


def kill_and_wait_for_replacement(pid: int, victim: int, timeout: float = 30) -> int:
    """SIGKILL one of the launcher's children; returns the pid of the child started in its place."""
    before = children(pid)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        new = [c for c in children(pid) if c not in before]
        if new and victim not in children(pid):
            return new[0]
        assert time.monotonic() < deadline, f"child {victim} was not replaced within {timeout}s"
        time.sleep(0.2)


def test_a_redis_server_killed_with_sigkill_is_restarted_with_its_data(stack):
    proc = stack["proc"]
    jobs_before = facesense("jobs", env=stack["env"]).stdout
    time.sleep(1.5)  # the append-only file is synced every second
    old = redis_child(proc.pid)
    new = kill_and_wait_for_replacement(proc.pid, old)
    assert new == redis_child(proc.pid)
    assert wait_for_health(stack["port"], proc, stack["log"], timeout=20) < 20
    assert proc.poll() is None
    assert facesense("jobs", env=stack["env"]).stdout == jobs_before  # same data, same password
    log = stack["log"].read_text()
    assert f"redis-server (pid {old}) died (killed by signal 9); restarting it in" in log
    assert f"redis-server restarted (pid {new})" in log


def test_a_worker_killed_with_sigkill_is_replaced_and_jobs_still_complete(stack):
    proc = stack["proc"]
    old = next(c for c in children(proc.pid) if b"\0inference\0" in Path(f"/proc/{c}/cmdline")
               .read_bytes())  # the scoring worker
    new = kill_and_wait_for_replacement(proc.pid, old)
    assert f"worker 0 (pid {old}) died (killed by signal 9)" in stack["log"].read_text()
    folder = stack["inputs"] / "after-kill"
    make_folder(folder, 4, max_side=200, corrupt=False)
    submitted = facesense("submit", str(folder), "--wait", "--json", env=stack["env"])
    assert json.loads(submitted.stdout)["summary"]["overall"]["images"] == 4
    assert Path(f"/proc/{new}").exists() and proc.poll() is None


def test_a_child_that_keeps_dying_stops_the_whole_stack_with_a_clear_error(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESENSE_")}
    env.update(FACESENSE_DATA_DIR=str(tmp_path), FACESENSE_API_PORT=str(port),
               FACESENSE_UP_MAX_RESTARTS="0")
    log = tmp_path / "up.log"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "up", "--workers", "0"], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for_health(port, proc, log)
        redis_pid = redis_child(proc.pid)
        os.kill(redis_pid, signal.SIGKILL)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert (f"error: redis-server (pid {redis_pid}) died (killed by signal 9), 1 time(s) within "
            "60s with FACESENSE_UP_MAX_RESTARTS=0: stopping the whole stack") in out
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_sigterm_stops_redis_worker_and_api(stack):
    proc = stack["proc"]
    kids = children(proc.pid)
    assert len(kids) == 3  # the private redis-server, one scoring worker and the training worker
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{stack['port']}/healthz", timeout=2)
    assert not [pid for pid in kids if Path(f"/proc/{pid}").exists()]
    # The private Redis kept its data on disk (append-only file) for the next start.
    assert list((stack["data"] / "redis").rglob("*.aof*"))
