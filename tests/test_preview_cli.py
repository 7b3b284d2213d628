"""`stembridge preview` and the request helpers the daemon calls (job ids, OSC replies)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import main
from bridge.errors import ConfigError
from bridge.jobs.store import DONE, JobStore
from bridge.preview import PreviewRenderer, osc_preview, resolve_target
from bridge.preview.effects import effect_names
from test_preview_stemset import STEMS, make_stem_set, noise_stems


def test_cli_renders_with_overrides_and_preset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stems = noise_stems()
    manifest = make_stem_set(tmp_path, stems)
    presets = tmp_path / "presets.toml"
    presets.write_text("[presets.bass_only]\nbass.solo = true\n")
    code = main(["preview", str(manifest.parent), "--presets-file", str(presets), "--preset", "bass_only",
                 "--set", "bass.gain_db=-6", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out == {"preview": str(manifest.parent / "song_preview.wav"), "manifest": str(manifest)}
    got = sf.read(out["preview"], dtype="float32")[0]
    np.testing.assert_allclose(got, stems["bass"] * 10 ** (-6 / 20), atol=1e-7)


def test_cli_bad_value_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    code = main(["preview", str(manifest), "--presets-file", "/dev/null", "--set", "vocals.fx=compresor:ratio=3"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("stembridge: error: vocals.fx: unknown effect 'compresor'; effects: ")
    assert err.count("\n") == 1
    assert not (manifest.parent / "song_preview.wav").exists()


def test_cli_lists_presets(capsys: pytest.CaptureFixture) -> None:
    assert main(["preview", "--list-presets", "--presets-file", "/dev/null"]) == 0
    assert capsys.readouterr().out.split() == ["a_cappella", "bassless", "drumless", "flat", "karaoke", "vocal_up"]


def test_cli_resolves_a_job_id_from_the_job_store(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    state = tmp_path / "state"
    state.mkdir()
    store = JobStore(state / "jobs.sqlite")
    try:
        job = store.add(tmp_path / "song.wav", tmp_path, "preview", {}, "osc")
        store.finish(job.id, DONE, manifest=manifest)
        pending = store.add(tmp_path / "other.wav", tmp_path, "render", {}, "osc")
    finally:
        store.close()
    assert main(["preview", job.id, "--state-dir", str(state), "--presets-file", "/dev/null"]) == 0
    assert capsys.readouterr().out.strip() == str(manifest.parent / "song_preview.wav")
    assert main(["preview", pending.id, "--state-dir", str(state), "--presets-file", "/dev/null"]) == 1
    assert f"job {pending.id} has no stems yet (state: queued)" in capsys.readouterr().err
    assert main(["preview", "nosuchjob", "--state-dir", str(state), "--presets-file", "/dev/null"]) == 1
    assert "nosuchjob: no such stems.json, stem folder or job" in capsys.readouterr().err


def test_resolve_target_without_a_store(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    assert resolve_target(str(manifest.parent)) == manifest
    with pytest.raises(ConfigError, match="abc123: no such stems.json or stem folder"):
        resolve_target("abc123")


def test_osc_preview_replies(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    jobs = {"job123": manifest}
    with PreviewRenderer(presets_file=Path("/dev/null")) as renderer:
        address, args = osc_preview(renderer, ["job123", "drums.mute=1", "preset=karaoke"], jobs.get)
        assert (address, args) == ("/stembridge/preview_ready", ["job123", str(manifest.parent / "song_preview.wav")])
        expected = sum(a for n, a in noise_stems().items() if n not in ("drums", "vocals"))
        np.testing.assert_allclose(sf.read(args[1], dtype="float32")[0], expected, atol=1e-7)
        address, args = osc_preview(renderer, ["job123", "vocals.gain_db=loud"], jobs.get)
        assert (address, args) == ("/stembridge/error", ["job123", "vocals.gain_db: expected a number, got 'loud'"])
        address, args = osc_preview(renderer, ["unknown"], jobs.get)
        assert address == "/stembridge/error" and args[0] == "unknown" and "no such" in args[1]
        assert osc_preview(renderer, [], jobs.get)[0] == "/stembridge/error"


def test_stembridge_script_entry_point(tmp_path: Path) -> None:
    # The console script as a user runs it: a fresh interpreter, exit code and stdout.
    manifest = make_stem_set(tmp_path, noise_stems())
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "preview", str(manifest), "--presets-file", "/dev/null",
                           "--set", "vocals.fx=highpassfilter:cutoff_frequency_hz=100"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(manifest.parent / "song_preview.wav")
    assert json.loads(manifest.read_text())["preview"] == "song_preview.wav"
    assert set(json.loads(manifest.read_text())["stems"]) == set(STEMS)


def test_preview_of_a_real_separation(tmp_path: Path, capsys: pytest.CaptureFixture, model_repo: Path) -> None:
    # Stems straight from `stembridge separate` (tiny model): the preview matches their rate,
    # length, channels and BWF position, and a flat preview is their sum.
    from bridge.wavio import read_time_reference, write_wav
    from conftest import multitone

    source = tmp_path / "take.wav"
    write_wav(source, multitone(1.5, 48000, 2), 48000, "24", 48000 * 60)
    assert main(["separate", str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                 "--model", "htdemucs", "--quality", "preview", "--no-cache", "--json"]) == 0
    manifest = Path(json.loads(capsys.readouterr().out.splitlines()[0])["manifest"])
    assert main(["preview", str(manifest), "--presets-file", "/dev/null", "--preset", "flat"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == manifest.parent / "take_preview.wav"
    data = json.loads(manifest.read_text())
    assert data["preview"] == "take_preview.wav"
    stems = [sf.read(manifest.parent / f, dtype="float32")[0] for f in data["stems"].values()]
    got = sf.read(path, dtype="float32")[0]
    assert got.shape == stems[0].shape == (data["frames"], 2)
    assert sf.info(path).samplerate == 48000 and read_time_reference(path) == 48000 * 60
    np.testing.assert_allclose(got, sum(s.astype(np.float64) for s in stems), atol=1e-6)


def test_osc_preview_round_trip_on_a_real_server(tmp_path: Path) -> None:
    # The daemon's OSC server, job store and job service, with the preview handler plugged in:
    # a UDP client on 127.0.0.1 asks for a preview by job id and gets preview_ready or error.
    import socket

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    from bridge.config import load_config
    from bridge.jobs.service import JobService
    from bridge.osc.server import OscServer
    from bridge.preview import preview_handler

    manifest = make_stem_set(tmp_path, noise_stems())
    config = load_config(env={}, flags={"paths.watch": ([tmp_path], "--watch"),
                                        "paths.output": (tmp_path / "out", "--output"),
                                        "paths.state_dir": (tmp_path / "state", "--state-dir")})
    (tmp_path / "state").mkdir()
    store = JobStore(config.sqlite_path)
    job = store.add(tmp_path / "song.wav", tmp_path, "preview", {}, "osc")
    store.finish(job.id, DONE, manifest=manifest)

    def from_store(job_id: str) -> Path | None:
        found = store.get(job_id)
        return found.manifest if found else None

    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(10)
    with PreviewRenderer(presets_file=Path("/dev/null")) as renderer:
        server = OscServer("127.0.0.1", 0, JobService(config, store), preview_handler=preview_handler(renderer, from_store))
        server.start()
        try:
            def ask(*args: str) -> tuple[str, list]:
                builder = OscMessageBuilder(address="/stembridge/preview")
                for arg in args:
                    builder.add_arg(arg)
                client.sendto(builder.build().dgram, ("127.0.0.1", server.port))
                reply = OscMessage(client.recvfrom(65536)[0])
                return reply.address, list(reply.params)

            assert ask(job.id, "preset=karaoke", "drums.gain_db=-6") == (
                "/stembridge/preview_ready", [job.id, str(manifest.parent / "song_preview.wav")])
            stems = noise_stems()
            expected = stems["drums"] * np.float32(10 ** (-6 / 20)) + stems["bass"] + stems["other"]
            np.testing.assert_allclose(sf.read(manifest.parent / "song_preview.wav", dtype="float32")[0],
                                       expected, atol=1e-6)
            assert ask(job.id, "vocals.fx=autotune") == (
                "/stembridge/error",
                [job.id, f"vocals.fx: unknown effect 'autotune'; effects: {', '.join(effect_names())}, or plugin:PATH"])
        finally:
            server.stop()
            client.close()
            store.close()
