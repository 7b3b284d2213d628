"""A real `stembridge serve` process: start-up, refusal to start, prompt shutdown.

`DaemonProcess` is also the harness of the other daemon tests: it starts the daemon on a free
port with the tiny model and waits on its stderr for log lines instead of sleeping.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.jobs.store import read_jobs
from helpers import await_line

START_TIMEOUT = 15.0


class DaemonProcess:
    def __init__(self, root: Path, model_repo: Path | None = None, drain_timeout: float = 5.0) -> None:
        self.root = root
        self.state = root / "state"
        self.watch = root / "watch"
        self.output = root / "stems"
        self.model_repo = model_repo
        self.drain_timeout = drain_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()

    def command(self, *extra: str, port: int = 0) -> list[str]:
        cmd = [sys.executable, "-m", "bridge.cli", "serve", "--state-dir", str(self.state),
               "--watch", str(self.watch), "--output", str(self.output), "--osc-port", str(port),
               "--device", "cpu", "--cache-dir", str(self.root / "cache")]
        if self.model_repo:
            cmd += ["--model-repo", str(self.model_repo)]
        return cmd + list(extra)

    def env(self) -> dict[str, str]:
        return {**os.environ, "XDG_CONFIG_HOME": str(self.root / "xdg"), "PYTHONUNBUFFERED": "1",
                "STEMBRIDGE_DAEMON_DRAIN_TIMEOUT": str(self.drain_timeout),
                # Preview: one tiny model, not render's bag of four, keeps the tests quick.
                "STEMBRIDGE_ENGINE_QUALITY": "preview"}

    def start(self, *extra: str, port: int = 0, wait: bool = True) -> DaemonProcess:
        self.lines, self._queue = [], queue.Queue()
        self.proc = subprocess.Popen(self.command(*extra, port=port), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=self.env())
        # The reader gets this run's line list and queue: a killed predecessor's reader may
        # still be draining its pipe.
        threading.Thread(target=self._read, args=(self.proc, self.lines, self._queue), daemon=True).start()
        if wait:
            self.port = int(self.wait_for(r"serving on 127\.0\.0\.1:(\d+)", timeout=START_TIMEOUT).group(1))
        return self

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: list[str], lines_queue: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            lines_queue.put(line)
        lines_queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Consume stderr lines until one matches `pattern`."""
        return await_line(self._queue, pattern, timeout, f"daemon stderr:\n{self.log()}\n")

    def log(self) -> str:
        return "".join(self.lines)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        return code

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def daemon(tmp_path: Path, model_repo: Path):
    process = DaemonProcess(tmp_path, model_repo)
    yield process
    process.stop()


def test_starts_with_defaults_creates_folders_and_stops_on_sigterm(daemon: DaemonProcess) -> None:
    started = time.monotonic()
    daemon.start()
    startup = time.monotonic() - started
    assert daemon.port > 0
    for folder in (daemon.state, daemon.watch, daemon.output):
        assert folder.is_dir()
    assert (daemon.state / "jobs.sqlite").exists()
    assert list(read_jobs(daemon.state / "jobs.sqlite")) == []
    # Where the non-default values came from is logged.
    assert "config: osc.port = 0 (flag --osc-port)" in daemon.log()
    assert "config: daemon.drain_timeout = 5.0 (env STEMBRIDGE_DAEMON_DRAIN_TIMEOUT)" in daemon.log()
    stopping = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert time.monotonic() - stopping < 3.0
    assert "SIGTERM received" in daemon.log()
    assert not (daemon.state / "daemon.json").exists()
    log_file = (daemon.state / "stembridge.log").read_text()
    assert f"serving on 127.0.0.1:{daemon.port}" in log_file and "stopping" in log_file
    assert startup < START_TIMEOUT


def test_sigint_exits_zero(daemon: DaemonProcess) -> None:
    daemon.start()
    daemon.send_signal(signal.SIGINT)
    assert daemon.wait_exit() == 0


def test_busy_port_exits_3_with_one_clear_line(daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        daemon.start(port=port, wait=False)
        assert daemon.wait_exit() == 3
    errors = [line for line in daemon.lines if "error:" in line]
    assert len(errors) == 1, daemon.log()
    assert f"127.0.0.1:{port}" in errors[0] and "--osc-port" in errors[0]
    assert "Traceback" not in daemon.log()


def test_second_daemon_on_same_state_folder_exits_3(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    second = subprocess.run(daemon.command(), capture_output=True, text=True, env=daemon.env(), timeout=30)
    assert second.returncode == 3
    assert "another stembridge daemon is using this state folder" in second.stderr


def test_unwritable_state_folder_exits_3(daemon: DaemonProcess, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = subprocess.run(daemon.command("--state-dir", str(blocker / "state")), capture_output=True,
                            text=True, env=daemon.env(), timeout=30)
    assert result.returncode == 3
    assert result.stderr.strip() == f"stembridge: error: {blocker / 'state'}: state folder is not writable: Not a directory"


def test_public_address_without_allow_list_exits_3(daemon: DaemonProcess) -> None:
    result = subprocess.run(daemon.command("--osc-host", "0.0.0.0"), capture_output=True, text=True,
                            env=daemon.env(), timeout=30)
    assert result.returncode == 3
    assert "osc.host 0.0.0.0 is not a loopback address" in result.stderr and "osc.allow" in result.stderr


def test_status_command_sees_the_running_daemon(daemon: DaemonProcess) -> None:
    daemon.start()
    cmd = [sys.executable, "-m", "bridge.cli", "status", "--state-dir", str(daemon.state)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=daemon.env(), timeout=30, check=True).stdout
    assert f"daemon: running (pid {daemon.proc.pid}), OSC on 127.0.0.1:{daemon.port}" in out
    assert "no jobs yet" in out
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    out = subprocess.run(cmd, capture_output=True, text=True, env=daemon.env(), timeout=30, check=True).stdout
    assert out.startswith("daemon: not running")


class OscPeer:
    """A UDP peer on 127.0.0.1 that sends requests and reads what comes back (replies go to
    the sender's address, so one socket does both)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def send(self, port: int, address: str, *args: object) -> None:
        from pythonosc.osc_message_builder import OscMessageBuilder

        builder = OscMessageBuilder(address=address)
        for arg in args:
            builder.add_arg(arg)
        self.sock.sendto(builder.build().dgram, ("127.0.0.1", port))

    def receive(self, address: str, timeout: float = 30.0, match: object = None) -> list[object]:
        """The arguments of the next message to `address` (whose first argument equals
        `match`, if given); other messages are skipped."""
        from pythonosc.osc_message import OscMessage

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {address} within {timeout} s")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"no {address} within {timeout} s") from None
            message = OscMessage(data)
            if message.address == address and (match is None or message.params[:1] == [match]):
                return list(message.params)

    def close(self) -> None:
        self.sock.close()
