"""Drive Ardour 7 headless for tests: `ardour7-lua` runs the Lua helpers beside this file,
`ardour7-export` renders the session range through the master bus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
LUA = "ardour7-lua"
EXPORT = "ardour7-export"
# A healthy run takes 1-3 s. Under heavy load Ardour 7.3 now and then never finishes
# starting (seen once in about 30 session creations while other suites loaded both cores);
# such a run is killed and tried again.
TIMEOUT_S = 60
ATTEMPTS = 2
# Two renders of one session agree when no sample differs by more than this (-120 dBFS).
AGREE = 1e-6


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


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run an Ardour tool, retrying once when it hangs; its own process group so that a kill
    reaches everything it started."""
    for attempt in range(ATTEMPTS):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
            return subprocess.CompletedProcess(command, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    raise RuntimeError(f"{' '.join(command)} did not finish in {TIMEOUT_S} s, {ATTEMPTS} times")


def run_lua(script: str | Path, *args: str | int) -> str:
    """Run a Lua script with ardour7-lua; returns stdout, raises with Ardour's output on failure."""
    script_path = Path(script) if Path(script).is_absolute() else HERE / script
    result = _run([LUA, str(script_path), *map(str, args)])
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
    result = _run([EXPORT, "-B", "-b", "float", "-o", str(output), str(session_dir), name])
    # ardour7-export 7.3 can abort while tearing down after a complete export; the file is
    # what counts, so judge by it and keep Ardour's output for the message.
    if not output.is_file() or output.stat().st_size == 0:
        raise RuntimeError(f"ardour7-export wrote nothing ({result.returncode}): {result.stdout}{result.stderr}")
    # Compare samples, not bytes: the bext chunk carries the time of the render.
    return sf.read(output, dtype="float32")[0]


def export(session_dir: Path, name: str, output: Path, attempts: int = 6) -> Path:
    """Render the session range as a 32-bit float BWF (TimeReference = range start).

    ardour7-export 7.3 on a busy machine now and then writes a bad render; a re-render of the
    same session is clean. Seen: one sample in every 2048 replaced by ~1e35 or ~100 on one
    channel (about one run in seven to ten); a render 16 samples late; a file whose header
    was never finished (zero frames: it aborted while tearing down); nothing at all. Three of
    four renders in one suite run were bad. So render until two renders agree, never counting
    an empty one. Not bit for bit: Ardour sums tracks into the master bus in whatever order
    its process threads finish, which moves the last bit (~1e-7).
    """
    seen: list[tuple[np.ndarray, Path]] = []
    empty: list[str] = []
    for attempt in range(attempts):
        path = output.with_name(f"{output.stem}.try{attempt}{output.suffix}")
        try:
            data = _render(session_dir, name, path)
        except RuntimeError as error:   # wrote nothing
            empty.append(str(error).splitlines()[0])
            continue
        if len(data) == 0:
            empty.append(f"{path.name}: no frames (its header was never finished)")
            path.unlink()
            continue
        for earlier, _ in seen:
            if earlier.shape == data.shape and np.max(np.abs(earlier - data), initial=0.0) <= AGREE:
                path.replace(output)
                for _, other in seen:
                    other.unlink(missing_ok=True)
                return output
        seen.append((data, path))
    raise RuntimeError(f"ardour7-export gave no two renders of {session_dir} that agree in {attempts} tries: "
                       f"{len(seen)} that disagree ({', '.join(p.name for _, p in seen)})"
                       + "".join(f"; {line}" for line in empty))
