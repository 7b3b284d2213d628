"""The stem cache: a hit never separates and gives identical files; damaged entries are
detected and recomputed, never returned; the size cap evicts least recently used entries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bridge.cache import StemCache, cache_key
from bridge.pipeline import EngineSettings, SeparationRequest, Separator


@pytest.fixture
def separator(tmp_path, model_repo) -> Separator:
    return Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=tmp_path / "cache"))


def run(separator: Separator, source: Path, out: Path, **kw) -> tuple[Path, list[str]]:
    stages: list[str] = []
    manifest = separator.run(SeparationRequest(source, out, model="htdemucs", quality="preview", **kw),
                             progress=lambda fraction, stage: stages.append(stage))
    return manifest, stages


def stem_bytes(manifest: Path) -> dict[str, bytes]:
    data = json.loads(manifest.read_text())
    return {name: (manifest.parent / file).read_bytes() for name, file in data["stems"].items()}


def test_hit_is_identical_and_never_separates(tmp_path, separator, make_clip):
    source = make_clip("clip.wav", seconds=2.0)
    first, stages = run(separator, source, tmp_path / "a")
    assert "separating" in stages
    second, stages = run(separator, source, tmp_path / "b")
    assert "separating" not in stages
    assert stem_bytes(first) == stem_bytes(second)


def test_a_hit_names_the_device_that_made_its_stems(tmp_path, separator, make_clip):
    """Entries are shared across devices (a cache folder synced from a Mac, a GPU box's stems
    reused on its CPU); the manifest must say where the stems came from, not where it ran."""
    source = make_clip("clip.wav", seconds=2.0)
    first, _ = run(separator, source, tmp_path / "a")
    assert json.loads(first.read_text())["device"] == "cpu"
    [record_file] = (tmp_path / "cache").glob("*/*/entry.json")
    record = json.loads(record_file.read_text())
    assert record["device"] == "cpu"
    record_file.write_text(json.dumps({**record, "device": "mps"}))  # as a Mac sharing the folder writes it
    second, stages = run(separator, source, tmp_path / "b")
    assert "separating" not in stages
    assert json.loads(second.read_text())["device"] == "mps"


def test_other_output_formats_reuse_the_entry(tmp_path, separator, make_clip):
    source = make_clip("clip.wav", seconds=2.0, rate=48000)
    run(separator, source, tmp_path / "a")
    _, stages = run(separator, source, tmp_path / "b", format="flac", bit_depth="16", exact_sum=True)
    assert "separating" not in stages


def test_different_audio_of_equal_length_and_edges_does_not_collide(tmp_path, separator, make_clip):
    """The seed's cache keyed on the first and last samples: bounces framed by silence collided."""
    a = make_clip("a.wav", seconds=3.0, seed=1)
    b = make_clip("b.wav", seconds=3.0, seed=2)
    for path in (a, b):
        import soundfile as sf
        data, rate = sf.read(path, always_2d=True)
        data[:20000] = 0
        data[-20000:] = 0
        sf.write(path, data, rate)
    run(separator, a, tmp_path / "a")
    _, stages = run(separator, b, tmp_path / "b")
    assert "separating" in stages


def test_parameters_are_part_of_the_key():
    base = {"model": "htdemucs", "shifts": 0, "overlap": 0.1}
    keys = {cache_key("h", base), cache_key("h", {**base, "shifts": 1}), cache_key("h", {**base, "overlap": 0.25}),
            cache_key("h", {**base, "model": "htdemucs_ft"}), cache_key("h2", base)}
    assert len(keys) == 5


@pytest.mark.parametrize("damage", ["flip bytes", "truncate stem", "bad record", "missing stem"])
def test_damaged_entry_is_recomputed_not_returned(tmp_path, separator, make_clip, damage):
    source = make_clip("clip.wav", seconds=2.0)
    first, _ = run(separator, source, tmp_path / "a")
    [entry] = [p.parent for p in (tmp_path / "cache").glob("*/*/entry.json")]
    stem = entry / "vocals.npy"
    if damage == "flip bytes":
        data = bytearray(stem.read_bytes())
        data[-1000:-990] = bytes(10)
        data[-5000] ^= 0xFF
        stem.write_bytes(bytes(data))
    elif damage == "truncate stem":
        stem.write_bytes(stem.read_bytes()[:-4096])
    elif damage == "bad record":
        (entry / "entry.json").write_text("{not json")
    else:
        stem.unlink()
    second, stages = run(separator, source, tmp_path / "b")
    assert "separating" in stages
    assert stem_bytes(second) == stem_bytes(first)
    third, stages = run(separator, source, tmp_path / "c")  # the entry was rewritten whole
    assert "separating" not in stages


def test_lru_eviction_keeps_the_cache_under_its_cap(tmp_path, model_repo, make_clip):
    cache_dir = tmp_path / "cache"
    sep = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=cache_dir))
    clips = [make_clip(f"c{i}.wav", seconds=1.0, seed=i) for i in range(3)]
    run(sep, clips[0], tmp_path / "o")
    entry_size = sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
    cap = int(entry_size * 2.5)
    sep = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=cache_dir, cache_max_bytes=cap))
    run(sep, clips[1], tmp_path / "o")
    first_entry = next(p for p in cache_dir.glob("*/*/entry.json"))
    os.utime(first_entry, (1, 1))  # make one entry clearly the least recently used
    oldest = first_entry.parent
    run(sep, clips[2], tmp_path / "o")
    entries = list(cache_dir.glob("*/*/entry.json"))
    assert len(entries) == 2 and not oldest.exists()
    assert sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file()) <= cap


def test_no_cache_writes_no_entry(tmp_path, model_repo, make_clip):
    sep = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=tmp_path / "cache", use_cache=False))
    run(sep, make_clip("clip.wav", seconds=1.0), tmp_path / "o")
    assert not list((tmp_path / "cache").glob("*/*/entry.json"))


def test_entry_blocks_round_trip(tmp_path):
    cache = StemCache(tmp_path, 1 << 30)
    stems = np.random.default_rng(0).standard_normal((2, 70000, 2)).astype(np.float32)
    writer = cache.writer("ab" * 32, ["vocals", "other"], 70000, 44100)
    list(writer.tee(iter([stems[:, :30000], stems[:, 30000:]])))
    entry = writer.commit()
    got = np.concatenate(list(cache.lookup("ab" * 32).blocks(block_frames=25000)), axis=1)
    np.testing.assert_array_equal(got, stems)
    assert entry.path.name == "ab" * 32


def test_rewritten_audio_is_never_taken_for_the_remembered_one(tmp_path, separator, make_clip):
    """The source hash is remembered per file state; a re-bounce of the same length over the
    same name, even with its modification time set back, must be separated again."""
    import soundfile as sf

    from conftest import multitone

    source = make_clip("bounce.wav", seconds=2.0, seed=1)
    stat = source.stat()
    first, _ = run(separator, source, tmp_path / "a")
    with sf.SoundFile(str(source), "r+") as handle:  # in place: same inode, same size
        handle.seek(0)
        handle.write(multitone(2.0, 44100, 2, seed=9))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    second, stages = run(separator, source, tmp_path / "b")
    assert "separating" in stages
    assert json.loads(second.read_text())["source_hash"] != json.loads(first.read_text())["source_hash"]


def test_remembered_source_hashes_are_capped_least_recently_used_first(tmp_path, make_clip):
    from bridge.audio import probe
    from bridge.fingerprint import HashMemo, audio_hash

    memo = HashMemo(tmp_path / "sources", keep=2)
    clips = [probe(make_clip(f"c{i}.wav", seconds=0.5, seed=i)) for i in range(3)]
    hashes = [memo.hash_of(info) for info in clips[:2]]
    # Make the order of use explicit: c1's memo is the older one, then c0 is used again.
    old = (tmp_path / "sources").stat().st_mtime - 100
    for entry in (tmp_path / "sources").iterdir():
        os.utime(entry, (old, old))
    assert memo.hash_of(clips[0]) == hashes[0]          # a hit: now the most recent
    memo.hash_of(clips[2])                               # a third memo: one must go
    remembered = {p.read_text() for p in (tmp_path / "sources").iterdir()}
    assert remembered == {hashes[0], audio_hash(clips[2])}
