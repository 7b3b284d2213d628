"""Turning a request (CLI argument, OSC message) into a manifest path and a preview.

A request names a stem set by its stems.json, its folder, or a job id. Job ids are known to
the daemon's job store, which registers a resolver here at start-up; without one (the CLI on
its own) only paths are understood.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from bridge.errors import ConfigError, StemBridgeError
from bridge.manifest import MANIFEST_NAME
from bridge.preview.render import PreviewRenderer

log = logging.getLogger(__name__)

# job id -> its stems.json, or None when the store does not know the id.
JobResolver = Callable[[str], "Path | None"]
_job_resolver: JobResolver | None = None

PREVIEW_READY = "/stembridge/preview_ready"
ERROR = "/stembridge/error"


def set_job_resolver(resolver: JobResolver | None) -> None:
    """Install (or with None remove) the function that finds a job's manifest."""
    global _job_resolver
    _job_resolver = resolver


def resolve_target(target: str, resolver: JobResolver | None = None) -> Path:
    """The stems.json that `target` (a manifest, its folder, or a job id) names."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME
    if path.is_file():
        return path
    resolver = resolver or _job_resolver
    if resolver is not None:
        found = resolver(target)
        if found is not None:
            return Path(found)
        raise ConfigError(f"{target}: no such stems.json, stem folder or job")
    raise ConfigError(f"{target}: no such stems.json or stem folder "
                      "(job ids are resolved by a running daemon's job store)")


def preview_handler(renderer: PreviewRenderer,
                    resolver: JobResolver | None = None) -> Callable[[str, dict[str, str]], Path]:
    """The `preview_handler` for bridge.osc.server.OscServer: (job_id, options) -> preview
    path, raising StemBridgeError subclasses the server turns into `/stembridge/error`.
    Option `preset` picks a preset; every other option is a `STEM.FIELD` override."""
    def handle(job_id: str, options: dict[str, str]) -> Path:
        preset = options.get("preset") or None
        overrides = [f"{key}={value}" for key, value in options.items() if key != "preset"]
        return renderer.render(resolve_target(job_id, resolver), overrides, preset)

    return handle


def osc_preview(renderer: PreviewRenderer, args: Sequence[object],
                resolver: JobResolver | None = None) -> tuple[str, list[object]]:
    """Handle `/stembridge/preview s:job_id [s:key=value ...]`; returns the reply
    (address, arguments): `/stembridge/preview_ready s:job_id s:path`, or
    `/stembridge/error s:job_id s:message` for any user-facing failure. Never raises those.

    `preset=NAME` among the arguments selects a preset, as `--preset` does on the CLI."""
    if not args or not isinstance(args[0], str) or not args[0]:
        return ERROR, ["", "/stembridge/preview needs a job id (s:job_id [s:key=value ...])"]
    job_id = args[0]
    try:
        rest = [str(a) for a in args[1:]]
        preset = None
        overrides = []
        for item in rest:
            if item.startswith("preset="):
                preset = item.partition("=")[2].strip() or None
            else:
                overrides.append(item)
        manifest = resolve_target(job_id, resolver)
        path = renderer.render(manifest, overrides, preset)
    except StemBridgeError as exc:
        log.info("preview for %s failed: %s", job_id, exc)
        return ERROR, [job_id, str(exc)]
    return PREVIEW_READY, [job_id, str(path)]
