"""A small error hierarchy. Library code raises these; only the CLI and the daemon edge
turn them into exit codes, log lines and OSC error replies."""

from __future__ import annotations

from pathlib import Path


class StemBridgeError(Exception):
    """Base of every error a user can act on. `str()` is one clear line."""

    exit_code = 1


class InputError(StemBridgeError):
    """A source file that cannot be separated: missing, not audio, empty, truncated..."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelUnavailableError(StemBridgeError):
    """The requested model is not on this machine and cannot be fetched."""


class ConfigError(StemBridgeError):
    """An invalid option, config value or request parameter."""


class OutputError(StemBridgeError):
    """The stems could not be written where they belong."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class StartupError(StemBridgeError):
    """The daemon cannot start (port busy, folder unwritable)."""

    exit_code = 3


class Cancelled(StemBridgeError):
    """A separation was cancelled on request. Nothing it produced is published."""

    exit_code = 130
