"""Cancel over OSC against a real daemon: a queued job never runs, a running one stops
promptly and publishes nothing, and the daemon goes on with the next job."""

from __future__ import annotations

import signal
import time


from bridge.jobs.store import CANCELLED, DONE, QUEUED, RUNNING, read_jobs


def test_cancel_queued_and_running_jobs(daemon_with_sources, make_clip) -> None:
    daemon, peer, sources = daemon_with_sources
    long_clip = make_clip("long.wav", seconds=120.0, folder=sources, seed=1)
    queued_clip = make_clip("queued.wav", seconds=1.0, folder=sources, seed=2)
    after_clip = make_clip("after.wav", seconds=1.0, folder=sources, seed=3)
    daemon.start()

    peer.send(daemon.port, "/stembridge/separate", str(long_clip))
    running_id = peer.receive("/stembridge/queued")[0]
    peer.send(daemon.port, "/stembridge/separate", str(queued_clip))
    queued_id = peer.receive("/stembridge/queued")[0]

    peer.send(daemon.port, "/stembridge/cancel", queued_id)
    assert peer.receive("/stembridge/cancelled", match=queued_id, timeout=5) == [queued_id]

    peer.receive("/stembridge/progress", match=running_id, timeout=60)
    asked = time.monotonic()
    peer.send(daemon.port, "/stembridge/cancel", running_id)
    peer.receive("/stembridge/cancelled", match=running_id, timeout=10)
    daemon.wait_for(rf"job {running_id} cancelled", timeout=10)
    stopped_after = time.monotonic() - asked
    # Cancellation takes effect between model segments (< 1 s each here, more on a busy machine).
    assert stopped_after < 10.0, f"cancel took {stopped_after:.1f} s"

    peer.send(daemon.port, "/stembridge/separate", str(after_clip))
    after_id = peer.receive("/stembridge/queued")[0]
    assert peer.receive("/stembridge/done", match=after_id, timeout=60)[1].endswith("stems.json")

    states = {j.id: j.state for j in read_jobs(daemon.state / "jobs.sqlite")}
    assert states == {running_id: CANCELLED, queued_id: CANCELLED, after_id: DONE}
    assert sorted(p.name for p in daemon.output.iterdir()) == ["after"]
    assert [p for p in daemon.output.rglob("*") if ".stembridge-tmp" in p.name] == []

    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0


def test_sigterm_during_a_long_job_requeues_it_and_exits_0_promptly(daemon_with_sources, make_clip) -> None:
    daemon, peer, sources = daemon_with_sources
    daemon.drain_timeout = 0.5
    long_clip = make_clip("long.wav", seconds=120.0, folder=sources, seed=1)
    # Long enough (about 16 tiny-model segments) to outlast the drain timeout by far.
    daemon.start()
    peer.send(daemon.port, "/stembridge/separate", str(long_clip))
    job_id = peer.receive("/stembridge/queued")[0]
    peer.receive("/stembridge/progress", match=job_id, timeout=60)
    asked = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    # The drain timeout, then at most one model segment until the cancel is seen.
    assert time.monotonic() - asked < daemon.drain_timeout + 10.0
    assert f"job {job_id} did not finish within" in daemon.log()
    assert [j.state for j in read_jobs(daemon.state / "jobs.sqlite")] == [QUEUED]
    assert list(daemon.output.iterdir()) == []


def test_second_signal_exits_at_once_and_the_job_resumes_at_the_next_start(daemon_with_sources, make_clip) -> None:
    daemon, peer, sources = daemon_with_sources
    daemon.drain_timeout = 60.0  # the first signal alone would wait for the whole job
    # Long enough (several seconds even on this machine) that the second signal lands
    # mid-job: a one-second job once finished in the moment between the two signals on a
    # stalled CI machine, and then there was nothing left to resume.
    clip = make_clip("long.wav", seconds=240.0, folder=sources, seed=1)
    behind = make_clip("behind.wav", seconds=1.0, folder=sources, seed=2)
    daemon.start()
    peer.send(daemon.port, "/stembridge/separate", str(clip))
    job_id = peer.receive("/stembridge/queued")[0]
    peer.send(daemon.port, "/stembridge/separate", str(behind))
    behind_id = peer.receive("/stembridge/queued")[0]
    peer.receive("/stembridge/progress", match=job_id, timeout=60)
    daemon.send_signal(signal.SIGTERM)
    daemon.wait_for(f"waiting up to 60 s for job {job_id}")
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=5) == 130
    assert "second signal" in daemon.log()
    states = {j.id: j.state for j in read_jobs(daemon.state / "jobs.sqlite")}
    assert states == {job_id: RUNNING, behind_id: QUEUED}, f"the job ended before the second signal:\n{daemon.log()}"
    # Only the running job's temporary files, if it got that far: nothing a DAW would import.
    assert [p for p in daemon.output.rglob("*") if p.is_file() and ".stembridge-tmp" not in p.name] == []

    daemon.drain_timeout = 5.0
    daemon.start()
    assert f"job {job_id} was interrupted; re-queued" in daemon.log()
    assert "2 jobs to resume" in daemon.log()
    daemon.wait_for(rf"job {job_id} done", timeout=180)
    daemon.wait_for(rf"job {behind_id} done", timeout=60)
    assert (daemon.output / "long" / "stems.json").is_file()
    assert (daemon.output / "behind" / "stems.json").is_file()
