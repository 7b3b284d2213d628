"""The output contract of `stembridge separate`, through the real CLI entry point and the
tiny random-weight model loaded from a local model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.cli import main
from bridge.device import resolve_device
from bridge.wavio import read_time_reference, write_wav
from conftest import multitone
from helpers import load_set, read, relative_db


def separate(capsys, *args: str) -> list[dict]:
    code = main(["separate", *args, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines()]


SOURCES = [
    # name, rate, channels, subtype, time reference
    ("mono16.wav", 44100, 1, "PCM_16", None),
    ("stereo24_bext.wav", 48000, 2, "PCM_24", 48000 * 3723),
    ("float96.wav", 96000, 2, "FLOAT", None),
    ("take.flac", 44100, 2, "PCM_24", None),
]


@pytest.mark.parametrize("name,rate,channels,subtype,time_reference", SOURCES)
def test_every_stem_matches_the_source(tmp_path, capsys, model_repo, name, rate, channels, subtype, time_reference):
    source = tmp_path / name
    audio = multitone(2.5, rate, channels)
    if time_reference is not None:
        write_wav(source, audio, rate, "24", time_reference)
    else:
        sf.write(source, audio, rate, subtype=subtype)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--model", "htdemucs", "--cache-dir", str(tmp_path / "cache"))

    manifest = Path(result["manifest"])
    assert manifest.is_absolute() and manifest == tmp_path / "out" / source.stem / "stems.json"
    data, stems = load_set(manifest)
    assert data["version"] == 1 and data["source"] == str(source.resolve())
    assert (data["sample_rate"], data["frames"], data["channels"]) == (rate, audio.shape[0], channels)
    assert data["time_reference"] == time_reference
    assert data["model"] == "htdemucs" and data["quality"] == "render" and data["device"] == resolve_device("auto")[0]
    assert data["preview"] is None and len(data["source_hash"]) == 64 and data["job_id"]
    assert set(data["stems"]) == {"drums", "bass", "other", "vocals"}
    for stem, file in data["stems"].items():
        path = manifest.parent / file
        assert path.name == f"{source.stem}_{stem}.wav"
        info = sf.info(str(path))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (rate, audio.shape[0], channels, "FLOAT")
        assert read_time_reference(path) == time_reference
        assert np.all(np.isfinite(stems[stem]))
    assert sorted(p.name for p in manifest.parent.iterdir()) == sorted([*data["stems"].values(), "stems.json"])


def test_exact_sum_nulls_against_the_source(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("mix.wav", seconds=3.0, rate=48000, channels=2, subtype="FLOAT")
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--model", "htdemucs", "--exact-sum", "--no-cache")
    _, stems = load_set(Path(result["manifest"]))
    mix, _ = read(source)
    assert relative_db(sum(stems.values()) - mix, mix) < -90


def test_without_exact_sum_the_model_output_is_kept(tmp_path, capsys, model_repo, make_clip):
    """Random weights separate badly, so the plain sum is far from the mix: proves that the
    residual correction really is applied only on request."""
    source = make_clip("mix.wav", seconds=2.0)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--no-cache", "--quality", "preview")
    _, stems = load_set(Path(result["manifest"]))
    mix, _ = read(source)
    assert relative_db(sum(stems.values()) - mix, mix) > -20


def test_two_stems_complement(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("song.wav", seconds=2.0)
    common = ["-o", str(tmp_path / "out"), "--model-repo", str(model_repo), "--model", "htdemucs",
              "--cache-dir", str(tmp_path / "cache")]
    [four] = separate(capsys, str(source), *common, "--name-template", "{clip}_4/{clip}_{stem}")
    [two] = separate(capsys, str(source), *common, "--two-stems", "vocals")
    [exact] = separate(capsys, str(source), *common, "--two-stems", "vocals", "--exact-sum",
                       "--name-template", "{clip}_exact/{clip}_{stem}")
    _, four_stems = load_set(Path(four["manifest"]))
    data, two_stems = load_set(Path(two["manifest"]))
    assert set(data["stems"]) == {"vocals", "no_vocals"}
    assert data["stems"]["no_vocals"] == "song_no_vocals.wav"
    np.testing.assert_allclose(two_stems["vocals"], four_stems["vocals"], atol=1e-6)
    others = four_stems["drums"] + four_stems["bass"] + four_stems["other"]
    np.testing.assert_allclose(two_stems["no_vocals"], others, atol=1e-5)
    _, exact_stems = load_set(Path(exact["manifest"]))
    mix, _ = read(source)
    assert relative_db(exact_stems["vocals"] + exact_stems["no_vocals"] - mix, mix) < -90


def test_six_stem_set(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("band.wav", seconds=2.0)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--stems", "6", "--quality", "preview", "--no-cache")
    data, stems = load_set(Path(result["manifest"]))
    assert data["model"] == "htdemucs_6s"
    assert set(stems) == {"drums", "bass", "other", "vocals", "guitar", "piano"}


@pytest.mark.parametrize("fmt,depth,subtype", [("wav", "16", "PCM_16"), ("wav", "24", "PCM_24"),
                                               ("flac", None, "PCM_24"), ("flac", "16", "PCM_16"),
                                               ("wav", "source", "PCM_16")])
def test_formats_and_bit_depths(tmp_path, capsys, model_repo, make_clip, fmt, depth, subtype):
    source = make_clip("clip.wav", seconds=1.5, subtype="PCM_16")
    extra = ["--bit-depth", depth] if depth else []
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--format", fmt, *extra, "--quality", "preview")
    data, _ = load_set(Path(result["manifest"]))
    for file in data["stems"].values():
        assert file.endswith(f".{fmt}")
        assert sf.info(str(Path(result["manifest"]).parent / file)).subtype == subtype


def test_name_template_and_unsafe_clip_names(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("..evil:name?.wav", seconds=1.0)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--quality", "preview", "--name-template", "{model}/{quality}/../{clip}-{stem}")
    manifest = Path(result["manifest"])
    assert manifest.parent == tmp_path / "out" / "htdemucs" / "preview"
    assert (manifest.parent / "evil_name_-vocals.wav").exists()


def test_dots_in_clip_names_are_kept(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("mix v1.5.wav", seconds=1.0)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--quality", "preview")
    assert Path(result["stems"]["vocals"]) == tmp_path / "out" / "mix v1.5" / "mix v1.5_vocals.wav"


def test_bad_name_template_is_a_clear_error(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("clip.wav", seconds=1.0)
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                 "--name-template", "{clip}/{stem}/{clip}_{stem}"])
    assert code == 1
    assert "keep {stem} in the file name" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flac_cannot_hold_float(tmp_path, capsys, model_repo, make_clip):
    source = make_clip("clip.wav", seconds=1.0)
    code = main(["separate", str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                 "--format", "flac", "--bit-depth", "32f"])
    assert code == 1
    assert "FLAC holds integer samples only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dawproject_beside_the_stems_validates(tmp_path, capsys, model_repo):
    import zipfile

    from lxml import etree

    schemas = Path(__file__).parent / "data" / "dawproject"
    source = tmp_path / "verse.wav"
    write_wav(source, multitone(1.5, 48000, 2), 48000, "24", 48000 * 90)
    [result] = separate(capsys, str(source), "-o", str(tmp_path / "out"), "--model-repo", str(model_repo),
                        "--quality", "preview", "--dawproject")
    project = Path(result["dawproject"])
    assert project == Path(result["manifest"]).parent / "verse.dawproject"
    with zipfile.ZipFile(project) as archive:
        xml = etree.fromstring(archive.read("project.xml"))
        etree.XMLSchema(etree.parse(str(schemas / "Project.xsd"))).assertValid(xml)
        etree.XMLSchema(etree.parse(str(schemas / "MetaData.xsd"))).assertValid(
            etree.fromstring(archive.read("metadata.xml")))
    clips = xml.findall(".//Clip")
    assert len(clips) == 4 and all(float(c.get("time")) == pytest.approx(90.0) for c in clips)
