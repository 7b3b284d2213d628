"""Bad input through the installed `stembridge` command: exit 1, one clear line naming the
file and the reason, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

STEMBRIDGE = [sys.executable, "-m", "bridge.cli"]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*STEMBRIDGE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def make_truncated(path: Path) -> Path:
    sf.write(path, np.zeros((44100, 2), np.float32) + 0.1, 44100, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_file(path: Path) -> Path:
    path.write_text("these are my lyrics")
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def audio(path: Path, frames: int, channels: int) -> Path:
    sf.write(path, np.zeros((frames, channels)), 48000)
    return path


def folder(path: Path) -> Path:
    path.mkdir()
    return path


BAD_INPUTS = {
    "missing": (lambda p: p / "nope.wav", "nope.wav: no such file"),
    "not audio": (lambda p: text_file(p / "notes.wav"), "notes.wav: not an audio file"),
    "empty": (lambda p: empty_file(p / "empty.wav"), "empty.wav: empty file"),
    "truncated": (lambda p: make_truncated(p / "cut.wav"), "cut.wav: truncated"),
    "no frames": (lambda p: audio(p / "zero.wav", 0, 2), "zero.wav: contains no audio"),
    "surround": (lambda p: audio(p / "surround.wav", 100, 6), "surround.wav: has 6 channels"),
    "folder": (lambda p: folder(p / "bounce.wav"), "bounce.wav: is a folder"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, model_repo, case):
    make, expected = BAD_INPUTS[case]
    source = make(tmp_path)
    out = tmp_path / "out"
    result = run_cli("separate", str(source), "-o", str(out), "--model-repo", str(model_repo),
                     "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("stembridge: error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_verbose_shows_the_traceback(tmp_path, model_repo):
    result = run_cli("separate", str(tmp_path / "nope.wav"), "--verbose", "-o", str(tmp_path / "out"))
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_missing_model_offline_fails_fast_with_instructions(tmp_path, make_clip):
    source = make_clip("clip.wav", seconds=1.0)
    started = time.monotonic()
    result = run_cli("separate", str(source), "-o", str(tmp_path / "out"), "--model", "htdemucs_ft",
                     env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")})
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "model 'htdemucs_ft' is not available offline" in line and "--model-repo DIR" in line
    assert not (tmp_path / "out").exists()


def test_model_not_in_the_local_folder(tmp_path, model_repo, make_clip):
    source = make_clip("clip.wav", seconds=1.0)
    result = run_cli("separate", str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                     "--model", "mdx_extra")
    assert result.returncode == 1
    assert f"model 'mdx_extra' is not in {model_repo}" in result.stderr
    assert "htdemucs_ft" in result.stderr  # says what the folder does hold


def test_usage_errors_exit_2(tmp_path):
    result = run_cli("separate", "x.wav", "--format", "mp3")
    assert result.returncode == 2


def test_one_bad_file_among_several_does_not_stop_the_others(tmp_path, model_repo, make_clip):
    good = make_clip("good.wav", seconds=1.0)
    result = run_cli("separate", str(tmp_path / "missing.wav"), str(good), "-o", str(tmp_path / "out"),
                     "--model-repo", str(model_repo), "--quality", "preview", "--no-cache")
    assert result.returncode == 1
    assert "missing.wav: no such file" in result.stderr
    assert (tmp_path / "out" / "good" / "stems.json").exists()


def test_ctrl_c_in_a_terminal_exits_130_and_publishes_nothing(tmp_path, model_repo, make_clip):
    """SIGINT while the progress bar runs (stderr a terminal, as for a user at the keyboard):
    the calls in flight finish, then exit 130 with one line, no half-written stems."""
    import pty
    import signal

    clip = make_clip("long.wav", seconds=120.0)
    out = tmp_path / "stems"
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*STEMBRIDGE, "separate", str(clip), "-o", str(out), "--model-repo", str(model_repo),
                             "--quality", "render", "--no-cache"],
                            stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        while b"separating" not in seen:   # the progress bar's separating stage has begun
            chunk = os.read(controller, 4096)
            assert chunk, f"stembridge ended before separating: {seen.decode(errors='replace')}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        while chunk := _read_or_eof(controller):
            seen += chunk
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
        os.close(controller)
    text = seen.decode(errors="replace")
    assert "stembridge: interrupted" in text
    assert "terminate called" not in text and "Traceback" not in text
    assert not list(out.rglob("*.wav")) and not list(out.rglob("stems.json"))


def _read_or_eof(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:   # EIO: the terminal's other end closed (the process is gone)
        return b""
