"""Rendering previews from published stems: the mix math, effects doing what they should,
the processed-stem cache, and failures that leave no preview behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.errors import ConfigError, InputError
from bridge.manifest import read_manifest
from bridge.preview import PreviewRenderer
from bridge.preview.cache import ArrayCache
from bridge.wavio import read_time_reference, write_wav
from test_preview_stemset import RATE, STEMS, make_stem_set, noise_stems, tone


@pytest.fixture
def renderer():
    with PreviewRenderer(presets={}) as r:
        yield r


def read(path: Path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_gains_only_preview_is_the_weighted_sum(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems(seconds=1.0)
    manifest = make_stem_set(tmp_path, stems, time_reference=48000 * 3600)
    gains = {"drums": -6.0, "bass": 2.5, "other": 0.0, "vocals": 3.0}
    path = renderer.render(manifest, [f"{n}.gain_db={g}" for n, g in gains.items()])
    expected = sum(stems[n].astype(np.float64) * 10 ** (g / 20) for n, g in gains.items())
    got = read(path)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-7)
    assert path == manifest.parent / "song_preview.wav"
    assert sf.info(path).samplerate == RATE and sf.info(path).subtype == "FLOAT"
    assert read_time_reference(path) == 48000 * 3600
    assert read_manifest(manifest)["preview"] == "song_preview.wav"


def test_unity_preview_nulls_against_the_stem_sum(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems()
    got = read(renderer.render(make_stem_set(tmp_path, stems), []))
    np.testing.assert_array_equal(got, ((stems["drums"] + stems["bass"]) + stems["other"]) + stems["vocals"])


def test_mute_and_solo(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems()
    manifest = make_stem_set(tmp_path, stems)
    np.testing.assert_array_equal(read(renderer.render(manifest, ["drums.mute=1", "bass.mute=1", "other.mute=1"])),
                                  stems["vocals"])
    np.testing.assert_array_equal(read(renderer.render(manifest, ["bass.solo=1"])), stems["bass"])
    # Mute wins over solo; the other soloed stem still plays.
    np.testing.assert_array_equal(read(renderer.render(manifest, ["bass.solo=1", "bass.mute=1", "drums.solo=1"])),
                                  stems["drums"])
    assert not read(renderer.render(manifest, [f"{s}.mute=1" for s in STEMS])).any()


def test_pan_is_a_balance_control(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems()
    manifest = make_stem_set(tmp_path, stems)
    solo = ["vocals.solo=1"]
    hard_left = read(renderer.render(manifest, solo + ["vocals.pan=-1"]))
    np.testing.assert_array_equal(hard_left[:, 0], stems["vocals"][:, 0])
    assert not hard_left[:, 1].any()
    half_right = read(renderer.render(manifest, solo + ["vocals.pan=0.5", "vocals.gain_db=6"]))
    g = np.float32(10 ** (6 / 20))
    np.testing.assert_allclose(half_right[:, 0], stems["vocals"][:, 0] * g * 0.5, atol=1e-7)
    np.testing.assert_allclose(half_right[:, 1], stems["vocals"][:, 1] * g, atol=1e-7)


def test_highpass_removes_a_30_hz_tone(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = {name: np.zeros((RATE, 2), np.float32) for name in STEMS}
    stems["bass"] = tone(30, 1.0) + tone(1000, 1.0)
    manifest = make_stem_set(tmp_path, stems)
    out = read(renderer.render(manifest, ["bass.fx=highpassfilter:cutoff_frequency_hz=300;highpassfilter:cutoff_frequency_hz=300"]))
    settled = out[RATE // 4:, 0]  # after the filter's start-up transient
    t = np.arange(RATE)[RATE // 4:] / RATE
    amp_30 = 2 * abs(np.mean(settled * np.exp(-2j * np.pi * 30 * t)))
    amp_1k = 2 * abs(np.mean(settled * np.exp(-2j * np.pi * 1000 * t)))
    assert amp_30 < 0.25 * 10 ** (-30 / 20)  # at least 30 dB down
    assert amp_1k > 0.25 * 10 ** (-1 / 20)   # the 1 kHz tone passes within 1 dB


def test_master_chain_and_gain(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = {name: tone(440, 0.5, amp=0.2) for name in STEMS}
    manifest = make_stem_set(tmp_path, stems)
    loud = read(renderer.render(manifest, []))
    assert np.abs(loud).max() > 0.79  # four stems of 0.2 add to 0.8
    limited = read(renderer.render(manifest, ["master.fx=clipping:threshold_db=-12", "master.gain_db=-6"]))
    assert np.abs(limited).max() == pytest.approx(10 ** (-12 / 20) * 10 ** (-6 / 20), rel=1e-3)


def test_gain_change_reuses_processed_stems(tmp_path: Path, renderer: PreviewRenderer) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    fx = [f"{s}.fx=highpassfilter;compressor:ratio=3;reverb" for s in STEMS]
    first = read(renderer.render(manifest, fx))
    assert renderer.last_processed == sorted(STEMS)
    louder = read(renderer.render(manifest, fx + ["vocals.gain_db=6", "drums.mute=1", "bass.pan=0.3"]))
    assert renderer.last_processed == []  # nothing re-ran its effects
    assert not np.array_equal(first, louder)
    renderer.render(manifest, fx[:3] + ["vocals.fx=highpassfilter;compressor:ratio=4;reverb"])
    assert renderer.last_processed == ["vocals"]  # only the changed chain
    # The same request again gives the very same file as the first render.
    np.testing.assert_array_equal(read(renderer.render(manifest, fx)), first)


def test_replaced_stems_are_read_again(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems()
    manifest = make_stem_set(tmp_path, stems)
    renderer.render(manifest, [])
    # A render-quality set replaces the preview-quality one in place, same names.
    newer = noise_stems(seed=9)
    for name, audio in newer.items():
        write_wav(manifest.parent / f"song_{name}.wav", audio, RATE, "32f", 123456)
    got = read(renderer.render(manifest, ["bass.solo=1"]))
    np.testing.assert_array_equal(got, newer["bass"])


def test_sixteen_bit_stems_give_a_sixteen_bit_preview(tmp_path: Path, renderer: PreviewRenderer) -> None:
    manifest = make_stem_set(tmp_path, noise_stems(), bit_depth="16")
    assert sf.info(renderer.render(manifest, [])).subtype == "PCM_16"


def test_mono_set_renders_and_refuses_pan(tmp_path: Path, renderer: PreviewRenderer) -> None:
    stems = noise_stems(channels=1)
    manifest = make_stem_set(tmp_path, stems)
    got = read(renderer.render(manifest, ["drums.mute=1", "bass.mute=1", "other.mute=1"]))
    assert got.shape == (int(0.5 * RATE), 1)
    np.testing.assert_array_equal(got, stems["vocals"])
    with pytest.raises(ConfigError, match=r"vocals.pan: pan needs a stereo set; this one has 1 channel"):
        renderer.render(manifest, ["vocals.pan=0.5"])


def test_file_that_is_not_a_plugin_fails_before_writing(tmp_path: Path, renderer: PreviewRenderer) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    fake = tmp_path / "NotReally.vst3"
    fake.write_bytes(b"this is a text file, not a VST3 bundle")
    before = manifest.read_bytes()
    with pytest.raises(ConfigError, match=rf"vocals.fx: cannot load plugin {fake}: .*unsupported plugin format") as info:
        renderer.render(manifest, [f"vocals.fx=compressor;plugin:{fake}:mix=0.5"])
    assert "\n" not in str(info.value)
    assert not (manifest.parent / "song_preview.wav").exists()
    assert manifest.read_bytes() == before
    assert not [p for p in manifest.parent.iterdir() if p.name.startswith(".")]


def test_unknown_stem_and_preset_naming_other_stems(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, {n: a for n, a in noise_stems().items() if n in ("vocals", "other")})
    with PreviewRenderer(presets_file=Path("/dev/null")) as renderer:
        with pytest.raises(ConfigError, match=r"preset 'drumless': no stem 'drums' in this set; stems: other, vocals"):
            renderer.render(manifest, [], preset="drumless")
        np.testing.assert_array_equal(read(renderer.render(manifest, [], preset="karaoke")),
                                      read(manifest.parent / "song_other.wav"))


def test_missing_stem_file_is_an_input_error(tmp_path: Path, renderer: PreviewRenderer) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    (manifest.parent / "song_bass.wav").unlink()
    with pytest.raises(InputError, match=r"song_bass.wav: stem file missing; separate the source again"):
        renderer.render(manifest, [])


def test_old_preview_is_removed_after_a_rerender(tmp_path: Path) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    with PreviewRenderer(presets={}) as renderer:
        renderer.render(manifest, [])
        renderer.render(manifest, ["vocals.gain_db=1"])
    # close() waited for the deferred deletion of the superseded file.
    assert sorted(p.name for p in manifest.parent.iterdir()) == sorted(
        ["stems.json", "song_preview.wav"] + [f"song_{s}.wav" for s in STEMS])


def test_array_cache_stays_within_its_budget() -> None:
    cache = ArrayCache(max_bytes=3000)
    for key in "abcd":
        cache.put(key, np.zeros(250, np.float32))  # 1000 bytes each
    assert cache.get("a") is None and cache.get("d") is not None
    assert cache.nbytes == 3000
    cache.get("b")  # recently used: survives the next insert
    cache.put("e", np.zeros(250, np.float32))
    assert cache.get("b") is not None and cache.get("c") is None
    cache.put("huge", np.zeros(1000, np.float32))  # larger than the budget: not kept
    assert cache.get("huge") is None and cache.nbytes == 3000
    with pytest.raises(ValueError):
        cache.get("b")[0] = 1.0  # cached audio is shared between renders: read-only
    cache.demote("e")  # used last, but demoted: the first to go
    cache.put("f", np.zeros(250, np.float32))
    assert cache.get("e") is None and cache.get("b") is not None and cache.get("d") is not None


def test_processed_stems_outlive_raw_ones_in_a_small_cache(tmp_path: Path) -> None:
    # Room for the four processed stems and little else: a gain change must still not re-run
    # any effect, because raw stems are evicted first.
    stems = noise_stems()
    manifest = make_stem_set(tmp_path, stems)
    one = stems["drums"].nbytes
    fx = [f"{s}.fx=highpassfilter" for s in STEMS]
    with PreviewRenderer(presets={}, max_cache_bytes=5 * one) as renderer:
        renderer.render(manifest, fx)
        renderer.render(manifest, fx + ["vocals.gain_db=-3"])
        assert renderer.last_processed == []


def test_bad_master_plugin_fails_before_any_stem_is_processed(tmp_path: Path, renderer: PreviewRenderer) -> None:
    manifest = make_stem_set(tmp_path, noise_stems())
    fake = tmp_path / "Master.vst3"
    fake.write_bytes(b"not a plugin")
    with pytest.raises(ConfigError, match=rf"master.fx: cannot load plugin {fake}"):
        renderer.render(manifest, ["vocals.fx=reverb", f"master.fx=plugin:{fake}"])
    assert renderer.cache.nbytes == 0  # no stem was read or processed for a doomed request
    assert not (manifest.parent / "song_preview.wav").exists()


def test_auto_preview_renders_after_preview_quality_jobs(tmp_path: Path, renderer: PreviewRenderer) -> None:
    import threading

    from bridge.jobs.events import JobEvent
    from bridge.jobs.store import DONE, JobStore
    from bridge.preview.auto import AutoPreview

    draft = make_stem_set(tmp_path / "a", noise_stems())
    final = make_stem_set(tmp_path / "b", noise_stems(seed=3))
    store = JobStore(tmp_path / "jobs.sqlite")
    try:
        jobs = {}
        for name, quality, manifest in (("render", "render", final), ("preview", "preview", draft),
                                        ("broken", "preview", tmp_path / "gone" / "stems.json")):
            job = store.add(tmp_path / f"{name}.wav", tmp_path, quality, {}, "watch")
            jobs[name] = store.finish(job.id, DONE, manifest=manifest)
    finally:
        store.close()
    ready: list[tuple[str, Path]] = []
    errors: list[tuple[str, str]] = []
    both_seen = threading.Event()

    def on_error(job_id: str, message: str) -> None:
        errors.append((job_id, message))
        both_seen.set()

    auto = AutoPreview(renderer, on_ready=lambda j, p: ready.append((j, p)), on_error=on_error, preset=None)
    auto.start()
    try:
        auto(JobEvent("progress", jobs["preview"], 0.5, "separating"))  # not finished: ignored
        auto(JobEvent("done", jobs["render"]))                          # render quality: ignored
        auto(JobEvent("done", jobs["preview"]))
        auto(JobEvent("done", jobs["broken"]))
        assert both_seen.wait(30)  # in order: the broken job comes after the good one
    finally:
        auto.stop()
    assert ready == [(jobs["preview"].id, draft.parent / "song_preview.wav")]
    assert errors[0][0] == jobs["broken"].id and "no such manifest" in errors[0][1]
    assert not (final.parent / "song_preview.wav").exists()
