"""The preview model: per-stem gain, mute, solo, pan and effect chain, plus a master chain.

Two ways in, one path through: `key=value` override strings (CLI `--set`, OSC arguments) and
TOML preset tables are both flattened to (key, value) pairs and applied by `PreviewSpec.apply`.

Keys are `TARGET.FIELD`, TARGET a stem name (`vocals`, `drums`, ...) or `master`:
  gain_db  number, -120..36          mute  1/0, true/false, yes/no, on/off
  solo     as mute                   pan   -1 (left) .. 1 (right), stereo sets only
  fx       a chain: `EFFECT[:param=value[,param=value...]][;EFFECT...]`, EFFECT a pedalboard
           class name in any case (`highpassfilter:cutoff_frequency_hz=80;compressor:ratio=3`)
           or `plugin:PATH[:param=value,...]` for a VST3/AU file. An empty value clears it.
`master` takes gain_db and fx only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Iterable

from bridge.errors import ConfigError
from bridge.preview.effects import (PLUGIN_SUFFIXES, EffectSpec, Value, make_effect_spec, make_plugin_spec,
                                    parse_number)

MASTER = "master"
TRACK_FIELDS = ("gain_db", "mute", "solo", "pan", "fx")
MASTER_FIELDS = ("gain_db", "fx")
GAIN_RANGE_DB = (-120.0, 36.0)
_TARGET = re.compile(r"^[A-Za-z0-9_\-]+$")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}


@dataclass(frozen=True)
class TrackSpec:
    """How one stem (or the master) is heard. Defaults leave the stem untouched."""

    gain_db: float = 0.0
    mute: bool = False
    solo: bool = False
    pan: float = 0.0
    fx: tuple[EffectSpec, ...] = ()


@dataclass(frozen=True)
class PreviewSpec:
    tracks: dict[str, TrackSpec] = field(default_factory=dict)
    master: TrackSpec = TrackSpec()

    def track(self, stem: str) -> TrackSpec:
        return self.tracks.get(stem, TrackSpec())

    @classmethod
    def parse(cls, overrides: Iterable[str], base: PreviewSpec | None = None,
              stems: Iterable[str] | None = None) -> PreviewSpec:
        """Apply `key=value` strings on top of `base` (default: every stem untouched).
        With `stems`, a key naming another stem is an error. Raises ConfigError (one line)."""
        pairs = [split_override(text) for text in overrides]
        return (base or cls()).apply(pairs, stems=stems)

    def apply(self, pairs: Iterable[tuple[str, Value | list]], stems: Iterable[str] | None = None,
              origin: str = "") -> PreviewSpec:
        """A new spec with each (TARGET.FIELD, value) set in order; `origin` prefixes errors
        (e.g. the preset's name) so the user knows where the bad value came from."""
        known = set(stems) if stems is not None else None
        tracks = dict(self.tracks)
        master = self.master
        for key, value in pairs:
            where = f"{origin}{key}"
            target, _, name = key.partition(".")
            if not name or not _TARGET.match(target):
                raise ConfigError(f"{where}: expected STEM.FIELD=VALUE (e.g. vocals.gain_db=3)")
            if target == MASTER:
                if name not in MASTER_FIELDS:
                    raise ConfigError(f"{where}: master has no field {name!r}; valid: {', '.join(MASTER_FIELDS)}")
                master = _set(master, name, value, where)
                continue
            if name not in TRACK_FIELDS:
                raise ConfigError(f"{where}: unknown field {name!r}; valid: {', '.join(TRACK_FIELDS)}")
            if known is not None and target not in known:
                raise ConfigError(f"{where}: no stem {target!r} in this set; stems: {', '.join(sorted(known))}")
            tracks[target] = _set(tracks.get(target, TrackSpec()), name, value, where)
        return PreviewSpec(tracks, master)

    def check_stems(self, stems: Iterable[str]) -> None:
        """Fail when the spec (e.g. a preset) names stems this set does not have."""
        known = set(stems)
        for name in self.tracks:
            if name not in known:
                raise ConfigError(f"no stem {name!r} in this set; stems: {', '.join(sorted(known))}")


def split_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{text!r}: expected STEM.FIELD=VALUE (e.g. vocals.gain_db=3)")
    return key.strip(), value.strip()


def _set(track: TrackSpec, name: str, value: Value | list, where: str) -> TrackSpec:
    if name == "fx":
        return replace(track, fx=parse_chain(value, where))
    if isinstance(value, list):
        raise ConfigError(f"{where}: expected a single value, got a list")
    if name in ("mute", "solo"):
        return replace(track, **{name: _bool(value, where)})
    number = parse_number(value, where)
    if name == "gain_db" and not GAIN_RANGE_DB[0] <= number <= GAIN_RANGE_DB[1]:
        raise ConfigError(f"{where}: gain {number:g} dB is outside {GAIN_RANGE_DB[0]:g}..{GAIN_RANGE_DB[1]:g}")
    if name == "pan" and not -1.0 <= number <= 1.0:
        raise ConfigError(f"{where}: pan {number:g} is outside -1 (left) .. 1 (right)")
    return replace(track, **{name: number})


def _bool(value: Value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    flag = _BOOLS.get(str(value).strip().lower())
    if flag is None:
        raise ConfigError(f"{where}: expected 1/0, true/false, yes/no or on/off, got {value!r}")
    return flag


def parse_chain(value: Value | list, where: str) -> tuple[EffectSpec, ...]:
    """A chain from a string (`a:k=v;b`), a TOML list of such strings, or a TOML list of tables
    (`{effect = "compressor", ratio = 3}` / `{plugin = "/x.vst3", mix = 0.5}`)."""
    if isinstance(value, list):
        chain: list[EffectSpec] = []
        for item in value:
            if isinstance(item, dict):
                chain.append(_entry_from_table(item, where))
            elif isinstance(item, str):
                chain.extend(parse_chain(item, where))
            else:
                raise ConfigError(f"{where}: chain entries are strings or tables, got {item!r}")
        return tuple(chain)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected an effect chain such as 'compressor:ratio=3', got {value!r}")
    return tuple(_entry_from_text(entry.strip(), where) for entry in value.split(";") if entry.strip())


def _entry_from_text(entry: str, where: str) -> EffectSpec:
    if entry.lower().startswith("plugin:"):
        path, params_text = _split_plugin(entry[len("plugin:"):])
        return make_plugin_spec(path, _params(params_text, where), where)
    name, _, params_text = entry.partition(":")
    return make_effect_spec(name, _params(params_text, where), where)


def _split_plugin(rest: str) -> tuple[str, str]:
    """`PATH[:params]`. The path may hold colons (C:\\...), so it ends at the plugin suffix;
    failing that, at the last colon followed by a `k=v` list."""
    lower = rest.lower()
    for suffix in PLUGIN_SUFFIXES:
        cut = lower.find(suffix + ":")
        if cut >= 0:
            end = cut + len(suffix)
            return rest[:end], rest[end + 1:]
        if lower.endswith(suffix):
            return rest, ""
    head, sep, tail = rest.rpartition(":")
    if sep and "=" in tail:
        return head, tail
    return rest, ""


def _params(text: str, where: str) -> list[tuple[str, Value]]:
    params = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: effect parameter {item!r} should be name=value")
        params.append((key.strip(), value.strip()))
    return params


def _entry_from_table(table: dict, where: str) -> EffectSpec:
    params = [(k, v) for k, v in table.items() if k not in ("effect", "plugin")]
    if "plugin" in table and "effect" not in table:
        return make_plugin_spec(str(table["plugin"]), params, where)
    if "effect" in table and "plugin" not in table:
        return make_effect_spec(str(table["effect"]), params, where)
    raise ConfigError(f"{where}: a chain table needs exactly one of 'effect' or 'plugin', got {sorted(table)}")
