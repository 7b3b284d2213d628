"""Parsing previews: key=value overrides, effect chains, hosted-plugin entries, TOML presets.

Effects are checked against pedalboard itself (no stand-ins), so these tests also notice when
a pedalboard upgrade renames an effect or a parameter."""

from __future__ import annotations

from pathlib import Path

import pedalboard
import pytest

from bridge.errors import ConfigError
from bridge.preview.effects import EffectSpec, build_chain, effect_names
from bridge.preview.presets import get_preset, load_presets, parse_presets
from bridge.preview.spec import PreviewSpec, TrackSpec, _split_plugin

STEMS = ("drums", "bass", "other", "vocals")


def parse(*overrides: str) -> PreviewSpec:
    return PreviewSpec.parse(overrides, stems=STEMS)


def test_default_spec_leaves_every_stem_untouched() -> None:
    assert parse().track("vocals") == TrackSpec(0.0, False, False, 0.0, ())


def test_track_fields() -> None:
    spec = parse("vocals.gain_db=3", "drums.mute=1", "bass.solo=yes", "other.pan=-0.5", "vocals.mute=off")
    assert spec.track("vocals") == TrackSpec(gain_db=3.0)
    assert spec.track("drums").mute is True
    assert spec.track("bass").solo is True
    assert spec.track("other").pan == -0.5


@pytest.mark.parametrize("text, value", [("1", True), ("TRUE", True), ("on", True), ("0", False), ("No", False)])
def test_boolean_spellings(text: str, value: bool) -> None:
    assert parse(f"drums.mute={text}").track("drums").mute is value


def test_later_override_wins_and_builds_on_a_base() -> None:
    base = parse("vocals.gain_db=3", "drums.mute=1")
    spec = PreviewSpec.parse(["vocals.gain_db=-2"], base=base, stems=STEMS)
    assert spec.track("vocals").gain_db == -2.0 and spec.track("drums").mute is True
    assert base.track("vocals").gain_db == 3.0  # specs are values: the base is unchanged


def test_single_effect_with_typed_parameters() -> None:
    spec = parse("vocals.fx=compressor:threshold_db=-18,ratio=3")
    assert spec.track("vocals").fx == (EffectSpec("Compressor", (("threshold_db", -18.0), ("ratio", 3.0))),)


def test_chain_keeps_order_and_names_are_case_insensitive() -> None:
    spec = parse("vocals.fx=HighPassFilter:cutoff_frequency_hz=80; COMPRESSOR:ratio=3 ;reverb")
    assert [e.name for e in spec.track("vocals").fx] == ["HighpassFilter", "Compressor", "Reverb"]
    board = build_chain(spec.track("vocals").fx, "vocals.fx")
    assert isinstance(board[0], pedalboard.HighpassFilter) and board[0].cutoff_frequency_hz == 80
    assert isinstance(board[1], pedalboard.Compressor) and board[1].ratio == 3


def test_enum_parameter_by_member_name() -> None:
    spec = parse("bass.fx=ladderfilter:mode=hpf24,cutoff_hz=120")
    board = build_chain(spec.track("bass").fx, "bass.fx")
    assert board[0].mode == pedalboard.LadderFilter.Mode.HPF24 and board[0].cutoff_hz == 120


def test_empty_fx_clears_a_chain() -> None:
    base = parse("vocals.fx=reverb")
    assert PreviewSpec.parse(["vocals.fx="], base=base).track("vocals").fx == ()


def test_master_gain_and_chain() -> None:
    spec = parse("master.gain_db=-1", "master.fx=limiter:threshold_db=-3")
    assert spec.master.gain_db == -1.0
    assert spec.master.fx == (EffectSpec("Limiter", (("threshold_db", -3.0),)),)


@pytest.mark.parametrize("override, message", [
    ("vocals.gain_db", r"'vocals.gain_db': expected STEM.FIELD=VALUE"),
    ("gain_db=3", r"gain_db: expected STEM.FIELD=VALUE"),
    ("vocals.volume=3", r"vocals.volume: unknown field 'volume'; valid: gain_db, mute, solo, pan, fx"),
    ("vox.gain_db=3", r"vox.gain_db: no stem 'vox' in this set; stems: bass, drums, other, vocals"),
    ("vocals.gain_db=loud", r"vocals.gain_db: expected a number, got 'loud'"),
    ("vocals.gain_db=nan", r"vocals.gain_db: expected a number"),
    ("vocals.gain_db=60", r"vocals.gain_db: gain 60 dB is outside -120..36"),
    ("drums.mute=maybe", r"drums.mute: expected 1/0, true/false, yes/no or on/off, got 'maybe'"),
    ("bass.pan=2", r"bass.pan: pan 2 is outside -1 \(left\) .. 1 \(right\)"),
    ("master.mute=1", r"master.mute: master has no field 'mute'; valid: gain_db, fx"),
])
def test_bad_keys_and_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(override)


@pytest.mark.parametrize("chain, message", [
    ("autotune:amount=1", r"vocals.fx: unknown effect 'autotune'; effects: Bitcrush, .*Compressor.*, or plugin:PATH"),
    ("compressor:thresh=-18", r"vocals.fx: Compressor has no parameter 'thresh'; valid: threshold_db, ratio, attack_ms, release_ms"),
    ("compressor:ratio=strong", r"vocals.fx: Compressor.ratio: expected a number, got 'strong'"),
    ("compressor:ratio=0.5", r"vocals.fx: Compressor: Compressor ratio must be a value >= 1.0"),
    ("compressor:ratio", r"vocals.fx: effect parameter 'ratio' should be name=value"),
    ("ladderfilter:mode=notch", r"LadderFilter.mode: expected one of LPF12, HPF12, BPF12, LPF24, HPF24, BPF24, got 'notch'"),
    ("convolution:impulse_response_filename=/no/such.wav", r"vocals.fx: Convolution: Unable to load impulse response"),
])
def test_bad_effects(chain: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(f"vocals.fx={chain}")


def test_every_listed_effect_builds_with_defaults() -> None:
    # Convolution alone needs an impulse response; all others must work with no parameters.
    for name in effect_names():
        if name != "Convolution":
            assert build_chain(parse(f"vocals.fx={name}").track("vocals").fx, "vocals.fx")[0].is_effect


def test_errors_are_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse("vocals.fx=compressor:ratio=x")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("rest, path, params", [
    ("/Library/Audio/Plug-Ins/VST3/Fancy EQ.vst3:mix=0.5,drive=2", "/Library/Audio/Plug-Ins/VST3/Fancy EQ.vst3", "mix=0.5,drive=2"),
    ("/plugins/Comp.vst3", "/plugins/Comp.vst3", ""),
    (r"C:\Program Files\Common Files\VST3\Comp.VST3:mix=1", r"C:\Program Files\Common Files\VST3\Comp.VST3", "mix=1"),
    ("/Library/Audio/Plug-Ins/Components/AUDelay.component:time=0.2", "/Library/Audio/Plug-Ins/Components/AUDelay.component", "time=0.2"),
    ("/plugins/odd-name:mix=0.5", "/plugins/odd-name", "mix=0.5"),
])
def test_plugin_entry_splits_path_from_parameters(rest: str, path: str, params: str) -> None:
    assert _split_plugin(rest) == (path, params)


def test_plugin_entry_keeps_path_and_values(tmp_path: Path) -> None:
    # A real (if empty) bundle path: parsing only checks existence and kind; loading comes later.
    bundle = tmp_path / "Fancy.vst3"
    bundle.mkdir()
    spec = parse(f"vocals.fx=highpassfilter;plugin:{bundle}:mix=0.5,mode=warm")
    plugin = spec.track("vocals").fx[1]
    assert plugin.path == str(bundle) and plugin.params == (("mix", 0.5), ("mode", "warm"))


def test_missing_plugin_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "Gone.vst3"
    with pytest.raises(ConfigError, match=rf"vocals.fx: plugin file not found: {missing}"):
        parse(f"vocals.fx=plugin:{missing}:mix=0.5")


def test_plugin_of_a_kind_pedalboard_cannot_host(tmp_path: Path) -> None:
    vst2 = tmp_path / "OldSynth.dll"
    vst2.write_bytes(b"MZ")
    with pytest.raises(ConfigError, match=r"OldSynth.dll: not a VST3 \(.vst3\) or Audio Unit \(.component\) plugin"):
        parse(f"vocals.fx=plugin:{vst2}")


PRESETS = """
[presets.focus]
vocals = { gain_db = 3, fx = "highpassfilter:cutoff_frequency_hz=80;compressor:ratio=3" }
drums.mute = true

[presets.listy]
bass.fx = ["lowshelffilter:gain_db=4", "limiter"]
master.fx = [{ effect = "Gain", gain_db = -2 }]
master.gain_db = -1.5
"""


def test_presets_file_forms(tmp_path: Path) -> None:
    presets = parse_presets(PRESETS, "test.toml")
    focus = presets["focus"]
    assert focus.track("vocals").gain_db == 3 and focus.track("drums").mute is True
    assert [e.name for e in focus.track("vocals").fx] == ["HighpassFilter", "Compressor"]
    listy = presets["listy"]
    assert [e.name for e in listy.track("bass").fx] == ["LowShelfFilter", "Limiter"]
    assert listy.master.fx == (EffectSpec("Gain", (("gain_db", -2.0),)),) and listy.master.gain_db == -1.5


def test_presets_file_overlays_builtins(tmp_path: Path) -> None:
    file = tmp_path / "presets.toml"
    file.write_text(PRESETS + "\n[presets.karaoke]\nvocals.gain_db = -20\n")
    presets = load_presets(file)
    assert {"focus", "listy", "flat", "a_cappella"} <= set(presets)
    assert presets["karaoke"].track("vocals") == TrackSpec(gain_db=-20.0)  # the user's wins


@pytest.mark.parametrize("text, message", [
    ("[presets.x]\nvocals.gain_db = ", r"t.toml: not valid TOML"),
    ("[preset.x]\nvocals.gain_db = 1", r"t.toml: unknown top-level key\(s\) preset; presets go under \[presets.NAME\]"),
    ("[presets.x]\nvocals.gain_db = 'loud'", r"t.toml: presets.x: vocals.gain_db: expected a number, got 'loud'"),
    ("[presets.x]\nvocals = 3", r"t.toml: presets.x.vocals: expected a table of fields"),
    ("[presets.x]\nvocals.fx = [{ ratio = 3 }]", r"t.toml: presets.x: vocals.fx: a chain table needs exactly one of 'effect' or 'plugin'"),
    ("[presets.x]\nvocals.fx = 3", r"vocals.fx: expected an effect chain such as 'compressor:ratio=3', got 3"),
    ("[presets.x]\nvocals.mute = [1]", r"vocals.mute: expected a single value, got a list"),
])
def test_bad_presets_files(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_presets(text, "t.toml")


def test_unreadable_presets_file_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read presets file"):
        load_presets(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match=r"unknown preset 'loud'; presets: a_cappella, bassless, drumless, flat, karaoke, vocal_up"):
        get_preset(load_presets(Path("/dev/null")), "loud")
