"""The OSC server over real UDP on 127.0.0.1, against an in-test job service.

The service here implements the four methods the server uses (submit, cancel, jobs,
add_listener) with the real Job and JobEvent types, and lets a test play the worker's part
(progress, done, error) deterministically. The daemon end to end is in test_osc_daemon.py.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge import __version__
from bridge.errors import ConfigError, InputError
from bridge.jobs.events import JobEvent
from bridge.jobs.store import Job
from bridge.osc.server import OscServer

OPTION_KEYS = {"quality", "model", "stems", "two_stems", "exact_sum", "output", "format", "bit_depth"}


class OscPeer:
    """A DAW stand-in: one UDP socket that sends requests and reads what comes back."""

    def __init__(self, server_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.server = ("127.0.0.1", server_port)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, address: str, *args: Any, types: str | None = None) -> None:
        builder = OscMessageBuilder(address=address)
        for i, arg in enumerate(args):
            builder.add_arg(arg, types[i] if types else None)
        self.sock.sendto(builder.build().dgram, self.server)

    def recv(self, timeout: float = 5.0) -> tuple[str, list[Any]]:
        self.sock.settimeout(timeout)
        try:
            data, sender = self.sock.recvfrom(65536)
        except socket.timeout:
            raise AssertionError(f"no OSC message within {timeout} s") from None
        self.last_sender = sender
        message = OscMessage(data)
        return message.address, list(message.params)

    def recv_until(self, address: str, timeout: float = 5.0) -> list[tuple[str, list[Any]]]:
        """Everything received up to and including the first `address` message."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            got.append(self.recv(max(0.01, deadline - time.monotonic())))
            if got[-1][0] == address:
                return got

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0)
        try:
            self.sock.recvfrom(65536)
        except BlockingIOError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


class InTestService:
    """Just enough of JobService for the server: validates like the real one, records jobs."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.listeners: list[Callable[[JobEvent], None]] = []
        self.all: dict[str, Job] = {}
        self.lock = threading.Lock()

    def add_listener(self, listener: Callable[[JobEvent], None]) -> None:
        self.listeners.append(listener)

    def remove_listener(self, listener: Callable[[JobEvent], None]) -> None:
        self.listeners.remove(listener)

    def submit(self, source: Path, options: dict[str, str], origin: str,
               reply_to: tuple[str, int] | None = None) -> Job:
        resolved = source.resolve()
        if not resolved.is_relative_to(self.root):
            raise InputError(source, f"outside the allowed folders ({self.root})")
        if not resolved.is_file():
            raise InputError(source, "no such file")
        unknown = set(options) - OPTION_KEYS
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]!r}")
        with self.lock:
            job = Job(id=f"job{len(self.all) + 1}", source=resolved, state="queued", progress=0.0, stage="",
                      quality=options.get("quality", "render"), options=options, manifest=None, error=None,
                      reply_to=reply_to, origin=origin)
            self.all[job.id] = job
        self.emit("queued", job.id)
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.all.get(job_id)
        if job is None:
            raise ConfigError(f"no job with id {job_id!r}")
        if job.state != "queued":
            raise ConfigError(f"job {job_id} is already {job.state}")
        self.update(job_id, state="cancelled")
        self.emit("cancelled", job_id)
        return self.all[job_id]

    def jobs(self, job_id: str | None = None) -> list[Job]:
        if job_id is not None:
            return [self.all[job_id]] if job_id in self.all else []
        return list(self.all.values())

    # -- the worker's part, played by the tests -----------------------------------------------
    def update(self, job_id: str, **changes: Any) -> Job:
        from dataclasses import replace

        with self.lock:
            self.all[job_id] = replace(self.all[job_id], **changes)
            return self.all[job_id]

    def emit(self, kind: str, job_id: str, **fields: Any) -> None:
        event = JobEvent(kind, self.all[job_id], **fields)  # type: ignore[arg-type]
        for listener in list(self.listeners):
            listener(event)


@pytest.fixture
def bounce(make_clip) -> Path:
    return make_clip("mix.wav", seconds=0.2)


@pytest.fixture
def served(bounce: Path):
    before = set(threading.enumerate())
    service = InTestService(bounce.parent)
    servers: list[OscServer] = []
    peers: list[OscPeer] = []

    def start(**kwargs: Any) -> OscServer:
        server = OscServer("127.0.0.1", 0, service, **kwargs)
        server.start()
        servers.append(server)
        return server

    def peer(server: OscServer) -> OscPeer:
        p = OscPeer(server.port)
        peers.append(p)
        return p

    yield service, start, peer
    for p in peers:
        p.close()
    for server in servers:
        server.stop()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()], "threads leaked"


def test_ping_reply_comes_from_the_server_port(served) -> None:
    _, start, peer = served
    server = start()
    daw = peer(server)
    daw.send("/stembridge/ping")
    assert daw.recv() == ("/stembridge/pong", [__version__])
    assert daw.last_sender == ("127.0.0.1", server.port)


def test_malformed_requests_get_errors_and_the_server_keeps_serving(served, bounce: Path) -> None:
    _, start, peer = served
    daw = peer(start())
    cases = [
        (("/stembridge/nope",), None, "unknown address '/stembridge/nope'"),
        (("/stembridge/separate", 42), "i", "argument 1 must be a string, got an integer 42"),
        (("/stembridge/separate", 1.5), "f", "argument 1 must be a string, got a float 1.5"),
        (("/stembridge/cancel",), None, "/stembridge/cancel needs a string"),
        (("/stembridge/subscribe", "x"), "s", "argument 1 must be an integer"),
        (("/stembridge/separate", "/etc/passwd"), None, "/etc/passwd: outside the allowed folders"),
        (("/stembridge/separate", str(bounce.parent / "../x/../../y.wav")), None, "outside the allowed folders"),
        (("/stembridge/separate", str(bounce.parent / "missing.wav")), None, "missing.wav: no such file"),
        (("/stembridge/separate", str(bounce), "colour=red"), None, "unknown option 'colour'"),
        (("/stembridge/separate", str(bounce), "quality"), None, "option 'quality' is not key=value"),
    ]
    for args, types, message in cases:
        daw.send(*args, types=types)
        address, params = daw.recv()
        assert address == "/stembridge/error", (args, params)
        assert params[0] == "" and message in params[1], (args, params)
    daw.sock.sendto(b"definitely not OSC", daw.server)
    address, params = daw.recv()
    assert address == "/stembridge/error" and params[1].startswith("not an OSC message")
    daw.send("/stembridge/ping")
    assert daw.recv()[0] == "/stembridge/pong"


def test_separate_queued_progress_done_to_requester_and_subscriber(served, bounce: Path) -> None:
    service, start, peer = served
    server = start(progress_interval=0.1)
    daw, surface = peer(server), peer(server)
    surface.send("/stembridge/subscribe")
    assert surface.recv() == ("/stembridge/subscribed", ["127.0.0.1", surface.port])
    daw.send("/stembridge/separate", str(bounce), "quality=preview", "stems=4")
    assert daw.recv() == ("/stembridge/queued", ["job1", str(bounce.resolve())])
    assert service.all["job1"].options == {"quality": "preview", "stems": "4"}
    assert service.all["job1"].reply_to == ("127.0.0.1", daw.port)
    for i in range(200):  # a burst far above any DAW's use for it
        service.emit("progress", "job1", fraction=i / 200, stage="separate")
    manifest = bounce.parent / "mix" / "stems.json"
    service.update("job1", state="done", progress=1.0, manifest=manifest)
    service.emit("done", "job1")
    for p in (daw, surface):
        got = p.recv_until("/stembridge/done")
        progress = [m for m in got if m[0] == "/stembridge/progress"]
        assert 1 <= len(progress) <= 3, progress  # rate-limited to ~10/s per job
        assert progress[0] == ("/stembridge/progress", ["job1", 0.0, "separate"])
        assert got[-1] == ("/stembridge/done", ["job1", str(manifest)])
        if p is surface:
            assert got[0] == ("/stembridge/queued", ["job1", str(bounce.resolve())]), got


def test_subscriber_hears_watched_folder_jobs_and_errors(served, bounce: Path) -> None:
    service, start, peer = served
    server = start()
    surface = peer(server)
    surface.send("/stembridge/subscribe")
    surface.recv()
    service.submit(bounce, {}, origin="watch")  # what the watcher does: nobody to reply to
    assert surface.recv() == ("/stembridge/queued", ["job1", str(bounce.resolve())])
    service.update("job1", state="failed", error="mix.wav: truncated")
    service.emit("error", "job1", message="mix.wav: truncated")
    assert surface.recv() == ("/stembridge/error", ["job1", "mix.wav: truncated"])
    surface.send("/stembridge/unsubscribe")
    assert surface.recv() == ("/stembridge/unsubscribed", ["127.0.0.1", surface.port])
    service.submit(bounce, {}, origin="watch")
    surface.send("/stembridge/ping")  # the pong proves the queued notification was not sent
    assert surface.recv() == ("/stembridge/pong", [__version__])


def test_subscribe_for_another_port_and_bounded_set(served, bounce: Path) -> None:
    service, start, peer = served
    server = start(max_subscribers=2)
    control = peer(server)
    listeners = [peer(server) for _ in range(3)]
    for listener in listeners:  # like oscsend: subscribe from one socket for another's port
        control.send("/stembridge/subscribe", listener.port, "127.0.0.1")
        assert control.recv() == ("/stembridge/subscribed", ["127.0.0.1", listener.port])
    assert server.notifier.subscribers() == [("127.0.0.1", listeners[1].port), ("127.0.0.1", listeners[2].port)]
    service.submit(bounce, {}, origin="watch")
    for listener in listeners[1:]:
        assert listener.recv()[0] == "/stembridge/queued"
    assert listeners[0].nothing_pending()
    control.send("/stembridge/subscribe", 9001, "192.0.2.7")  # a third machine: refused
    address, params = control.recv()
    assert address == "/stembridge/error"
    assert "notifications may only go to the sender or an allowed peer, not 192.0.2.7" in params[1]
    control.send("/stembridge/subscribe", 9001, "daw.local")
    assert "'daw.local' is not an IP address" in control.recv()[1][1]


def test_cancel_status_and_unknown_jobs(served, bounce: Path) -> None:
    service, start, peer = served
    server = start()
    daw, shell = peer(server), peer(server)
    daw.send("/stembridge/separate", str(bounce))
    assert daw.recv()[0] == "/stembridge/queued"
    daw.send("/stembridge/separate", str(bounce), "quality=preview")
    assert daw.recv()[0] == "/stembridge/queued"
    shell.send("/stembridge/cancel", "job1")  # the canceller is not the requester: both hear it
    assert shell.recv() == ("/stembridge/cancelled", ["job1"])
    assert daw.recv() == ("/stembridge/cancelled", ["job1"])
    shell.send("/stembridge/cancel", "job1")
    assert shell.recv() == ("/stembridge/error", ["job1", "job job1 is already cancelled"])
    shell.send("/stembridge/cancel", "nope")
    assert shell.recv() == ("/stembridge/error", ["nope", "no job with id 'nope'"])
    shell.send("/stembridge/status")
    assert shell.recv_until("/stembridge/jobs_end") == [
        ("/stembridge/job", ["job1", "cancelled", 0.0, str(bounce.resolve())]),
        ("/stembridge/job", ["job2", "queued", 0.0, str(bounce.resolve())]),
        ("/stembridge/jobs_end", [2]),
    ]
    shell.send("/stembridge/status", "nope")
    assert shell.recv() == ("/stembridge/error", ["nope", "no job with id 'nope'"])


def test_preview_disabled_and_enabled(served, bounce: Path) -> None:
    _, start, peer = served
    plain = peer(start())
    plain.send("/stembridge/preview", "job1", "vocals.gain_db=-3")
    assert plain.recv() == ("/stembridge/error", ["job1", "previews not enabled"])

    calls = []

    def render(job_id: str, options: dict[str, str]) -> Path:
        calls.append((job_id, options))
        if job_id == "bad":
            raise ConfigError("preview option 'x' unknown")
        return bounce.parent / "preview.wav"

    daw = peer(start(preview_handler=render))
    daw.send("/stembridge/preview", "job1", "vocals.gain_db=-3", "drums.mute=1")
    assert daw.recv() == ("/stembridge/preview_ready", ["job1", str(bounce.parent / "preview.wav")])
    assert calls == [("job1", {"vocals.gain_db": "-3", "drums.mute": "1"})]
    daw.send("/stembridge/preview", "bad")
    assert daw.recv() == ("/stembridge/error", ["bad", "preview option 'x' unknown"])


def test_a_rendering_preview_does_not_hold_up_other_requests(served, bounce: Path) -> None:
    _, start, peer = served
    rendering, release = threading.Event(), threading.Event()

    def render(job_id: str, options: dict[str, str]) -> Path:
        rendering.set()
        assert release.wait(10), "the test never released the render"
        if job_id == "boom":
            raise RuntimeError("renderer bug")
        return bounce.parent / "preview.wav"

    daw = peer(start(preview_handler=render))
    daw.send("/stembridge/preview", "job1", "vocals.gain_db=-3")
    assert rendering.wait(5)
    daw.send("/stembridge/ping")        # answered while the render is still in progress
    assert daw.recv()[0] == "/stembridge/pong"
    release.set()
    assert daw.recv() == ("/stembridge/preview_ready", ["job1", str(bounce.parent / "preview.wav")])
    daw.send("/stembridge/preview", "boom")
    address, params = daw.recv()
    assert address == "/stembridge/error" and params[0] == "boom" and "renderer bug" in params[1]


def test_internal_error_costs_one_request(served, bounce: Path) -> None:
    service, start, peer = served
    daw = peer(start())

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("database gone")

    service.jobs = broken  # type: ignore[method-assign]
    daw.send("/stembridge/status")
    assert daw.recv() == ("/stembridge/error", ["", "internal error: RuntimeError: database gone"])
    daw.send("/stembridge/ping")
    assert daw.recv()[0] == "/stembridge/pong"


def test_allow_list(served) -> None:
    _, start, _ = served
    open_server = start()
    assert open_server.allowed("192.168.1.50")
    server = start(allow=["10.0.0.0/24", "192.168.1.20"])
    assert server.allowed("127.0.0.1") and server.allowed("::1")  # the local machine is trusted
    assert server.allowed("10.0.0.7") and server.allowed("192.168.1.20")
    assert not server.allowed("192.168.1.21") and not server.allowed("not-an-ip")


def test_busy_port_fails_start(served) -> None:
    _, start, _ = served
    server = start()
    with pytest.raises(OSError):
        OscServer("127.0.0.1", server.port, InTestService(Path("/"))).start()


def test_ipv6_loopback(served, bounce: Path) -> None:
    service, _, _ = served
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    server = OscServer("::1", 0, service)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"cannot bind ::1: {exc}")
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
            sock.settimeout(5)
            builder = OscMessageBuilder(address="/stembridge/separate")
            builder.add_arg(str(bounce))
            sock.sendto(builder.build().dgram, ("::1", server.port))
            reply = OscMessage(sock.recv(65536))
            assert (reply.address, reply.params[0]) == ("/stembridge/queued", "job1")
            assert service.all["job1"].reply_to == ("::1", sock.getsockname()[1])
    finally:
        server.stop()
