"""Edit a *closed* Ardour 7 session file: add audio regions that read files in place, set the
session range. Headless Ardour has no import call, so the tests put audio into a session the
way Ardour itself would have saved it after an import, then let Ardour load and render it.

Never run this while Ardour has the session open: Ardour would overwrite the edit on save.
"""

from __future__ import annotations

import os
from pathlib import Path

from lxml import etree

# Ardour 7 stores timeline positions as superclock ticks ("a<ticks>"), 282240000 per second.
SUPERCLOCK_RATE = 282_240_000


def superclock(samples: int, rate: int) -> int:
    """Samples at `rate` as superclock ticks; exact for the usual rates (282240000 is a multiple
    of 44100, 48000, 88200, 96000, 176400 and 192000)."""
    ticks, rest = divmod(samples * SUPERCLOCK_RATE, rate)
    if rest:
        raise ValueError(f"sample rate {rate}: {samples} samples is not a whole number of superclock ticks")
    return ticks


class SessionFile:
    """One `.ardour` file, loaded for editing and saved atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tree = etree.parse(str(self.path))
        self.root = self.tree.getroot()
        self.rate = int(self.root.get("sample-rate"))

    def _next_id(self) -> str:
        # id-counter is the next free object id; Ardour resumes counting from it on load.
        value = int(self.root.get("id-counter"))
        self.root.set("id-counter", str(value + 1))
        return str(value)

    def _playlist_of(self, track: str) -> etree._Element:
        route = self.root.find(f"Routes/Route[@name='{track}']")
        if route is None:
            raise KeyError(f"{self.path}: no track named {track!r}")
        playlist = self.root.find(f"Playlists/Playlist[@id='{route.get('audio-playlist')}']")
        if playlist is None:
            raise KeyError(f"{self.path}: track {track!r} has no audio playlist")
        return playlist

    def add_region(self, track: str, audio: Path, position: int, frames: int, channels: int,
                   start: int = 0, length: int | None = None, fades: bool = False) -> None:
        """Place `audio` (`frames` long) on `track` at sample `position`: the whole file, or
        `length` samples of it from offset `start`.

        fades=False switches off Ardour's default 64-sample region fades, which would otherwise
        shape the first and last samples of every region and spoil a null test.
        """
        audio = Path(audio).resolve()
        sources = self.root.find("Sources")
        source_ids = []
        for channel in range(channels):
            source_id = self._next_id()
            source_ids.append(source_id)
            # An absolute name (and origin) makes Ardour read the file where it is, as it does
            # for files imported without copying, instead of searching the session folders.
            etree.SubElement(sources, "Source", {
                "name": str(audio), "type": "audio", "flags": "", "id": source_id,
                "captured-for": "", "channel": str(channel), "origin": str(audio), "gain": "1",
            })
        whole_length = superclock(frames, self.rate)
        common = {
            "name": audio.stem, "muted": "0", "opaque": "1", "locked": "0", "video-locked": "0",
            "automatic": "0", "import": "1", "external": "0", "sync-marked": "0",
            "left-of-split": "0", "right-of-split": "0", "hidden": "0", "position-locked": "0",
            "valid-transients": "0", "start": "a0", "sync-position": "a0", "ancestral-start": "a0",
            "ancestral-length": "a0@a0", "stretch": "1", "shift": "1", "layering-index": "0",
            "tags": "", "contents": "0", "envelope-active": "0", "default-fade-in": "0",
            "default-fade-out": "0", "fade-in-active": "1" if fades else "0",
            "fade-out-active": "1" if fades else "0", "scale-amplitude": "1", "type": "audio",
            "first-edit": "nothing", "channels": str(channels),
        }
        for index, source_id in enumerate(source_ids):
            common[f"source-{index}"] = source_id
            common[f"master-source-{index}"] = source_id
        whole = dict(common, id=self._next_id(), length=f"a{whole_length}@a0")
        whole["whole-file"] = "1"
        etree.SubElement(self.root.find("Regions"), "Region", whole)
        used = frames - start if length is None else length
        placed = dict(common, id=self._next_id(), start=f"a{superclock(start, self.rate)}",
                      length=f"a{superclock(used, self.rate)}@a{superclock(position, self.rate)}")
        placed["whole-file"] = "0"
        etree.SubElement(self._playlist_of(track), "Region", placed)

    def set_session_range(self, start: int, end: int) -> None:
        """Set the range `ardour7-export` renders: [start, end) in samples."""
        locations = self.root.find("Locations")
        for old in locations.findall("Location[@flags='IsSessionRange']"):
            locations.remove(old)
        etree.SubElement(locations, "Location", {
            "id": self._next_id(), "name": "session", "start": f"a{superclock(start, self.rate)}",
            "end": f"a{superclock(end, self.rate)}", "flags": "IsSessionRange", "locked": "0",
            "timestamp": "0", "cue": "0",
        })

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.tree.write(str(tmp), xml_declaration=True, encoding="UTF-8")
        os.replace(tmp, self.path)
