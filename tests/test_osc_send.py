"""`stembridge send` against a real OSC server on 127.0.0.1 (in-test job service)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import pytest

from bridge import __version__
from bridge.cli import main
from bridge.commands.send import typed_args
from bridge.errors import ConfigError
from bridge.osc.server import OscServer
from test_osc_server import InTestService


@pytest.fixture
def daemon(make_clip):
    bounce = make_clip("mix.wav", seconds=0.2)
    service = InTestService(bounce.parent)
    server = OscServer("127.0.0.1", 0, service)
    server.start()
    yield server, service, bounce
    server.stop()


def send(capsys, port: int, *argv: str) -> tuple[int, str, str]:
    code = main(["send", "--port", str(port), "--timeout", "3", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_typing_follows_the_address_space() -> None:
    # A numeric-looking job id stays a string: the table says cancel takes `s`.
    assert typed_args("/stembridge/cancel", ["20240101"], None) == ["20240101"]
    assert typed_args("/stembridge/subscribe", ["9001", "127.0.0.1"], None) == [9001, "127.0.0.1"]
    assert typed_args("/stembridge/separate", ["/a.wav", "stems=6", "quality=preview"], None) == \
        ["/a.wav", "stems=6", "quality=preview"]
    # Elsewhere numbers are guessed, and --types forces any type, a string included.
    assert typed_args("/mixer/fader", ["1", "0.5", "vox"], None) == [1, 0.5, "vox"]
    assert typed_args("/mixer/name", ["42"], "s") == ["42"]
    with pytest.raises(ConfigError, match="--types 'x': give one of s, i, f for each of the 1 argument"):
        typed_args("/a", ["1"], "x")
    with pytest.raises(ConfigError, match="/stembridge/subscribe: argument 'abc' must be an integer"):
        typed_args("/stembridge/subscribe", ["abc"], None)


def test_ping_and_status(daemon, capsys) -> None:
    server, service, bounce = daemon
    assert send(capsys, server.port, "/stembridge/ping") == (0, f"/stembridge/pong {__version__}\n", "")
    service.submit(bounce, {}, origin="watch")
    code, out, _ = send(capsys, server.port, "/stembridge/status")
    assert code == 0
    assert out.splitlines() == [f"/stembridge/job job1 queued 0 {bounce.resolve()}", "/stembridge/jobs_end 1"]
    code, out, _ = send(capsys, server.port, "--json", "/stembridge/status", "job1")
    assert [json.loads(line)["address"] for line in out.splitlines()] == ["/stembridge/job", "/stembridge/jobs_end"]


def test_separate_relative_path_and_wait_for_done(daemon, capsys, monkeypatch) -> None:
    server, service, bounce = daemon
    manifest = bounce.parent / "mix" / "stems.json"

    def finish(event) -> None:  # play the worker: finish the job once it is queued
        if event.kind == "queued":
            def later() -> None:
                service.emit("progress", event.job.id, fraction=0.5, stage="separate")
                service.update(event.job.id, state="done", manifest=manifest)
                service.emit("done", event.job.id)
            threading.Timer(0.2, later).start()

    service.add_listener(finish)
    monkeypatch.chdir(bounce.parent)
    code, out, err = send(capsys, server.port, "--wait", "/stembridge/separate", "mix.wav", "quality=preview")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"/stembridge/queued job1 {bounce.resolve()}",
        "/stembridge/progress job1 0.5 separate",
        f"/stembridge/done job1 {manifest}",
    ]
    assert service.all["job1"].options == {"quality": "preview"}


def test_error_reply_exits_1_with_the_message(daemon, capsys) -> None:
    server, _, bounce = daemon
    code, out, err = send(capsys, server.port, "/stembridge/separate", "/etc/passwd")
    assert code == 1 and out == ""
    assert err == f"stembridge: error: /etc/passwd: outside the allowed folders ({bounce.parent.resolve()})\n"
    code, _, err = send(capsys, server.port, "/stembridge/cancel", "20240101")
    assert code == 1 and err == "stembridge: error: job 20240101: no job with id '20240101'\n"


def test_no_reply_times_out(capsys) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent.bind(("127.0.0.1", 0))
    try:
        code = main(["send", "--port", str(silent.getsockname()[1]), "--timeout", "0.3", "/stembridge/ping"])
    finally:
        silent.close()
    err = capsys.readouterr().err
    assert code == 1
    assert "no reply to /stembridge/ping from 127.0.0.1:" in err and "is `stembridge serve` running" in err


def test_installed_script_exit_codes(daemon) -> None:
    server, _, _ = daemon
    ok = subprocess.run([sys.executable, "-m", "bridge.cli", "send", "--port", str(server.port), "/stembridge/ping"],
                        capture_output=True, text=True, timeout=30)
    assert (ok.returncode, ok.stdout) == (0, f"/stembridge/pong {__version__}\n")
    bad = subprocess.run([sys.executable, "-m", "bridge.cli", "send", "--port", str(server.port), "/stembridge/nope"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1
    assert bad.stderr.startswith("stembridge: error: unknown address '/stembridge/nope'")
