"""Previews of a stem set rendered with pedalboard: per-stem gain, mute, solo, pan and effect
chain (built-in effects or hosted VST3/AU plugins), plus a master chain.

API (for the CLI and the daemon):

    from bridge.preview import PreviewRenderer, PreviewSpec, osc_preview, set_job_resolver

    renderer = PreviewRenderer(presets_file=None, max_cache_bytes=1 << 30)  # hold one per process
    path = renderer.render(manifest_path, ["vocals.gain_db=3", "drums.mute=1"], preset=None)
    renderer.close()                    # or use it as a context manager

- `render` writes `<clip>_preview.<ext>` beside the stems (same rate, frames, channels,
  sample format and bext TimeReference as the stems; temp name + rename) and sets `preview`
  in stems.json. Processed stems stay cached (bounded LRU, keyed by stem file identity and
  chain), so gain/mute/solo/pan changes re-mix without re-running effects. Thread-safe.
- `PreviewSpec.parse(overrides, base=None, stems=None)` checks key=value strings without
  rendering; ConfigError (one line) for bad keys, values, unknown effects, missing plugins.
  Key syntax: see bridge.preview.spec; TOML presets: see bridge.preview.presets.
- `preview_handler(renderer, resolver)` is the `preview_handler` argument of
  bridge.osc.server.OscServer: (job_id, options dict) -> path, errors raised.
- `osc_preview(renderer, osc_args, resolver)` answers `/stembridge/preview s:job_id
  [s:key=value ...]` with the reply (address, args): preview_ready or error.
- `AutoPreview(renderer, on_ready, on_error, preset)` is a job listener that renders a default
  preview after each preview-quality job on its own thread (start()/stop(); listeners must
  not block the worker).
- `set_job_resolver(fn)` lets the daemon's job store map job ids to manifests (the CLI's
  `stembridge preview JOB` uses it too); `resolve_target(text)` applies it.
"""

from bridge.preview.auto import AutoPreview
from bridge.preview.render import PreviewRenderer
from bridge.preview.requests import osc_preview, preview_handler, resolve_target, set_job_resolver
from bridge.preview.spec import PreviewSpec, TrackSpec

__all__ = ["AutoPreview", "PreviewRenderer", "PreviewSpec", "TrackSpec", "osc_preview", "preview_handler", "resolve_target",
           "set_job_resolver"]
