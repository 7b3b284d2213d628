"""DAWproject export: validates against the official schemas, places clips at the source's
BWF position, references or embeds the stems, publishes atomically."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from lxml import etree

from bridge.dawproject import write_dawproject
from bridge.errors import InputError
from bridge.manifest import now_iso, write_manifest
from bridge.wavio import write_wav

SCHEMAS = Path(__file__).parent / "data" / "dawproject"
STEMS = ("drums", "bass", "other", "vocals")


@pytest.fixture(scope="module")
def project_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "Project.xsd")))


@pytest.fixture(scope="module")
def metadata_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "MetaData.xsd")))


def make_stem_set(folder: Path, time_reference: int | None, rate: int = 48000, frames: int = 4800,
                  channels: int = 2, clip: str = "song & mix") -> Path:
    """A small stem set with its stems.json, as the writer publishes it."""
    folder.mkdir(parents=True, exist_ok=True)
    stems = {}
    for index, stem in enumerate(STEMS):
        name = f"{clip}_{stem}.wav"
        data = np.full((frames, channels), 0.01 * (index + 1), dtype=np.float32)
        write_wav(folder / name, data, rate, "32f", time_reference=time_reference)
        stems[stem] = name
    manifest = folder / "stems.json"
    write_manifest(manifest, {
        "version": 1, "job_id": "job1", "source": str(folder.parent / f"{clip}.wav"), "source_hash": "x",
        "sample_rate": rate, "frames": frames, "channels": channels, "time_reference": time_reference,
        "model": "htdemucs", "quality": "render", "device": "cpu", "stems": stems, "preview": None,
        "created": now_iso(),
    })
    return manifest


def read_project(path: Path) -> tuple[etree._Element, etree._Element, list[str]]:
    with zipfile.ZipFile(path) as archive:
        return (etree.fromstring(archive.read("project.xml")), etree.fromstring(archive.read("metadata.xml")),
                archive.namelist())


def test_project_validates_and_places_clips_at_time_reference(tmp_path, project_schema, metadata_schema):
    manifest = make_stem_set(tmp_path / "out", time_reference=72000)
    path = write_dawproject(manifest)
    assert path == tmp_path / "out" / "song & mix.dawproject"
    project, metadata, names = read_project(path)
    project_schema.assertValid(project)
    metadata_schema.assertValid(metadata)
    assert sorted(names) == ["metadata.xml", "project.xml"]
    tracks = [t.get("name") for t in project.iterfind("Structure/Track") if t.find("Channel").get("role") == "regular"]
    assert tracks == list(STEMS)
    clips = project.findall(".//Clip")
    assert len(clips) == 4
    for clip in clips:
        assert float(clip.get("time")) == 1.5  # 72000 / 48000
        assert float(clip.get("duration")) == 0.1
        file_ref = clip.find("Audio/File")
        assert file_ref.get("external") == "true"
        # Relative to the .dawproject, which sits beside the stems.
        assert (path.parent / file_ref.get("path")).is_file()
        assert file_ref.get("path") == f"song & mix_{clip.get('name')}.wav"
    assert project.find(".//Lanes").get("timeUnit") == "seconds"


def test_no_time_reference_places_clips_at_zero(tmp_path, project_schema):
    path = write_dawproject(make_stem_set(tmp_path / "out", time_reference=None, channels=1))
    project, _, _ = read_project(path)
    project_schema.assertValid(project)
    assert {float(c.get("time")) for c in project.iter("Clip")} == {0.0}
    assert {a.get("channels") for a in project.iter("Audio")} == {"1"}


def test_sample_position_survives_float_seconds(tmp_path):
    # One hour of timecode at 44.1 kHz plus one sample: the seconds value must map back exactly.
    reference = 3600 * 44100 + 1
    path = write_dawproject(make_stem_set(tmp_path / "out", time_reference=reference, rate=44100))
    project, _, _ = read_project(path)
    time = float(project.find(".//Clip").get("time"))
    assert round(time * 44100) == reference


def test_embedded_copies_validate_and_hold_the_stems(tmp_path, project_schema):
    manifest = make_stem_set(tmp_path / "out", time_reference=48000)
    path = write_dawproject(manifest, embed=True)
    project, _, names = read_project(path)
    project_schema.assertValid(project)
    for file_ref in project.iter("File"):
        assert file_ref.get("external") is None
        assert file_ref.get("path") in names
    with zipfile.ZipFile(path) as archive:
        assert archive.read("audio/song & mix_vocals.wav") == (tmp_path / "out" / "song & mix_vocals.wav").read_bytes()


def test_rewrite_replaces_atomically_without_leftovers(tmp_path):
    manifest = make_stem_set(tmp_path / "out", time_reference=0)
    first = write_dawproject(manifest)
    second = write_dawproject(manifest)
    assert first == second
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.endswith(".wav")) == [
        "song & mix.dawproject", "stems.json"]


def test_missing_stem_is_one_clear_error(tmp_path):
    manifest = make_stem_set(tmp_path / "out", time_reference=0)
    (tmp_path / "out" / "song & mix_bass.wav").unlink()
    with pytest.raises(InputError) as info:
        write_dawproject(manifest)
    message = str(info.value)
    assert "song & mix_bass.wav" in message and "missing" in message and "\n" not in message
    assert not list((tmp_path / "out").glob("*.dawproject*"))


def test_missing_manifest_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no such manifest"):
        write_dawproject(tmp_path / "nowhere" / "stems.json")
