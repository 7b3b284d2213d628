"""kill -9 in the middle of a job, with more queued behind it: the next start finishes every
job and no half-written stem set is left behind."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import soundfile as sf

from bridge.jobs.store import DONE, QUEUED, RUNNING, read_jobs


def assert_complete_sets_only(output: Path, expected_frames: dict[str, int]) -> None:
    """Every folder under the output root is a complete set: stems.json plus exactly the
    stems it lists, each as long as its source; no temporary file anywhere."""
    leftovers = [p for p in output.rglob("*") if ".stembridge-tmp" in p.name]
    assert leftovers == []
    sets = sorted(p for p in output.iterdir() if p.is_dir())
    assert [p.name for p in sets] == sorted(expected_frames)
    for folder in sets:
        manifest = json.loads((folder / "stems.json").read_text())
        listed = set(manifest["stems"].values()) | ({manifest["preview"]} if manifest.get("preview") else set())
        present = {p.name for p in folder.iterdir() if p.is_file()} - {"stems.json"}
        assert present == listed, folder
        for name in manifest["stems"].values():
            assert sf.info(str(folder / name)).frames == expected_frames[folder.name]


def test_kill_9_with_jobs_running_and_queued_then_restart_completes_all(daemon_with_sources, make_clip) -> None:
    daemon, peer, sources = daemon_with_sources
    clips = {
        # Forty model segments: the kill lands after a tenth of them, seconds before the end
        # even on a stalled CI machine. (With two, a GPU finished the second before the kill
        # arrived; a one-second job once ended between two signals on a stalled machine.)
        "long": make_clip("long.wav", seconds=240.0, folder=sources, seed=1),
        "a": make_clip("a.wav", seconds=1.0, folder=sources, seed=2),
        "b": make_clip("b.wav", seconds=1.0, rate=48000, channels=1, folder=sources, seed=3),
    }
    daemon.start()
    peer.send(daemon.port, "/stembridge/subscribe", peer.port)
    peer.receive("/stembridge/subscribed")
    ids = {}
    for name, path in clips.items():
        peer.send(daemon.port, "/stembridge/separate", str(path))
        ids[name] = peer.receive("/stembridge/queued")[0]

    # Kill it once the long job's first segment is done: its stems are being written.
    while True:
        job_id, fraction, stage = peer.receive("/stembridge/progress", timeout=60)
        if job_id == ids["long"] and stage == "separating" and fraction > 0.1:
            break
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)
    partial = [p for p in daemon.output.rglob("*") if ".stembridge-tmp" in p.name]
    assert partial, "the kill should have left temporary files to clean"
    assert not (daemon.output / "long" / "stems.json").exists()
    states = {j.id: j.state for j in read_jobs(daemon.state / "jobs.sqlite")}
    assert states[ids["long"]] == RUNNING
    assert states[ids["a"]] == QUEUED and states[ids["b"]] == QUEUED

    daemon.start()
    assert f"job {ids['long']} was interrupted; re-queued ({len(partial)} partial files removed)" in daemon.log()
    finished = {daemon.wait_for(r"job (\w+) done", timeout=90).group(1) for _ in ids}
    assert finished == set(ids.values())
    jobs = {j.id: j for j in read_jobs(daemon.state / "jobs.sqlite")}
    assert {j.state for j in jobs.values()} == {DONE}
    assert jobs[ids["long"]].attempts == 2
    assert_complete_sets_only(daemon.output, {name: sf.info(str(p)).frames for name, p in clips.items()})
