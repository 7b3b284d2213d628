"""`stembridge models`, `stembridge doctor`, and decoding of every supported source format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from bridge.cli import main
from conftest import multitone


def test_models_lists_the_local_folder(capsys, model_repo):
    assert main(["models", "--model-repo", str(model_repo)]) == 0
    out = capsys.readouterr().out
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s"):
        assert f"{name}  " in out or f"{name} " in out
    assert "Hugging Face cache" in out and "torch hub cache" in out and str(model_repo) in out


def test_doctor_checks_and_self_tests(tmp_path, model_repo):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "doctor", "--model-repo", str(model_repo),
                             "--osc-port", "0"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok] self-test" in result.stdout and "exact sum within" in result.stdout
    assert "all checks passed" in result.stdout
    assert (tmp_path / "Music" / "StemBridge" / "Bounces").is_dir()


def test_doctor_reports_missing_models(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "t"),
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_STATE_HOME": str(tmp_path / "state")}
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "doctor", "--osc-port", "0"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1
    assert "[!!] models" in result.stdout and "--model-repo DIR" in result.stdout


@pytest.mark.parametrize("name,fmt,subtype", [("take.aiff", "AIFF", "PCM_24"), ("take.ogg", "OGG", "VORBIS"),
                                              ("take.mp3", "MP3", "MPEG_LAYER_III")])
def test_other_source_formats(tmp_path, capsys, model_repo, name, fmt, subtype):
    source = tmp_path / name
    sf.write(source, multitone(1.5, 44100, 2), 44100, format=fmt, subtype=subtype)
    frames = sf.info(str(source)).frames
    assert main(["separate", str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                 "--quality", "preview", "--no-cache", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for stem in result["stems"].values():
        info = sf.info(stem)
        assert (info.frames, info.samplerate, info.channels) == (frames, 44100, 2)
    assert Path(result["manifest"]).parent.name == "take"


def test_command_line_starts_without_loading_torch():
    """DAW scripts call `stembridge send` per request: building the CLI must stay light."""
    code = "import sys; from bridge.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_separate_default_template_matches_the_writer():
    from bridge.commands import separate
    from bridge import output

    assert separate.DEFAULT_TEMPLATE == output.DEFAULT_TEMPLATE
