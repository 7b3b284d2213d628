"""The daemon's one typed config object and the layers it is built from.

Layers, later wins: defaults shipped in the package (`defaults.toml` plus per-platform
folders from `bridge.paths`) → a TOML file → `STEMBRIDGE_<SECTION>_<KEY>` environment →
command-line flags. Each value remembers which layer set it, so start-up can log where every
non-default value came from (a wrong port is then one log line away from its cause).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

from bridge import paths
from bridge.errors import ConfigError

Device = Literal["auto", "cpu", "cuda", "mps"]
Quality = Literal["preview", "render"]
LogLevel = Literal["debug", "info", "warning"]

ENV_PREFIX = "STEMBRIDGE_"
CONFIG_ENV = "STEMBRIDGE_CONFIG"
DEFAULT = "default"


@dataclass(frozen=True)
class Config:
    """Field `section_key` is TOML key `section.key` and variable STEMBRIDGE_SECTION_KEY."""

    paths_watch: tuple[Path, ...]
    paths_output: Path
    paths_state_dir: Path
    paths_allowed_roots: tuple[Path, ...] = ()
    osc_host: str = "127.0.0.1"
    osc_port: int = 9010
    osc_allow: tuple[str, ...] = ()
    osc_max_subscribers: int = 16
    engine_device: Device = "auto"
    engine_model: str | None = None
    engine_model_repo: Path | None = None
    engine_cache_dir: Path | None = None
    engine_quality: Quality = "render"
    engine_use_cache: bool = True
    engine_dawproject: bool = False
    preview_auto: bool = False
    preview_preset: str | None = None
    preview_presets_file: Path | None = None
    preview_cache_mb: int = 1024
    daemon_drain_timeout: float = 10.0
    daemon_log_level: LogLevel = "info"
    # key ("osc.port") -> where its value came from ("env STEMBRIDGE_OSC_PORT"); defaults absent.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def non_default(self) -> list[tuple[str, Any, str]]:
        """(key, value, origin) for every value not taken from the shipped defaults."""
        return [(key, getattr(self, _attr(key)), origin) for key, origin in sorted(self.origins.items())]

    @property
    def sqlite_path(self) -> Path:
        return self.paths_state_dir / "jobs.sqlite"


# How a raw value of each kind is checked and converted; `text` parses env/flag strings.
_KIND: dict[str, str] = {
    "paths_watch": "paths", "paths_output": "path", "paths_state_dir": "path",
    "paths_allowed_roots": "paths", "osc_host": "str", "osc_port": "port", "osc_allow": "strs",
    "osc_max_subscribers": "count", "engine_device": "choice", "engine_model": "str",
    "engine_model_repo": "path", "engine_cache_dir": "path", "engine_quality": "choice",
    "engine_use_cache": "bool", "engine_dawproject": "bool",
    "preview_auto": "bool", "preview_preset": "str", "preview_presets_file": "path", "preview_cache_mb": "count",
    "daemon_drain_timeout": "seconds", "daemon_log_level": "choice",
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "engine_device": ("auto", "cpu", "cuda", "mps"),
    "engine_quality": ("preview", "render"),
    "daemon_log_level": ("debug", "info", "warning"),
}


def _attr(key: str) -> str:
    return key.replace(".", "_", 1)


def _key(attr: str) -> str:
    return attr.replace("_", ".", 1)


KEYS: tuple[str, ...] = tuple(_key(f.name) for f in fields(Config) if f.name != "origins")


def _convert(key: str, value: Any, where: str, base: Path | None, from_env: bool = False) -> Any:
    """Check one value: typed from a TOML file or argparse, a string from the environment."""
    attr = _attr(key)
    kind = _KIND[attr]
    from_text = from_env and isinstance(value, str)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {expected}, not {value!r}")

    if kind in ("path", "paths"):
        items = value
        if kind == "paths":
            if from_text:
                items = [p for p in value.split(os.pathsep) if p]
            if not isinstance(items, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in items):
                raise bad("a list of folders")
            return tuple(_path(p, base) for p in items)
        if not isinstance(value, (str, Path)) or not str(value):
            raise bad("a path")
        return _path(value, base)
    if kind == "strs":
        items = [s.strip() for s in value.split(",") if s.strip()] if from_text else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
            raise bad("a list of strings")
        return tuple(items)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if from_text and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise bad("true or false")
    if kind in ("port", "count"):
        if from_text:
            try:
                value = int(value.strip())
            except ValueError:
                raise bad("a whole number") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        if kind == "port" and not 0 <= value <= 65535:
            raise bad("a port number 0-65535 (0: any free port)")
        if kind == "count" and value < 1:
            raise bad("at least 1")
        return value
    if kind == "seconds":
        if from_text:
            try:
                value = float(value.strip())
            except ValueError:
                raise bad("a number of seconds") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise bad("a number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise bad("a string")
    if kind == "choice" and value not in _CHOICES[attr]:
        raise bad("one of " + ", ".join(_CHOICES[attr]))
    return value


def _path(value: str | Path, base: Path | None) -> Path:
    # A relative path in a config file means relative to that file, not to wherever the
    # daemon happened to be started (launchd and systemd start it in / or $HOME).
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return Path(os.path.abspath(path))


def _flatten_toml(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: '{section}' must be a [section] table (sections: paths, osc, engine, daemon)")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in KEYS:
                raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(KEYS)})")
            flat[key] = value
    return flat


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def default_config_file() -> Path:
    return paths.config_dir() / "config.toml"


def load_config(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
) -> Config:
    """Build the config from every layer.

    `config_file`: an explicit file (must exist); None reads $STEMBRIDGE_CONFIG or the per-user
    default file if present. `env`: defaults to os.environ. `flags`: key → (value, flag name),
    only for flags the user actually gave.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {
        "paths.watch": (paths.default_watch_dir(),),
        "paths.output": paths.default_output_dir(),
        "paths.state_dir": paths.state_dir(),
    }
    shipped = resources.files("bridge").joinpath("defaults.toml").read_text(encoding="utf-8")
    for key, value in _flatten_toml(tomllib.loads(shipped), "bridge/defaults.toml").items():
        values[key] = _convert(key, value, "bridge/defaults.toml", None)
    origins: dict[str, str] = {}

    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    explicit = config_file is not None
    config_file = Path(config_file).expanduser() if explicit else default_config_file()
    if explicit or config_file.is_file():
        if explicit and not config_file.is_file():
            raise ConfigError(f"{config_file}: config file not found")
        where = str(config_file)
        for key, value in _flatten_toml(_read_toml(config_file), where).items():
            values[key] = _convert(key, value, where, config_file.parent.absolute())
            origins[key] = f"config {config_file}"

    for key in KEYS:
        name = ENV_PREFIX + _attr(key).upper()
        if name in env:
            values[key] = _convert(key, env[name], f"environment {name}", None, from_env=True)
            origins[key] = f"env {name}"

    for key, (value, flag) in (flags or {}).items():
        if key not in KEYS:
            raise ConfigError(f"{flag}: no config key '{key}'")
        values[key] = _convert(key, value, flag, None)
        origins[key] = f"flag {flag}"

    config = Config(**{_attr(k): v for k, v in values.items()}, origins=origins)
    if not config.paths_watch:
        raise ConfigError("paths.watch: at least one watch folder is needed")
    return config

