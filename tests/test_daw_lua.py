"""The DAW scripts' Lua: every file compiles, the embedded library copies are current, and the
pure functions (manifest parsing, paths, OSC request, position math, WAV writing, REAPER's
command and reply handling) behave, run by a stock Lua 5.4 interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bridge.manifest import now_iso, write_manifest
from bridge.wavio import read_time_reference

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "daw_scripts"
ARDOUR_LIB = SCRIPTS / "ardour" / "stembridge_lib.lua"
REAPER_LIB = SCRIPTS / "reaper" / "stembridge_reaper.lua"
LUA = shutil.which("lua5.4")
LUAC = shutil.which("luac5.4") or shutil.which("luac")

pytestmark = [pytest.mark.lua, pytest.mark.skipif(LUA is None, reason="lua5.4 not installed: apt-get install lua5.4")]


def lit(text: object) -> str:
    """A Lua long-bracket literal: no escape processing, so any text passes unchanged."""
    text = str(text)
    assert "]==]" not in text and not text.startswith("\n")
    return f"[==[{text}]==]"


def lua(code: str, lib: Path = ARDOUR_LIB) -> str:
    """Run `code` with the library loaded as SB; returns stdout, fails with Lua's error."""
    program = f"package.path = {lit(str(lib.parent) + '/?.lua;')} .. package.path\n" \
              f"local SB = dofile({lit(lib)})\n{code}"
    result = subprocess.run([LUA, "-"], input=program, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def lua_json(code: str, lib: Path = ARDOUR_LIB) -> object:
    """Run code whose last output line is a value printed through a tiny Lua JSON writer."""
    writer = r'''
local function enc(v)
  local t = type(v)
  if t == "table" then
    if v == SB.null then return "null" end
    if #v > 0 or next(v) == nil then
      local parts = {}
      for i = 1, #v do parts[i] = enc(v[i]) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do parts[#parts + 1] = enc(k) .. ":" .. enc(v[k]) end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "nil" then
    return "null"
  end
  return tostring(v)
end
'''
    return json.loads(lua(writer + code, lib).splitlines()[-1])


ALL_LUA = sorted(p for p in [*SCRIPTS.rglob("*.lua"), *(ROOT / "tests" / "ardour").glob("*.lua")])


@pytest.mark.skipif(LUAC is None, reason="luac not installed")
@pytest.mark.parametrize("script", ALL_LUA, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_lua_script_compiles(script: Path) -> None:
    # One file per luac call: Debian's luac5.4 crashes when given several.
    result = subprocess.run([LUAC, "-p", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_embedded_library_copies_are_current() -> None:
    lib = ARDOUR_LIB.read_text()
    block = "local stembridge_lib = (function ()\n" + lib + "end)()\n"
    for name in ("stembridge_separate.lua", "stembridge_import_hook.lua"):
        text = (SCRIPTS / "ardour" / name).read_text()
        start = text.index("\n", text.index("-- BEGIN stembridge_lib")) + 1
        end = text.rindex("\n", 0, text.index("-- END stembridge_lib")) + 1
        assert text[start:end] == block, f"{name}: run `lua5.4 daw_scripts/ardour/embed_lib.lua`"
    assert (SCRIPTS / "reaper" / "stembridge_lib.lua").read_text() == lib, \
        "daw_scripts/reaper/stembridge_lib.lua: run `lua5.4 daw_scripts/ardour/embed_lib.lua`"


def test_parses_a_manifest_written_by_stembridge(tmp_path: Path) -> None:
    manifest = tmp_path / "Ünïcode mix" / "stems.json"
    manifest.parent.mkdir()
    write_manifest(manifest, {
        "version": 1, "job_id": "abc", "source": "/x/Ünïcode mix.wav", "source_hash": "h", "sample_rate": 48000,
        "frames": 192000, "channels": 2, "time_reference": 3600 * 48000, "model": "htdemucs",
        "quality": "render", "device": "cpu",
        "stems": {"vocals": "Ünïcode mix_vocals.wav", "drums": "Ünïcode mix_drums.wav"},
        "preview": None, "created": now_iso(),
    })
    parsed = lua_json(f"local f = io.open({lit(str(manifest))}); local text = f:read('a'); f:close()\n"
                      f"print(enc(assert(SB.parse_manifest(text, {lit(str(manifest))}))))")
    assert parsed["time_reference"] == 3600 * 48000
    assert (parsed["sample_rate"], parsed["frames"], parsed["channels"]) == (48000, 192000, 2)
    assert [s["name"] for s in parsed["stems"]] == ["drums", "vocals"]
    assert parsed["stems"][1]["path"] == str(manifest.parent / "Ünïcode mix_vocals.wav")
    assert Path(parsed["stems"][1]["path"]).parent == manifest.parent


def test_null_time_reference_means_no_timestamp() -> None:
    parsed = lua_json('print(enc(SB.parse_manifest([[{"version":1,"sample_rate":44100,"frames":5,"channels":1,'
                      '"time_reference":null,"stems":{"bass":"a_bass.wav"}}]], "stems.json")))\n'
                      'print(SB.timestamp_position(SB.parse_manifest([[{"version":1,"sample_rate":44100,'
                      '"frames":5,"channels":1,"time_reference":null,"stems":{"bass":"a_bass.wav"}}]])))')
    assert parsed == 0


@pytest.mark.parametrize("text, reason", [
    ('{"version":2,"sample_rate":1,"frames":1,"channels":1,"stems":{"a":"b"}}', "unsupported stems.json version 2"),
    ('{"version":1,"sample_rate":1,"frames":1,"channels":1,"stems":{}}', "lists no stems"),
    ('{"version":1,"sample_rate":1.5,"frames":1,"channels":1,"stems":{"a":"b"}}', "sample_rate must be a positive integer"),
    ('{"version":1,"sample_rate":1,"frames":1,"channels":1,"stems":{"a":"../b.wav"}}', "bad file name for stem a"),
    ('{"version":1,"sample_rate":1,"frames":1,"channels":1,"stems":{"a":"b"},"time_reference":"x"}',
     "time_reference must be an integer or null"),
    ('{"version":1,', "invalid JSON at byte"),
    ('[1] x', "trailing text"),
])
def test_bad_manifests_are_refused_with_a_reason(text: str, reason: str) -> None:
    out = lua(f"local m, err = SB.parse_manifest({lit(text)}, '/o/stems.json')\nprint(m == nil, err)")
    refused, _, message = out.strip().partition("\t")
    assert refused == "true" and reason in message


def test_json_reader_agrees_with_python() -> None:
    value = {"s": "tab\t quote\" back\\ slash/ é 😀 \u0001", "n": [0, -12, 3.5, 1e-3, 2.5e10], "b": [True, False],
             "nested": {"empty": {}, "list": []}}
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=2)):
        decoded = lua_json(f"print(enc(assert(SB.json_decode({lit(text)}))))")
        assert decoded["s"] == value["s"] and decoded["b"] == value["b"]
        assert decoded["n"] == pytest.approx(value["n"])
        assert decoded["nested"] == {"empty": [], "list": []}  # Lua cannot tell {} from []


def test_paths_follow_the_default_output_layout() -> None:
    out = lua('print(SB.manifest_path("/stems/ardour/My_Song", "/s/stembridge/Audio_1_take_20250101-120000_0.wav"))\n'
              'print(SB.manifest_path([[C:\\Stems]], [[D:\\Proj\\clip.take.wav]]))\n'
              'print(SB.clip_name("noext"), SB.dirname("name"), SB.join("/a/", "b"))\n'
              'print(SB.safe_name("Audio 1 / take#3.1"), SB.safe_name("..."), #SB.safe_name(string.rep("x", 300)))')
    lines = out.splitlines()
    assert lines[0] == "/stems/ardour/My_Song/Audio_1_take_20250101-120000_0/stems.json"
    assert lines[1] == "C:\\Stems\\clip.take\\stems.json"
    assert lines[2].split("\t") == ["noext", "", "/a/b"]
    assert lines[3].split("\t") == ["Audio_1_take_3_1", "clip", "80"]


def test_separate_message_follows_the_osc_contract() -> None:
    out = lua_json('local address, types, args = SB.separate_message("/s/a.wav", {quality = "render", '
                   'exact_sum = true, output = "ardour/x"})\nprint(enc({address, types, args}))')
    assert out == ["/stembridge/separate", "ssss", ["/s/a.wav", "exact_sum=1", "output=ardour/x", "quality=render"]]
    assert lua('print(SB.osc_url(nil, nil), SB.osc_url("127.0.0.1", 9123))').split() == [
        "osc.udp://127.0.0.1:9010", "osc.udp://127.0.0.1:9123"]


def test_region_plan_recreates_offset_and_length() -> None:
    plan = lua_json("print(enc(SB.region_plan(72000, 24000, 192000, 72000)))")
    assert plan == {"trim_front_to": 96000, "length": 192000, "position": 72000}
    # A region earlier on the timeline than its offset into the file: import at 0, move back.
    assert lua_json("print(enc(SB.region_plan(1000, 24000, 500, 0)))") == {
        "trim_front_to": 24000, "length": 500, "position": 1000}
    out = subprocess.run([LUA, "-"], input=f"local SB = dofile({lit(str(ARDOUR_LIB))})\n"
                         "SB.region_plan(0, 0, 0, 0)", capture_output=True, text=True)
    assert out.returncode != 0 and "length positive" in out.stderr


def test_mismatch_names_rate_and_length_problems() -> None:
    out = lua('local e = {start = 100, length = 1000}\n'
              'print(SB.mismatch(e, {sample_rate = 44100, frames = 2000}, 48000))\n'
              'print(SB.mismatch(e, {sample_rate = 48000, frames = 1099}, 48000))\n'
              'print(SB.mismatch(e, {sample_rate = 48000, frames = 1100}, 48000))')
    assert out.splitlines() == ["stems are 44100 Hz, the session runs at 48000 Hz",
                                "stems hold 1099 samples, the region needs 1100", "nil"]


def test_pending_entries_round_trip_and_skip_damaged_lines() -> None:
    out = lua_json('local line = SB.format_pending({manifest = "/o/a b/stems.json", track = "Gtr 1", position = 72000,'
                   ' start = 5, length = 10, sent = 1700000000})\n'
                   'print(enc(SB.parse_pending(line .. "\\nbroken\\tline\\n" .. line .. "\\n")))')
    assert len(out) == 2
    assert out[0] == {"manifest": "/o/a b/stems.json", "track": "Gtr 1", "position": 72000, "start": 5,
                      "length": 10, "sent": 1700000000}
    bad = subprocess.run([LUA, "-"], input=f"local SB = dofile({lit(str(ARDOUR_LIB))})\n"
                         "SB.format_pending({manifest='a\\tb', track='t', position=0, start=0, length=1, sent=0})",
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "tab or newline in manifest" in bad.stderr


def test_lua_wav_writer_output_reads_back_with_its_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "region.wav"
    reference = 3600 * 48000 + 7  # one hour of timecode and a sample
    lua(f"local L, R = {{}}, {{}}\nfor i = 1, 3000 do L[i] = math.sin(i / 10) * 0.5; R[i] = -i / 3000 end\n"
        f"local f = assert(io.open({lit(str(path))}, 'wb'))\n"
        f"f:write(SB.wav_header(48000, 2, 3000, {reference})); f:write(SB.pack_frames({{L, R}}, 3000)); f:close()")
    data, rate = sf.read(path, dtype="float32")
    assert rate == 48000 and data.shape == (3000, 2)
    i = np.arange(1, 3001)
    np.testing.assert_array_equal(data[:, 0], (np.sin(i / 10) * 0.5).astype(np.float32))
    np.testing.assert_array_equal(data[:, 1], (-i / 3000).astype(np.float32))
    assert read_time_reference(path) == reference
    big = tmp_path / "big.wav"  # a TimeReference past 2^32 needs the high word
    lua(f"local f = assert(io.open({lit(str(big))}, 'wb'))\n"
        f"f:write(SB.wav_header(192000, 1, 1, {2**32 + 5})); f:write(SB.pack_frames({{{{0.25}}}}, 1)); f:close()")
    assert read_time_reference(big) == 2**32 + 5
    assert sf.read(big, dtype="float32")[0].tolist() == [0.25]


# ---------------------------------------------------------------------------------------- REAPER

def reaper(code: str) -> str:
    return lua(f"local R = dofile({lit(REAPER_LIB)})\n{code}")


def test_reaper_item_plan_keeps_offset_playrate_and_section() -> None:
    plan = lua_json(f"local R = dofile({lit(REAPER_LIB)})\n"
                    "print(enc(R.item_plan({position = 12.5, length = 3, fade_in = 0.01, fade_out = 0.5, volume = 0.8},"
                    " {offset = 1.25, playrate = 1.5, preserve_pitch = 1, pitch = -2, volume = 0.5},"
                    " {offset = 10, reversed = false})))")
    assert plan == {
        "item": {"D_POSITION": 12.5, "D_LENGTH": 3, "D_FADEINLEN": 0.01, "D_FADEOUTLEN": 0.5, "D_VOL": 0.8},
        "take": {"D_STARTOFFS": 11.25, "D_PLAYRATE": 1.5, "B_PPITCH": 1, "D_PITCH": -2, "D_VOL": 0.5},
    }
    out = reaper("print(R.item_plan({position = 0, length = 1}, {offset = 0, playrate = 1}, {offset = 0, reversed = true}))\n"
                 "print(R.item_plan({position = 0, length = 1}, {offset = 0, playrate = 0}))")
    assert out.splitlines() == ["nil\treversed takes are not supported: un-reverse the item, or glue it first",
                                "nil\ttake playrate must be positive"]


def test_reaper_mismatch_and_names() -> None:
    out = reaper("print(R.mismatch({sample_rate = 44100, frames = 100}, 48000, 1))\n"
                 "print(R.mismatch({sample_rate = 48000, frames = 47000}, 48000, 1))\n"
                 "print(R.mismatch({sample_rate = 48000, frames = 48001}, 48000.0, 1.0))\n"
                 "print(R.track_name('Gtr', 'vocals'), R.track_name('', 'vocals'))\n"
                 "print(R.output_folder('My Song', '20250101-120000', 2, SB.safe_name), R.output_folder('', 's', 0, SB.safe_name))")
    assert out.splitlines() == ["stems are 44100 Hz, the source 48000 Hz", "stems hold 47000 samples, the source 48000",
                                "nil", "Gtr vocals\tvocals",
                                "reaper/My_Song/20250101-120000_2\treaper/unsaved/s_0"]


def test_reaper_reply_parsing() -> None:
    queued = json.dumps({"address": "/stembridge/queued", "args": ["j1", "/a.wav"]})
    progress = json.dumps({"address": "/stembridge/progress", "args": ["j1", 0.5, "separate"]})
    done = json.dumps({"address": "/stembridge/done", "args": ["j1", "/o/a/stems.json"]})
    cases = {
        "\n".join([queued, progress, done, "exit 0"]): {"state": "done", "job_id": "j1", "manifest": "/o/a/stems.json"},
        "stembridge: error: job : /a.wav: outside the allowed folders (/w)\r\nexit 1\r\n":
            {"state": "error", "message": "stembridge: error: job : /a.wav: outside the allowed folders (/w)"},
        "exit 1\n": {"state": "error", "message": "stembridge send exited with 1"},
        "": {"state": "error", "message": "no /stembridge/done reply"},
    }
    for text, expected in cases.items():
        assert lua_json(f"local R = dofile({lit(REAPER_LIB)})\nprint(enc(R.parse_reply({lit(text)}, SB.json_decode)))") == expected


def test_reaper_runner_scripts_quote_awkward_paths() -> None:
    out = reaper("io.write(R.runner_script('/opt/sb/stembridge', \"/m/it's a $(test).wav\", {exact_sum = true, quality = 'render'},"
                 " '/p/r.reply', false, {'--port', '9011'}))")
    assert out.splitlines() == [
        "#!/bin/sh",
        "'/opt/sb/stembridge' send '--port' '9011' --wait --json /stembridge/separate '/m/it'\\''s a $(test).wav'"
        " 'exact_sum=1' 'quality=render' > '/p/r.reply.part' 2>&1",
        "echo \"exit $?\" >> '/p/r.reply.part'",
        "mv '/p/r.reply.part' '/p/r.reply'",
    ]
    cmd = reaper(r"io.write(R.runner_script([[C:\sb\stembridge.exe]], [[D:\100% mix.wav]], {quality = 'preview'}, [[D:\r.reply]], true))")
    assert cmd.splitlines()[1] == ('"C:\\sb\\stembridge.exe" send --wait --json /stembridge/separate "D:\\100%% mix.wav"'
                                    ' "quality=preview" > "D:\\r.reply.part" 2>&1')
    assert reaper("print(R.runner_command('/p/a b.sh', false), R.runner_command([[C:\\p\\a.cmd]], true))").split("\t") == [
        "/bin/sh '/p/a b.sh'", 'cmd.exe /C "C:\\p\\a.cmd"\n']


def test_reaper_runner_gets_stems_from_the_daemon(tmp_path: Path, model_repo: Path, make_clip) -> None:
    """The POSIX runner the ReaScript starts, run by /bin/sh against a live daemon; its reply
    file parsed by the script's own function names a complete stem set of the source."""
    from test_daemon_startup import DaemonProcess

    exe = Path(sys.executable).with_name("stembridge")
    if not exe.exists():
        pytest.skip("the stembridge console script is not installed in this environment")
    daemon = DaemonProcess(tmp_path, model_repo)
    source = make_clip("it's a take.wav", seconds=1.0, rate=48000, folder=tmp_path / "watch" / "media")
    runner, reply = tmp_path / "job.sh", tmp_path / "job.reply"
    try:
        daemon.start("--quality", "preview")
        runner.write_text(reaper(f"io.write(R.runner_script({lit(exe)}, {lit(source)}, {{quality = 'preview', exact_sum = true,"
                                 f" output = 'reaper/Song/s_0'}}, {lit(reply)}, false, {{'--port', '{daemon.port}'}}))"))
        done = subprocess.run(["/bin/sh", str(runner)], timeout=120, env={**os.environ, **daemon.env()})
        assert done.returncode == 0
    finally:
        daemon.stop()
    assert not reply.with_name(reply.name + ".part").exists()
    parsed = lua_json(f"local R = dofile({lit(REAPER_LIB)})\nlocal f = io.open({lit(reply)}); local t = f:read('a'); f:close()\n"
                      "print(enc(R.parse_reply(t, SB.json_decode)))")
    assert parsed["state"] == "done", parsed
    manifest = Path(parsed["manifest"])
    assert manifest.parent == daemon.output / "reaper" / "Song" / "s_0" / "it's a take"
    mismatch = lua(f"local R = dofile({lit(REAPER_LIB)})\nlocal f = io.open({lit(manifest)}); local t = f:read('a'); f:close()\n"
                   f"print(R.mismatch(assert(SB.parse_manifest(t, {lit(manifest)})), 48000, 1.0))")
    assert mismatch.strip() == "nil"


def test_file_helpers_read_bytes_and_report_missing_files(tmp_path: Path) -> None:
    data = tmp_path / "stems.json"
    data.write_bytes(b'{"a": 1}\r\n\x00end')
    out = lua(f"""
local text = SB.read_file({lit(data)})
print(SB.file_exists({lit(data)}), SB.file_exists({lit(tmp_path / "nope")}), #text, SB.read_file({lit(tmp_path / "nope")}))
""")
    assert out.split() == ["true", "false", str(len(data.read_bytes())), "nil"]
