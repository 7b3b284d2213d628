"""DAWproject export of a stem set: one audio track per stem, each clip at the source's
timeline position, for DAWs whose scripting cannot place audio exactly (Bitwig, Studio One,
Cubase import `.dawproject`).

Audio is referenced, not embedded (`external="true"`, paths relative to the .dawproject,
which sits beside the stems). A stem set in 32-bit float is hundreds of MB for a song;
embedding would double the disk use and the write time of every job for a file whose stems
already lie next to it. Move the stem folder as a whole and the references still hold.
`embed=True` packs copies into the ZIP for handing the project to another machine.

Format: bitwig/dawproject 1.0, checked against the official Project.xsd and MetaData.xsd
in the tests.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from bridge import __version__
from bridge.atomic import fsync_dir, publish, temp_name_for
from bridge.errors import InputError, OutputError
from bridge.manifest import read_manifest

FORMAT_VERSION = "1.0"
SUFFIX = ".dawproject"


def clip_time_seconds(manifest: dict[str, Any]) -> float:
    """Timeline position of the stems: the source's BWF TimeReference in seconds, else 0."""
    reference = manifest.get("time_reference")
    return 0.0 if reference is None else reference / manifest["sample_rate"]


def _seconds(value: float) -> str:
    # repr keeps every digit a float has, so a sample position survives the round trip.
    return repr(float(value))


def build_project_xml(manifest: dict[str, Any], file_paths: dict[str, str], external: bool) -> bytes:
    """project.xml for a manifest; `file_paths` maps stem name -> path written in <File>."""
    project = ET.Element("Project", version=FORMAT_VERSION)
    ET.SubElement(project, "Application", name="StemBridge", version=__version__)
    transport = ET.SubElement(project, "Transport")
    # Seconds-based lanes make tempo irrelevant to placement; a tempo is still expected by
    # importers, so give the common default.
    ET.SubElement(transport, "Tempo", id="tempo", name="Tempo", unit="bpm", value="120")
    ET.SubElement(transport, "TimeSignature", id="timesig", numerator="4", denominator="4")

    structure = ET.SubElement(project, "Structure")
    channels = str(manifest["channels"])
    track_ids = {}
    for index, stem in enumerate(file_paths, start=1):
        track_ids[stem] = f"track{index}"
        track = ET.SubElement(structure, "Track", id=f"track{index}", name=stem, contentType="audio",
                              loaded="true")
        channel = ET.SubElement(track, "Channel", id=f"channel{index}", name=stem, role="regular",
                                audioChannels=channels, destination="masterchannel")
        ET.SubElement(channel, "Volume", id=f"volume{index}", name="Volume", unit="linear", value="1.0")
    master = ET.SubElement(structure, "Track", id="master", name="Master", contentType="audio",
                           loaded="true")
    master_channel = ET.SubElement(master, "Channel", id="masterchannel", name="Master", role="master",
                                   audioChannels=channels)
    ET.SubElement(master_channel, "Volume", id="mastervolume", name="Volume", unit="linear", value="1.0")

    arrangement = ET.SubElement(project, "Arrangement", id="arrangement")
    lanes = ET.SubElement(arrangement, "Lanes", id="lanes", timeUnit="seconds")
    start = _seconds(clip_time_seconds(manifest))
    duration = _seconds(manifest["frames"] / manifest["sample_rate"])
    for stem, path in file_paths.items():
        index = track_ids[stem].removeprefix("track")
        track_lanes = ET.SubElement(lanes, "Lanes", id=f"lanes{index}", track=track_ids[stem])
        clips = ET.SubElement(track_lanes, "Clips", id=f"clips{index}")
        clip = ET.SubElement(clips, "Clip", name=stem, time=start, duration=duration, playStart="0.0")
        audio = ET.SubElement(clip, "Audio", id=f"audio{index}", channels=channels, duration=duration,
                              sampleRate=str(manifest["sample_rate"]))
        file_ref = ET.SubElement(audio, "File", path=path)
        if external:
            file_ref.set("external", "true")
    return ET.tostring(project, encoding="utf-8", xml_declaration=True)


def build_metadata_xml(manifest: dict[str, Any]) -> bytes:
    metadata = ET.Element("MetaData")
    ET.SubElement(metadata, "Title").text = Path(manifest["source"]).stem
    ET.SubElement(metadata, "Comment").text = (
        f"Stems of {manifest['source']} by StemBridge ({manifest['model']}, {manifest['quality']})")
    return ET.tostring(metadata, encoding="utf-8", xml_declaration=True)


def dawproject_name(manifest: dict[str, Any]) -> str:
    """`<clip>.dawproject`, named after the source clip like the stem folder."""
    return Path(manifest["source"]).stem + SUFFIX


def write_dawproject(manifest_path: Path, embed: bool = False) -> Path:
    """Write `<clip>.dawproject` beside `stems.json` atomically and return its path.

    Raises InputError when the manifest or a stem file it names is missing, OutputError
    when the project cannot be written.
    """
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    folder = manifest_path if manifest_path.is_dir() else manifest_path.parent
    stems: dict[str, str] = manifest["stems"]
    for name, relative in stems.items():
        if not (folder / relative).is_file():
            raise InputError(folder / relative, f"stem file {name!r} named in the manifest is missing")
    if embed:
        file_paths = {name: f"audio/{Path(relative).name}" for name, relative in stems.items()}
    else:
        file_paths = {name: Path(relative).as_posix() for name, relative in stems.items()}

    target = folder / dawproject_name(manifest)
    temp = temp_name_for(target, str(manifest["job_id"]))
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("project.xml", build_project_xml(manifest, file_paths, external=not embed))
            archive.writestr("metadata.xml", build_metadata_xml(manifest))
            if embed:
                for name, relative in stems.items():
                    # Audio does not compress; storing keeps writing fast.
                    archive.write(folder / relative, file_paths[name], compress_type=zipfile.ZIP_STORED)
        publish(temp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        if temp.exists():
            os.unlink(temp)
        raise OutputError(target, f"cannot write DAWproject ({exc.strerror or exc})") from None
    return target
