"""`stembridge status`: the daemon and its jobs, read straight from the state folder.

Reads the SQLite job store read-only, so it works whether or not the daemon runs and needs
no OSC round trip (`stembridge send /stembridge/status` asks the running daemon instead).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bridge.config import load_config
from bridge.daemon import INFO_FILE
from bridge.errors import ConfigError
from bridge.jobs.store import Job, read_jobs

NAME = "status"
HELP = "show whether the daemon runs and the state of its jobs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", nargs="?", metavar="JOB_ID", help="show only this job")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (for paths.state_dir)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="the daemon's state folder")
    parser.add_argument("--limit", type=int, default=20, metavar="N", help="show the N most recent jobs (default 20)")
    parser.add_argument("--json", action="store_true", help="one JSON object: daemon and jobs")


def daemon_info(state_dir: Path) -> dict | None:
    """The running daemon's pid and OSC address, or None if none runs on this state folder."""
    try:
        info = json.loads((state_dir / INFO_FILE).read_text(encoding="utf-8"))
        os.kill(int(info["pid"]), 0)  # signal 0: only checks that the process exists
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info


def _as_dict(job: Job) -> dict:
    return {"id": job.id, "state": job.state, "progress": round(job.progress, 3), "stage": job.stage,
            "source": str(job.source), "quality": job.quality, "origin": job.origin,
            "manifest": str(job.manifest) if job.manifest else None, "error": job.error}


def _line(job: Job) -> str:
    detail = str(job.manifest) if job.manifest else job.error or job.stage
    return f"{job.id}  {job.state:<9} {job.progress * 100:5.1f}%  {job.source}" + (f"  ({detail})" if detail else "")


def run(args: argparse.Namespace) -> int:
    flags = {"paths.state_dir": (args.state_dir, "--state-dir")} if args.state_dir else {}
    config = load_config(args.config, flags=flags)
    state_dir = config.paths_state_dir
    info = daemon_info(state_dir)
    db = config.sqlite_path
    jobs = list(read_jobs(db, args.job_id)) if db.exists() else []
    if args.job_id and not jobs:
        raise ConfigError(f"no job with id {args.job_id!r} in {db}")
    jobs = jobs[-args.limit:] if args.limit > 0 else jobs
    if args.json:
        print(json.dumps({"daemon": info, "state_dir": str(state_dir), "jobs": [_as_dict(j) for j in jobs]}))
        return 0
    if info:
        print(f"daemon: running (pid {info['pid']}), OSC on {info['osc_host']}:{info['osc_port']}")
    else:
        print(f"daemon: not running (state folder {state_dir})")
    if not jobs:
        print("no jobs yet")
    for job in jobs:
        print(_line(job))
    return 0
