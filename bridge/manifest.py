"""`stems.json`, version 1: the manifest whose presence means a stem set is complete.

Fields (DESIGN.md): version, job_id, source (absolute), source_hash, sample_rate, frames,
channels, time_reference (int or null), model, quality, device, stems (name -> file name
relative to the manifest), preview (file or null), created (ISO 8601).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bridge.atomic import write_bytes_atomic
from bridge.errors import InputError

MANIFEST_NAME = "stems.json"
VERSION = 1
REQUIRED = ("version", "job_id", "source", "source_hash", "sample_rate", "frames", "channels",
            "time_reference", "model", "quality", "device", "stems", "preview", "created")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_manifest(path: Path | str) -> dict[str, Any]:
    """Load and check a manifest; InputError with a clear reason when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "no such manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable stems.json ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "not a stems.json manifest")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise InputError(path, f"manifest lacks {', '.join(missing)}")
    if data["version"] != VERSION:
        raise InputError(path, f"manifest version {data['version']} is not supported (expected {VERSION})")
    return data


def write_manifest(path: Path | str, data: dict[str, Any]) -> None:
    """Write atomically: readers see the old manifest or the new one, never a mix."""
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ValueError(f"manifest lacks {', '.join(missing)}")
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    write_bytes_atomic(Path(path), text.encode("utf-8"))
