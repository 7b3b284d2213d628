"""Named previews in TOML: a few built in, more in the user's presets file.

    [presets.vocal_focus]
    vocals = { gain_db = 3, fx = "highpassfilter:cutoff_frequency_hz=80;compressor:ratio=3" }
    drums.gain_db = -6
    master.fx = [{ effect = "limiter", threshold_db = -1 }]

Each table under `presets` maps TARGET -> FIELD -> value, with the same targets, fields and
chain syntax as `key=value` overrides (see bridge.preview.spec).
"""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a declared dependency)
    import tomli as tomllib  # type: ignore[no-redef]

from bridge.errors import ConfigError
from bridge.paths import config_dir
from bridge.preview.spec import PreviewSpec

# Shipped as TOML rather than Python so they go through the same parser users' files do.
BUILTIN_TOML = """
[presets.flat]
# every stem at unity: the preview should sound like the source

[presets.karaoke]
vocals.mute = true

[presets.a_cappella]
vocals.solo = true

[presets.drumless]
drums.mute = true

[presets.bassless]
bass.mute = true

[presets.vocal_up]
vocals = { gain_db = 3, fx = "highpassfilter:cutoff_frequency_hz=80;compressor:threshold_db=-18,ratio=3" }
"""


def default_presets_file() -> Path:
    return config_dir() / "presets.toml"


def parse_presets(text: str, origin: str) -> dict[str, PreviewSpec]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"presets"})
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)}; presets go under [presets.NAME]")
    presets = {}
    for name, table in data.get("presets", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: presets.{name} should be a table")
        presets[name] = PreviewSpec().apply(_flatten(table, f"{origin}: presets.{name}"),
                                            origin=f"{origin}: presets.{name}: ")
    return presets


def _flatten(table: dict, where: str) -> list[tuple[str, object]]:
    pairs = []
    for target, fields in table.items():
        if not isinstance(fields, dict):
            raise ConfigError(f"{where}.{target}: expected a table of fields such as gain_db, mute, fx")
        pairs.extend((f"{target}.{name}", value) for name, value in fields.items())
    return pairs


def load_presets(path: Path | None = None) -> dict[str, PreviewSpec]:
    """Built-in presets overlaid by a TOML file: `path` if given (it must exist), else the
    user's presets file when there is one."""
    presets = parse_presets(BUILTIN_TOML, "built-in presets")
    if path is None:
        path = default_presets_file()
        if not path.is_file():
            return presets
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read presets file: {exc.strerror or exc}") from None
    presets.update(parse_presets(text, str(path)))
    return presets


def get_preset(presets: dict[str, PreviewSpec], name: str) -> PreviewSpec:
    try:
        return presets[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(sorted(presets))}") from None
