"""Drive Ardour 7 headless for tests: `ardour7-lua` runs the Lua helpers beside this file,
`ardour7-export` renders the session range through the master bus."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
LUA = "ardour7-lua"
EXPORT = "ardour7-export"
# Generous: a cold start of Ardour on a loaded 2-core CI machine takes a few seconds.
TIMEOUT_S = 120


def available() -> bool:
    return shutil.which(LUA) is not None and shutil.which(EXPORT) is not None


@dataclass(frozen=True)
class PlacedRegion:
    track: str
    position: int
    length: int
    start: int
    natural_position: int
    path: str


def run_lua(script: str | Path, *args: str | int) -> str:
    """Run a Lua script with ardour7-lua; returns stdout, raises with Ardour's output on failure."""
    script_path = Path(script) if Path(script).is_absolute() else HERE / script
    result = subprocess.run([LUA, str(script_path), *map(str, args)], capture_output=True, text=True,
                            timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise RuntimeError(f"{script_path.name} failed ({result.returncode}): {result.stdout}{result.stderr}")
    return result.stdout


def add_tracks(session_dir: Path, name: str, rate: int, channels: int, tracks: list[str]) -> None:
    """Create the session if needed and add the named audio tracks."""
    run_lua("tracks.lua", session_dir, name, rate, channels, *tracks)


def regions(session_dir: Path, name: str, clear: str | None = None) -> list[PlacedRegion]:
    """Every region as Ardour sees it after loading the session; optionally remove the
    regions of track `clear` (and save) in the same run."""
    out = run_lua("inspect.lua", session_dir, name, *([clear] if clear else []))
    found = []
    for line in out.splitlines():
        fields = line.split("\t")
        if fields[0] == "region" and len(fields) == 7:
            found.append(PlacedRegion(fields[1], int(fields[2]), int(fields[3]), int(fields[4]),
                                      int(fields[5]), fields[6]))
    if clear and f"cleared\t{clear}" not in out:
        raise RuntimeError(f"track {clear!r} was not found to clear: {out}")
    return found


def _render(session_dir: Path, name: str, output: Path) -> np.ndarray:
    result = subprocess.run([EXPORT, "-B", "-b", "float", "-o", str(output), str(session_dir), name],
                            capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    # ardour7-export 7.3 can abort while tearing down after a complete export; the file is
    # what counts, so judge by it and keep Ardour's output for the message.
    if not output.is_file() or output.stat().st_size == 0:
        raise RuntimeError(f"ardour7-export wrote nothing ({result.returncode}): {result.stdout}{result.stderr}")
    # Compare samples, not bytes: the bext chunk carries the time of the render.
    return sf.read(output, dtype="float32")[0]


def export(session_dir: Path, name: str, output: Path, attempts: int = 4) -> Path:
    """Render the session range as a 32-bit float BWF (TimeReference = range start).

    ardour7-export 7.3 on a busy machine now and then writes a render with corrupt samples
    (seen: one sample in every 2048 replaced by ~1e35 on one channel, about one run in seven
    while other test suites loaded both cores); a re-render of the same session is clean.
    Renders are deterministic, so render until two agree bit for bit.
    """
    seen: list[tuple[np.ndarray, Path]] = []
    for attempt in range(attempts):
        path = output.with_name(f"{output.stem}.try{attempt}{output.suffix}")
        data = _render(session_dir, name, path)
        for earlier, _ in seen:
            if np.array_equal(earlier, data):
                path.replace(output)
                return output
        seen.append((data, path))
    raise RuntimeError(f"ardour7-export gave {attempts} different renders of {session_dir}")
