"""Default per-user folders, following each platform's conventions.

Every default can be overridden (config file, STEMBRIDGE_* environment, flags); these only
decide where a new user's files land when nothing is configured.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _home() -> Path:
    return Path.home()


def config_dir() -> Path:
    if sys.platform == "darwin":
        return _home() / "Library" / "Application Support" / "StemBridge"
    if os.name == "nt":
        return Path(os.environ.get("APPDATA", _home() / "AppData" / "Roaming")) / "StemBridge"
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config") / "stembridge"


def cache_dir() -> Path:
    if sys.platform == "darwin":
        return _home() / "Library" / "Caches" / "StemBridge"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", _home() / "AppData" / "Local")) / "StemBridge" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or _home() / ".cache") / "stembridge"


def state_dir() -> Path:
    if sys.platform == "darwin":
        return config_dir() / "state"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", _home() / "AppData" / "Local")) / "StemBridge" / "state"
    return Path(os.environ.get("XDG_STATE_HOME") or _home() / ".local" / "state") / "stembridge"


def default_watch_dir() -> Path:
    """Where a new user drops bounces: visible, next to their music."""
    return _home() / "Music" / "StemBridge" / "Bounces"


def default_output_dir() -> Path:
    return _home() / "Music" / "StemBridge" / "Stems"
