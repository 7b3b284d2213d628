"""Pedalboard effect chains: name lookup, parameter checking and hosted plugins.

The only module of StemBridge that imports pedalboard. Effect names are pedalboard's class
names (any case); parameter names are the keyword arguments of that class's constructor, read
from pedalboard itself so a new pedalboard release brings its new effects and parameters along.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pedalboard

from bridge.errors import ConfigError

Value = Union[str, float, int, bool]

# Containers, hosts and abstract bases: not effects one can name in a chain.
_NOT_EFFECTS = {"Plugin", "Pedalboard", "Chain", "Mix", "PluginContainer", "ExternalPlugin",
                "VST3Plugin", "AudioUnitPlugin", "IIRFilter"}
# pedalboard hosts VST3 everywhere and Audio Units on macOS; nothing else (no VST2, no LV2).
PLUGIN_SUFFIXES = (".vst3", ".component")
# Not plugin parameters: load_plugin's own keyword, so a multi-plugin bundle can be used.
PLUGIN_NAME_KEY = "plugin_name"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class EffectSpec:
    """One entry of a chain: a built-in effect (`name` is pedalboard's class name) or a hosted
    plugin (`name` is "plugin", `path` its file). Hashable, so chains can key the stem cache."""

    name: str
    params: tuple[tuple[str, Value], ...] = ()
    path: str | None = None

    def describe(self) -> str:
        head = f"plugin:{self.path}" if self.path is not None else self.name.lower()
        body = ",".join(f"{k}={getattr(v, 'name', v)}" for k, v in self.params)
        return f"{head}:{body}" if body else head


@dataclass(frozen=True)
class _EffectClass:
    cls: type
    params: dict[str, str]  # constructor keyword -> its type as pedalboard documents it


def _split_top_level(text: str) -> list[str]:
    """Split a signature's argument list on commas outside brackets (`Union[str, ...]`)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _constructor_params(cls: type) -> dict[str, str]:
    # pybind11 constructors carry no inspectable signature, only this documented one.
    doc = (cls.__init__.__doc__ or "").strip().splitlines()
    match = re.match(r"__init__\((.*)\)\s*->", doc[0]) if doc else None
    params: dict[str, str] = {}
    for arg in _split_top_level(match.group(1)) if match else []:
        name, _, rest = arg.partition(":")
        if name.strip() == "self":
            continue
        params[name.strip()] = rest.split(" = ", 1)[0].strip()
    return params


def _discover() -> dict[str, _EffectClass]:
    found: dict[str, _EffectClass] = {}
    for attr in dir(pedalboard):
        cls = getattr(pedalboard, attr)
        if (isinstance(cls, type) and issubclass(cls, pedalboard.Plugin)
                and attr not in _NOT_EFFECTS and not attr.startswith("_")):
            found[attr.lower()] = _EffectClass(cls, _constructor_params(cls))
    return found


EFFECTS: dict[str, _EffectClass] = _discover()


def effect_names() -> list[str]:
    """Pedalboard's effect class names, as users may write them (any case)."""
    return sorted(e.cls.__name__ for e in EFFECTS.values())


def canonical_name(name: str, where: str) -> str:
    entry = EFFECTS.get(name.strip().lower())
    if entry is None:
        raise ConfigError(f"{where}: unknown effect {name.strip()!r}; "
                          f"effects: {', '.join(effect_names())}, or plugin:PATH")
    return entry.cls.__name__


def parse_number(value: Value, where: str, shown: object = None) -> float:
    """A finite number from a key=value string or a TOML value (booleans are not numbers);
    ConfigError naming `where` and the value as given (`shown`) otherwise."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a number, got {(value if shown is None else shown)!r}")
    return number


def _coerce(value: Value, kind: str, where: str) -> object:
    """Turn a key=value string (or a typed TOML value) into what the constructor accepts."""
    text = str(value).strip()
    if kind.startswith("Optional["):
        kind = kind[len("Optional["):-1]
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ConfigError(f"{where}: expected a boolean (1/0, true/false), got {text!r}")
    if kind in ("float", "int"):
        number = parse_number(value, where, shown=text)
        return int(number) if kind == "int" else number
    enum_type = _enum_type(kind)
    if enum_type is not None:
        members = dict(enum_type.__members__)
        for member_name, member in members.items():
            if member_name.lower() == text.lower():
                return member
        raise ConfigError(f"{where}: expected one of {', '.join(members)}, got {text!r}")
    # str or Union[str, ...]: a file name such as Convolution's impulse response.
    return text


def _enum_type(kind: str) -> type | None:
    # Documented as e.g. "pedalboard_native.LadderFilter.Mode": walk from the pedalboard module.
    parts = kind.split(".")
    if len(parts) < 2 or parts[0] != "pedalboard_native":
        return None
    obj: object = pedalboard
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, type) and hasattr(obj, "__members__") else None


def make_effect_spec(name: str, params: list[tuple[str, Value]], where: str) -> EffectSpec:
    """Check a built-in effect entry against pedalboard and return it with typed values.

    The effect is constructed once here so pedalboard's own range checks (e.g. "Compressor
    ratio must be a value >= 1.0.") surface while parsing, not halfway through a render."""
    cls_name = canonical_name(name, where)
    entry = EFFECTS[cls_name.lower()]
    typed: list[tuple[str, Value]] = []
    for key, value in params:
        if key not in entry.params:
            valid = ", ".join(entry.params) or "none"
            raise ConfigError(f"{where}: {cls_name} has no parameter {key!r}; valid: {valid}")
        typed.append((key, _coerce(value, entry.params[key], f"{where}: {cls_name}.{key}")))
    spec = EffectSpec(cls_name, tuple(typed))
    build_effect(spec, where)
    return spec


def make_plugin_spec(path: str, params: list[tuple[str, Value]], where: str) -> EffectSpec:
    """A hosted plugin entry. Its parameters are only known once loaded, so values stay as
    written (numbers as numbers); loading happens when a render needs the plugin."""
    check_plugin_path(path, where)
    typed: list[tuple[str, Value]] = []
    for key, value in params:
        if isinstance(value, str) and key != PLUGIN_NAME_KEY:
            try:
                value = float(value)
            except ValueError:
                pass
        typed.append((key, value))
    return EffectSpec("plugin", tuple(typed), path=str(Path(path).resolve()))


def build_effect(spec: EffectSpec, where: str) -> pedalboard.Plugin:
    """A fresh instance of a checked built-in effect (fresh: effects keep state between calls)."""
    entry = EFFECTS[spec.name.lower()]
    try:
        return entry.cls(**dict(spec.params))
    except (ValueError, TypeError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{where}: {entry.cls.__name__}: {reason}") from None


def check_plugin_path(path: str, where: str) -> None:
    """Cheap checks that need no loading: the file is there and is a kind pedalboard hosts."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where}: plugin file not found: {p}")
    if p.suffix.lower() not in PLUGIN_SUFFIXES:
        raise ConfigError(f"{where}: {p}: not a VST3 (.vst3) or Audio Unit (.component) plugin; "
                          "pedalboard hosts only those")


def load_plugin(spec: EffectSpec, where: str) -> pedalboard.Plugin:
    """Load a hosted plugin with its parameter values; every failure is one ConfigError line
    naming the file, raised before anything is rendered."""
    assert spec.path is not None
    check_plugin_path(spec.path, where)
    params = dict(spec.params)
    plugin_name = params.pop(PLUGIN_NAME_KEY, None)
    try:
        plugin = pedalboard.load_plugin(spec.path, plugin_name=None if plugin_name is None else str(plugin_name))
    except (ImportError, RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())  # pedalboard's message spans lines
        raise ConfigError(f"{where}: cannot load plugin {spec.path}: {reason}") from None
    if getattr(plugin, "is_instrument", False) and not getattr(plugin, "is_effect", True):
        raise ConfigError(f"{where}: {spec.path} is an instrument, not an effect")
    for key, value in params.items():
        if key not in plugin.parameters:
            raise ConfigError(f"{where}: plugin {spec.path} has no parameter {key!r}; "
                              f"valid: {', '.join(plugin.parameters)}")
        try:
            setattr(plugin, key, value)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{where}: plugin {spec.path}: {key}={value!r}: {exc}") from None
    return plugin


def build_chain(chain: tuple[EffectSpec, ...], where: str) -> pedalboard.Pedalboard:
    return pedalboard.Pedalboard([
        load_plugin(e, where) if e.path is not None else build_effect(e, where) for e in chain])


def process(board: pedalboard.Pedalboard, audio: np.ndarray, rate: int) -> np.ndarray:
    """Run a chain over (frames, channels) float32 audio and return the same layout and
    length (effect tails past the end are cut: the preview must match the stems' length)."""
    # pedalboard takes (channels, frames) and runs ~30 % slower on a strided view than on a
    # contiguous copy; the copy costs a few milliseconds.
    planar = np.ascontiguousarray(audio.T)
    out = board(planar, float(rate), reset=True)
    if out.shape != planar.shape:
        raise ConfigError(f"effect chain changed the audio shape {planar.shape} -> {out.shape}")
    return np.ascontiguousarray(out.T, dtype=np.float32)

