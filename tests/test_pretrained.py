"""ImageNet weights for pretrained=true: download, hash check, one store copy, refusal at submit.

Weights made here with torch are served by a real HTTP server on 127.0.0.1 under names that carry
their own SHA-256 prefix, as torchvision names its files; the shared copy lives in the real S3.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
import torchvision

from api import create_app
from facesense.errors import ConfigError, ModelError, TransientError
from facesense.inputs.netguard import Limits
from facesense.pretrained import (
    ANYWHERE,
    PretrainedUnavailable,
    _within,
    check_available,
    download,
    file_name,
    pretrained_state_bytes,
    store_key,
    weights_url,
)
from facesense.settings import Settings
from facesense.storage import LocalStore, store_from_settings
from tests.imagegen import make_folder

TORCHVISION_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


class WeightsServer:
    """Files by path on 127.0.0.1 (GET and HEAD), counting GETs; with a barrier, GETs wait for
    one another, so that two downloads are certainly in flight at once."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.barrier: threading.Barrier | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                server.gets.append(self.path)
                if server.barrier:
                    server.barrier.wait(timeout=30)
                self._answer(body=True)

            def _answer(self, body: bool):
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:  # a client that stops at the size cap hangs up mid-answer
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, data: bytes, name: str | None = None) -> str:
        """Serve data under name (default: alexnet-test-<its hash prefix>.pth); its URL."""
        name = name or f"alexnet-test-{hashlib.sha256(data).hexdigest()[:8]}.pth"
        self.files[f"/models/{name}"] = data
        return f"{self.folder}{name}"

    @property
    def folder(self) -> str:
        """The URL of the folder every file is served from."""
        return f"http://127.0.0.1:{self.httpd.server_port}/models/"


@pytest.fixture(scope="module")
def server():
    srv = WeightsServer()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def weights(seed: int) -> bytes:
    """A real torch .pth file: AlexNet's convolutional layers (10 MB), seeded."""
    torch.manual_seed(seed)
    model = torchvision.models.alexnet(weights=None)
    state = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def dead_url(name: str = "alexnet-test-0123abcd.pth") -> str:
    """A loopback URL of a file called name, where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/{name}"


def test_the_url_setting_names_a_file_or_a_mirror_folder():
    assert Settings().pretrained_url == TORCHVISION_URL
    assert weights_url(Settings()) == TORCHVISION_URL
    assert file_name(Settings()) == "alexnet-owt-7be5be79.pth"
    mirror = Settings(pretrained_url="http://mirror.internal/torch/models/")
    assert weights_url(mirror) == "http://mirror.internal/torch/models/alexnet-owt-7be5be79.pth"
    off = Settings(pretrained_url="")
    assert weights_url(off) == "" and store_key(off) == "pretrained/alexnet-owt-7be5be79.pth"
    with pytest.raises(ConfigError, match="SHA-256"):
        file_name(Settings(pretrained_url="http://mirror.internal/alexnet.pth"))


def test_first_use_downloads_checks_and_keeps_the_file_then_reads_the_store(server, tmp_path):
    # Given weights served under a name carrying their hash, and an empty store
    data = weights(1)
    settings = Settings(pretrained_url=server.serve(data))
    store = LocalStore(str(tmp_path))
    before = len(server.gets)
    # When they are first asked for, Then they are downloaded, checked and kept
    assert pretrained_state_bytes(store, settings) == data
    assert store.get(store_key(settings)) == data
    assert list(store.list("pretrained/")) == [store_key(settings)]
    # And a second use reads the store copy: no second download
    assert pretrained_state_bytes(store, settings) == data
    assert len(server.gets) - before == 1
    assert "features.0.weight" in torch.load(io.BytesIO(data), weights_only=True)


def test_a_whole_alexnet_file_streams_through_and_loads_into_the_network(server, tmp_path):
    # Given torchvision's AlexNet saved as its ImageNet file is (233 MiB), served under its hash
    model = torchvision.models.alexnet(weights=None)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    settings = Settings(pretrained_url=server.serve(buf.getvalue()))
    # When it is fetched, Then the bytes load weights-only into a fresh AlexNet, as the trainer does
    data = pretrained_state_bytes(LocalStore(str(tmp_path)), settings)
    fresh = torchvision.models.alexnet(weights=None)
    fresh.load_state_dict(torch.load(io.BytesIO(data), weights_only=True))
    assert torch.equal(fresh.classifier[6].weight, model.classifier[6].weight)


def test_a_file_that_fails_its_hash_is_refused_and_not_kept(server, tmp_path):
    # Given a server sending other bytes than the name's hash promises
    promised = hashlib.sha256(weights(2)).hexdigest()[:8]
    url = server.serve(weights(3), name=f"alexnet-test-{promised}.pth")
    settings, store = Settings(pretrained_url=url), LocalStore(str(tmp_path))
    # When they are asked for, Then the job's error names both hashes and nothing is kept
    with pytest.raises(ModelError, match=f"fails its hash check.*promises {promised}"):
        pretrained_state_bytes(store, settings)
    assert list(store.list()) == []


def test_a_mirror_folder_is_asked_for_torchvisions_file_name_and_checked_against_it(server,
                                                                                    tmp_path):
    server.serve(weights(4), name="alexnet-owt-7be5be79.pth")  # not torchvision's bytes
    settings = Settings(pretrained_url=server.folder)
    with pytest.raises(ModelError, match="promises 7be5be79"):
        pretrained_state_bytes(LocalStore(str(tmp_path)), settings)
    assert server.gets[-1] == "/models/alexnet-owt-7be5be79.pth"


def test_a_damaged_store_copy_is_replaced_by_a_checked_download(server, tmp_path):
    data = weights(5)
    settings, store = Settings(pretrained_url=server.serve(data)), LocalStore(str(tmp_path))
    store.put(store_key(settings), data[:1000])  # a truncated copy
    assert pretrained_state_bytes(store, settings) == data
    assert store.get(store_key(settings)) == data


def test_downloads_over_the_size_cap_stop_and_keep_nothing(server, tmp_path):
    data = weights(6)
    url = server.serve(data)
    sink = io.BytesIO()
    with pytest.raises(PretrainedUnavailable, match="too large"):
        download(url, sink, "0" * 8, Limits(max_bytes=1 << 20, allow=ANYWHERE))
    assert len(sink.getvalue()) <= 1 << 20


def test_without_network_or_store_copy_workers_get_a_clear_error(server, tmp_path):
    store = LocalStore(str(tmp_path))
    with pytest.raises(TransientError, match="connection refused"):  # worth a retry
        pretrained_state_bytes(store, Settings(pretrained_url=dead_url()))
    missing = server.folder + "absent-0123abcd.pth"
    with pytest.raises(PretrainedUnavailable, match="http 404"):  # a retry won't help
        pretrained_state_bytes(store, Settings(pretrained_url=missing))
    with pytest.raises(PretrainedUnavailable, match=r"downloads are off.*pretrained/alexnet-owt"):
        pretrained_state_bytes(store, Settings(pretrained_url=""))


def test_two_workers_on_one_bucket_end_with_one_shared_copy(server, settings, unique):
    # Given two worker processes with stores on one S3 bucket, and weights not yet there
    data = weights(7)
    url = server.serve(data)
    shared = settings.replace(store=f"{settings.store_url}-pretrained-{unique}", pretrained_url=url)
    server.barrier = threading.Barrier(2)  # both downloads in flight: a race for the store key
    before = len(server.gets)
    try:
        digests = run_workers(shared, 2)
    finally:
        server.barrier = None
    assert len(server.gets) - before == 2
    # Then both got the checked file, and the bucket holds one copy of it
    assert digests == [hashlib.sha256(data).hexdigest()] * 2
    store = store_from_settings(shared)
    assert list(store.list("pretrained/")) == [store_key(shared)]
    assert store.get(store_key(shared)) == data
    # And a third worker without any network reads that copy
    offline = shared.replace(pretrained_url=dead_url(file_name(shared)))
    assert check_available(store, offline) == "store"
    assert run_workers(offline, 1) == [hashlib.sha256(data).hexdigest()]


def run_workers(settings: Settings, count: int) -> list[str]:
    """Start count processes that each fetch the weights from their own store; their digests."""
    code = ("import hashlib; from facesense.settings import Settings; "
            "from facesense.storage import store_from_settings; "
            "from facesense.pretrained import pretrained_state_bytes; s = Settings.from_env(); "
            "print(hashlib.sha256(pretrained_state_bytes(store_from_settings(s), s)).hexdigest())")
    env = {**os.environ, **settings.env()}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(count)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * count, [err[-2000:] for _, err in outs]
    return [out.strip() for out, _ in outs]


def train_request(client, dataset: str, **params):
    return client.post("/v1/jobs", json={"type": "train", "dataset": dataset,
                                         "params": {"pretrained": True, **params}})


def test_submission_is_refused_when_neither_store_copy_nor_url_is_there(settings, base_dir,
                                                                       unique):
    dataset = base_dir / f"labelled-{unique}"
    dataset.mkdir()
    client = create_app(settings.replace(pretrained_url=dead_url())).test_client()
    resp = train_request(client, str(dataset))
    assert resp.status_code == 409
    error = resp.get_json()["error"]
    assert error["code"] == "pretrained_unavailable"
    for words in ("no copy at pretrained/alexnet-test-0123abcd.pth", "not reachable",
                  "FACESENSE_PRETRAINED_URL", "copy the file into the store at s3://",
                  "pretrained=false"):
        assert words in error["message"]
    off = create_app(settings.replace(pretrained_url="")).test_client()
    assert "downloads are off" in train_request(off, str(dataset)).get_json()["error"]["message"]


def test_submission_is_accepted_when_the_url_answers_or_the_store_has_the_file(
        server, settings, base_dir, unique):
    dataset = base_dir / f"labelled-{unique}"
    make_folder(dataset, 2, groups=("happy", "sad"), max_side=64, corrupt=False)  # a valid layout
    data = weights(8)
    reachable = settings.replace(pretrained_url=server.serve(data))
    before = len(server.gets)
    assert check_available(store_from_settings(reachable), reachable) == "url"
    assert len(server.gets) == before  # a HEAD: nothing downloaded at submission
    store_only = reachable.replace(pretrained_url=dead_url(file_name(reachable)))
    store_from_settings(settings).put(store_key(store_only), data)  # copied by hand, offline
    for s in (reachable, store_only):
        client = create_app(s).test_client()
        resp = train_request(client, str(dataset))
        assert resp.status_code == 202, resp.get_json()
        client.post(f"/v1/jobs/{resp.get_json()['id']}/cancel")  # no worker should train it


def test_the_reachability_check_gives_up_after_the_connect_timeout(tmp_path):
    with socket.socket() as listener:  # accepts connections but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/alexnet-test-0123abcd.pth"
        start = time.monotonic()
        with pytest.raises(PretrainedUnavailable, match="timed out"):
            check_available(LocalStore(str(tmp_path)),
                            Settings(pretrained_url=url, url_connect_timeout_s=1))
        # the 1 s limit (and the 2 s guard around it) holds: the listener never answers, so a
        # check without them would hang (a bound this loose never flakes on a loaded machine)
        assert time.monotonic() - start < 10
    assert _within(0.1, lambda: time.sleep(2), late="late") == "late"  # a name lookup that hangs
