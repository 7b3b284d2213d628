"""The daemon's lifecycle, in one place: what starts in which order, and the reverse on stop.

Start: check config → folders → single-instance lock → log file → job store (crash recovery)
→ OSC server → watcher (plus the bounces made while no daemon ran) → worker → "serving on
HOST:PORT". Stop: the reverse. Nothing that can fail at start-up (busy port, unwritable
folder) is left half-started: every started part is registered on an ExitStack right after
it starts.

Signals: the first SIGINT/SIGTERM drains (the running job finishes within
`daemon.drain_timeout`, else it is re-queued for the next start) and the process exits 0; a
second one exits at once (130). Jobs stay durable either way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import logging.handlers
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from bridge import __version__
from bridge.config import Config
from bridge.errors import ConfigError, StartupError, StemBridgeError
from bridge.jobs.service import JobService
from bridge.jobs.store import JobStore


if TYPE_CHECKING:
    from bridge.preview import PreviewRenderer
    from bridge.watcher import FolderWatcher

log = logging.getLogger("bridge.daemon")

LOG_FILE = "stembridge.log"
LOCK_FILE = "daemon.lock"
INFO_FILE = "daemon.json"  # pid and OSC address of the running daemon, for `stembridge status`


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: Config) -> None:
    if not is_loopback(config.osc_host) and not config.osc_allow:
        raise StartupError(
            f"osc.host {config.osc_host} is not a loopback address: list the peers that may send "
            "requests in osc.allow (config file or STEMBRIDGE_OSC_ALLOW), or use 127.0.0.1")


def ensure_folder(path: Path, purpose: str, writable: bool = True) -> None:
    """Create `path` if needed and prove it usable now, rather than at the first job."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if writable:
            with tempfile.TemporaryFile(dir=path, prefix=".stembridge-probe-"):
                pass
        elif not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        need = "writable" if writable else "readable"
        raise StartupError(f"{path}: {purpose} folder is not {need}: {exc.strerror or exc}") from None


class Daemon:
    def __init__(self, config: Config, verbose: bool = False) -> None:
        self.config = config
        self.verbose = verbose
        self.service: JobService | None = None
        self.osc_port: int | None = None
        self._worker_ended = True
        self._stop = threading.Event()

    # -- the whole life ------------------------------------------------------------------
    def run(self) -> int:
        """Start, serve until a signal, stop. Must be called from the main thread."""
        signals_seen = 0

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen > 1:
                os.write(2, b"stembridge: second signal: exiting now (queued and running jobs resume at the next start)\n")
                os._exit(130)
            log.info("%s received: stopping (send it again to exit at once)", signal.Signals(signum).name)
            self._stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with self.running():
                self._stop.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("stopped")
        if not self._worker_ended:
            # The worker thread is still loading the model (or stuck in a separation that
            # ignored cancellation); nothing it holds needs saving, and interpreter shutdown
            # would wait for it on the import lock. Everything else is closed and flushed.
            logging.shutdown()
            sys.stderr.flush()
            os._exit(0)
        return 0

    def stop(self) -> None:
        self._stop.set()

    @contextlib.contextmanager
    def running(self) -> Iterator[Daemon]:
        """Everything started, in order; on exit (or a failed start) stopped in reverse."""
        config = self.config
        with contextlib.ExitStack() as stack:
            check_config(config)
            ensure_folder(config.paths_state_dir, "state")
            ensure_folder(config.paths_output, "output")
            for folder in config.paths_watch:
                ensure_folder(folder, "watch", writable=False)
            stack.enter_context(_instance_lock(config.paths_state_dir))
            stack.enter_context(_file_logging(config, self.verbose))
            for key, value, origin in config.non_default():
                log.info("config: %s = %s (%s)", key, _show(value), origin)

            store = JobStore(config.sqlite_path)
            stack.callback(store.close)
            self.service = JobService(config, store)
            self.service.recover()

            # Intake first, worker last: a busy port fails start-up before any job begins, and
            # on the way down the worker drains while OSC can still deliver its notifications
            # (requests arriving meanwhile are queued durably for the next start).
            renderer = self._start_previews(stack)
            self.osc_port = self._start_osc(stack, renderer)
            self._start_watcher(stack, store)
            self.service.start()
            stack.callback(self._stop_service)

            _write_info(config, self.osc_port)
            stack.callback((config.paths_state_dir / INFO_FILE).unlink, missing_ok=True)
            pending = len(self.service.pending())
            log.info("stems go to %s%s", config.paths_output, f"; {pending} jobs to resume" if pending else "")
            log.info("serving on %s:%d", config.osc_host, self.osc_port)
            yield self
            log.info("stopping")

    # -- parts -----------------------------------------------------------------------------
    def _start_previews(self, stack: contextlib.ExitStack) -> "PreviewRenderer":
        """One renderer for OSC requests and automatic previews: its processed-stem cache is
        what makes a re-mix instant."""
        from bridge.jobs.events import JobEvent
        from bridge.preview import AutoPreview, PreviewRenderer, set_job_resolver

        config = self.config
        service = self.service
        assert service is not None
        renderer = PreviewRenderer(presets_file=config.preview_presets_file,
                                   max_cache_bytes=config.preview_cache_mb * 1024 * 1024)
        stack.callback(renderer.close)
        set_job_resolver(self._manifest_of)
        stack.callback(set_job_resolver, None)
        if config.preview_auto:
            def ready(job_id: str, path: Path) -> None:
                job = service.store.get(job_id)
                if job is not None:
                    service.announce(JobEvent("preview_ready", job, message=str(path)))

            auto = AutoPreview(renderer, ready, preset=config.preview_preset)
            auto.start()
            stack.callback(auto.stop, 10.0)
            service.add_listener(auto)
            stack.callback(service.remove_listener, auto)
        return renderer

    def _manifest_of(self, job_id: str) -> Path | None:
        job = self.service.store.get(job_id) if self.service is not None else None
        return job.manifest if job is not None else None

    def _preview_handler(self, render: Callable[[str, dict[str, str]], Path]) -> Callable[[str, dict[str, str]], Path]:
        """OSC previews name a job, or a stem set inside the output folder: a request must not
        make the daemon write next to arbitrary files."""
        output = self.config.paths_output.resolve()

        def handle(target: str, options: dict[str, str]) -> Path:
            if self._manifest_of(target) is None and not Path(target).resolve().is_relative_to(output):
                raise ConfigError(f"{target}: no such job (or stem set in {output})")
            return render(target, options)

        return handle

    def _start_osc(self, stack: contextlib.ExitStack, renderer: "PreviewRenderer") -> int:
        from bridge.osc.server import OscServer
        from bridge.preview import preview_handler

        config = self.config
        server = OscServer(config.osc_host, config.osc_port, self.service, list(config.osc_allow),
                           max_subscribers=config.osc_max_subscribers,
                           preview_handler=self._preview_handler(preview_handler(renderer, self._manifest_of)))
        try:
            server.start()
        except StemBridgeError:
            raise
        except OSError as exc:
            raise StartupError(
                f"cannot listen for OSC on {config.osc_host}:{config.osc_port}: {exc.strerror or exc} "
                "(is another stembridge running? choose another port with --osc-port)") from None
        stack.callback(server.stop)
        return int(server.port)

    def _start_watcher(self, stack: contextlib.ExitStack, store: JobStore) -> None:
        from bridge.catchup import record_start
        from bridge.watcher import FolderWatcher

        config = self.config
        # The daemon's own outputs and state must never become jobs, even when they sit
        # inside a watched folder.
        ignore = [config.paths_output, config.paths_state_dir]
        watcher = FolderWatcher(list(config.paths_watch), ignore, self._on_bounce)
        started = time.time()
        watcher.start()
        stack.callback(watcher.stop)
        # Watching already: a bounce landing during the scan is seen by one or the other (both
        # is harmless: the watcher reports each write once).
        self._catch_up(watcher, store, ignore)
        record_start(config.paths_state_dir, started)

    def _catch_up(self, watcher: "FolderWatcher", store: JobStore, ignore: list[Path]) -> None:
        """Hand the watcher the bounces made since the previous start that no job read."""
        from bridge.catchup import missed_bounces, previous_start

        config = self.config
        since = previous_start(config.paths_state_dir)
        if since is None:
            log.info("first start: files already in the watched folders are left alone")
            return
        missed = list(missed_bounces(list(config.paths_watch), ignore, since, store.last_queued_by_source()))
        names = ", ".join(p.name for p in missed[:5]) + (" ..." if len(missed) > 5 else "")
        log.info("%d bounce(s) made while stembridge was not running%s", len(missed), f": {names}" if missed else "")
        watcher.consider(missed)

    def _on_bounce(self, path: Path) -> None:
        assert self.service is not None
        try:
            self.service.submit(path, {}, origin="watch")
        except StemBridgeError as exc:
            log.warning("not queued: %s", exc)
        except Exception:  # the watcher's thread must survive whatever one file does
            log.exception("not queued: %s", path)

    def _stop_service(self) -> None:
        assert self.service is not None
        timeout = self.config.daemon_drain_timeout
        running = self.service.running()
        if running is not None:
            log.info("waiting up to %.0f s for job %s to finish", timeout, running.id)
        self._worker_ended = self.service.stop(timeout)


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


@contextlib.contextmanager
def _instance_lock(state_dir: Path) -> Iterator[None]:
    """One daemon per state folder: two would run every job twice. The OS drops the lock
    when the process dies, so a crash never leaves a stale lock behind."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the port check still stops a second daemon
        yield
        return
    path = state_dir / LOCK_FILE
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise StartupError(f"{state_dir}: another stembridge daemon is using this state folder") from None
        yield
    finally:
        handle.close()


@contextlib.contextmanager
def _file_logging(config: Config, verbose: bool) -> Iterator[None]:
    root = logging.getLogger()
    level = logging.DEBUG if verbose else getattr(logging, config.daemon_log_level.upper())
    previous_level = root.level
    root.setLevel(level)
    handler = logging.handlers.RotatingFileHandler(
        config.paths_state_dir / LOG_FILE, maxBytes=2 * 1024 * 1024, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(previous_level)


def _write_info(config: Config, port: int) -> None:
    from bridge.atomic import write_bytes_atomic

    info = {"pid": os.getpid(), "osc_host": config.osc_host, "osc_port": port,
            "version": __version__, "started": time.time()}
    write_bytes_atomic(config.paths_state_dir / INFO_FILE, json.dumps(info).encode())
