"""liblo's command-line tools as a real, independent OSC peer: `oscsend` subscribes and asks
for a separation, `oscdump` receives the daemon's notifications."""

from __future__ import annotations

import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import soundfile as sf
from pythonosc.osc_message_builder import OscMessageBuilder

from helpers import await_line
from test_daemon_startup import DaemonProcess

pytestmark = [
    pytest.mark.liblo,
    pytest.mark.skipif(shutil.which("oscsend") is None or shutil.which("oscdump") is None,
                       reason="liblo-tools (oscsend, oscdump) not installed: apt-get install liblo-tools"),
]
JOB_TIMEOUT = 60.0


class OscDump:
    """`oscdump -L PORT`, its lines read on a thread so tests can await them."""

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free port for it
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.proc = subprocess.Popen(["oscdump", "-L", str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Knock until oscdump prints the knock: then it is listening (nothing else tells)."""
        deadline = time.monotonic() + timeout
        knock = OscMessageBuilder(address="/knock").build().dgram
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while time.monotonic() < deadline:
                sock.sendto(knock, ("127.0.0.1", self.port))
                try:
                    line = self.lines.get(timeout=0.2)
                except queue.Empty:
                    continue
                if line is None:
                    break
                if " /knock" in line:
                    return
        raise AssertionError(f"oscdump did not start listening on {self.port}")

    def expect(self, pattern: str, timeout: float = JOB_TIMEOUT) -> re.Match[str]:
        return await_line(self.lines, pattern, timeout, "oscdump")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def oscsend(port: int, address: str, types: str = "", *values: str) -> None:
    args = ["oscsend", "127.0.0.1", str(port), address] + ([types, *values] if types else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


def test_oscsend_subscribes_oscdump_receives_done(tmp_path: Path, model_repo: Path, make_clip) -> None:
    daemon = DaemonProcess(tmp_path, model_repo)
    dump = OscDump()
    try:
        daemon.start("--quality", "preview")
        dump.wait_ready()
        # oscsend exits at once: it subscribes oscdump's port, on its own (loopback) host.
        oscsend(daemon.port, "/stembridge/subscribe", "i", str(dump.port))
        daemon.wait_for(rf"subscriber 127\.0\.0\.1:{dump.port} added", timeout=10)

        dropped = make_clip("dropped.wav", seconds=1.0, folder=tmp_path / "staging")
        shutil.move(dropped, daemon.watch / "dropped.wav")
        queued = dump.expect(r' /stembridge/queued ss "(\w+)" "(.+)"$')
        assert queued.group(2) == str((daemon.watch / "dropped.wav").resolve())
        done = dump.expect(rf' /stembridge/done ss "{queued.group(1)}" "(.+)"$')
        manifest = Path(done.group(1))
        assert manifest.name == "stems.json" and manifest.is_relative_to(daemon.output)

        requested = make_clip("asked.wav", seconds=1.0, folder=daemon.watch / "sub", seed=3)
        oscsend(daemon.port, "/stembridge/separate", "ss", str(requested), "stems=4")
        # The watcher queues the new file too; both jobs reach the subscriber. Wait for the
        # one whose source is the requested file.
        job_ids = set()
        while True:
            line = dump.expect(r' /stembridge/(queued|done) ss "(\w+)" "(.+)"$')
            kind, job_id, path = line.groups()
            if kind == "queued" and Path(path) == requested.resolve():
                job_ids.add(job_id)
            elif kind == "done" and job_id in job_ids:
                break
        stems = sf.info(str(Path(path).parent / "asked_vocals.wav"))
        assert stems.frames == sf.info(str(requested)).frames
    finally:
        dump.stop()
        daemon.stop()
