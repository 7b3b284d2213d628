"""`stembridge preview`: render a preview of a finished stem set with pedalboard.

    stembridge preview ~/Music/StemBridge/Stems/song/stems.json --set vocals.gain_db=3 \\
        --set "vocals.fx=highpassfilter:cutoff_frequency_hz=80;compressor:ratio=3" --set drums.mute=1

Reads the published stems (never separates again), writes `<clip>_preview.<ext>` beside them
and records it in stems.json. A job id is looked up in the daemon's job store (read-only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bridge.errors import ConfigError

NAME = "preview"
HELP = "render a preview mix of a stem set (per-stem gain, mute, solo, pan, pedalboard effects)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", nargs="?", metavar="MANIFEST_OR_JOB",
                        help="a stems.json, the folder holding it, or a job id")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="e.g. vocals.gain_db=3, drums.mute=1, bass.pan=-0.5, "
                             "'vocals.fx=compressor:threshold_db=-18,ratio=3', master.gain_db=-1 (repeatable)")
    parser.add_argument("--preset", metavar="NAME", help="start from a named preset (built-in or from the presets file)")
    parser.add_argument("--presets-file", type=Path, metavar="TOML",
                        help="presets file (default: presets.toml in the per-user config folder, if present)")
    parser.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file (to find the job store)")
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="the daemon's state folder (job ids)")
    parser.add_argument("--json", action="store_true", help="print {\"preview\": path, \"manifest\": path}")


def _job_resolver(args: argparse.Namespace):
    """Map a job id to its manifest through the daemon's SQLite store, read-only."""
    def resolve(job_id: str) -> Path | None:
        from bridge.config import load_config
        from bridge.jobs.store import read_jobs

        flags = {"paths.state_dir": (args.state_dir, "--state-dir")} if args.state_dir else {}
        db = load_config(args.config, flags=flags).sqlite_path
        if not db.exists():
            return None
        for job in read_jobs(db, job_id):
            if job.manifest is None:
                raise ConfigError(f"job {job_id} has no stems yet (state: {job.state})")
            return job.manifest
        return None

    return resolve


def run(args: argparse.Namespace) -> int:
    # pedalboard is imported only when a preview is actually rendered, not for every command.
    from bridge.preview import PreviewRenderer, resolve_target

    with PreviewRenderer(presets_file=args.presets_file) as renderer:
        if args.list_presets:
            for name in sorted(renderer.presets):
                print(name)
            return 0
        if not args.target:
            raise ConfigError("preview: name a stems.json, its folder or a job id (MANIFEST_OR_JOB)")
        manifest = resolve_target(args.target, _job_resolver(args))
        path = renderer.render(manifest, args.overrides, args.preset)
    if args.json:
        print(json.dumps({"preview": str(path), "manifest": str(manifest)}))
    else:
        print(path)
    return 0
