"""The round trip through a real DAW: Ardour 7 renders a clip placed at a non-zero position,
StemBridge separates Ardour's render, the stems go back into the session, Ardour reloads it,
sees every stem where the original was, and its render of the stems nulls against its
render of the original.

Ardour runs headless (dummy audio backend). It cannot import files without its GUI, so the
stems are put into the closed session file the way an import would leave them
(tests/ardour/session_xml.py); everything after that is Ardour's own engine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from ardour import headless
from ardour.session_xml import SessionFile
from bridge.manifest import read_manifest
from bridge.wavio import read_time_reference
from conftest import multitone
from test_daemon_startup import DaemonProcess

pytestmark = [
    pytest.mark.ardour,
    pytest.mark.skipif(not headless.available(), reason="Ardour 7 (ardour7-lua, ardour7-export) not installed: apt-get install ardour"),
]

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "daw_scripts" / "ardour" / "stembridge_lib.lua"
RATE = 48000
SOURCE_FRAMES = 5 * RATE          # the recorded file
REGION_START = RATE // 2          # the region uses the file from 0.5 s ...
REGION_LENGTH = 4 * RATE          # ... for 4 s ...
POSITION = 3 * RATE // 2          # ... placed at 1.5 s on the timeline
SESSION = "roundtrip"
NULL_LIMIT_DB = -60.0


def separate(source: Path, output: Path, model_repo: Path) -> dict:
    """`stembridge separate --exact-sum --json`, the real CLI; returns its stems.json."""
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "separate", str(source), "--exact-sum", "--json",
         "--model-repo", str(model_repo), "--quality", "preview", "--no-cache", "--output", str(output)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    manifest_path = Path(json.loads(result.stdout.splitlines()[0])["manifest"])
    return read_manifest(manifest_path) | {"folder": manifest_path.parent}


def residual_db(render: np.ndarray, reference: np.ndarray) -> float:
    diff = render.astype(np.float64) - reference.astype(np.float64)
    return 10 * np.log10(np.sum(diff**2) / np.sum(reference.astype(np.float64) ** 2) + 1e-300)


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> dict:
    """A session with one stereo track whose region sits at POSITION and starts REGION_START
    into its file, plus Ardour's BWF render of that region."""
    root = tmp_path_factory.mktemp("ardour")
    source = root / "take.wav"
    sf.write(source, multitone(SOURCE_FRAMES / RATE, RATE, 2, seed=3), RATE, subtype="FLOAT")
    session = root / "session"
    headless.add_tracks(session, SESSION, RATE, 2, ["take"])
    edit = SessionFile(session / f"{SESSION}.ardour")
    edit.add_region("take", source, POSITION, SOURCE_FRAMES, 2, start=REGION_START, length=REGION_LENGTH)
    edit.set_session_range(POSITION, POSITION + REGION_LENGTH)
    edit.save()
    bounce = headless.export(session, SESSION, root / "bounce.wav")
    pristine = root / "pristine"
    subprocess.run(["cp", "-a", str(session), str(pristine)], check=True)
    return {"root": root, "source": source, "session": pristine, "bounce": bounce}


def fresh_session(original: dict, name: str) -> Path:
    copy = original["root"] / name
    subprocess.run(["cp", "-a", str(original["session"]), str(copy)], check=True)
    return copy


def test_ardour_render_is_the_region_with_its_position_stamped(original):
    bounce, rate = sf.read(original["bounce"], dtype="float32")
    source, _ = sf.read(original["source"], dtype="float32")
    assert rate == RATE and bounce.shape == (REGION_LENGTH, 2)
    assert read_time_reference(original["bounce"]) == POSITION
    # Sample-exact: no fades, no gain, no offset error in the render we null against.
    np.testing.assert_array_equal(bounce, source[REGION_START:REGION_START + REGION_LENGTH])


def test_stems_of_ardour_bounce_reload_at_the_original_position_and_null(original, model_repo):
    manifest = separate(original["bounce"], original["root"] / "stems_bounce", model_repo)
    assert (manifest["sample_rate"], manifest["frames"], manifest["channels"]) == (RATE, REGION_LENGTH, 2)
    assert manifest["time_reference"] == POSITION

    session = fresh_session(original, "session_bounce")
    stems = manifest["stems"]
    headless.add_tracks(session, SESSION, RATE, 2, list(stems))
    edit = SessionFile(session / f"{SESSION}.ardour")
    for stem, file_name in stems.items():
        # Spot each stem to its own BWF timestamp, as Ardour's import does at position max.
        path = manifest["folder"] / file_name
        edit.add_region(stem, path, read_time_reference(path), manifest["frames"], manifest["channels"])
    edit.save()

    placed = {r.track: r for r in headless.regions(session, SESSION, clear="take")}
    take = placed.pop("take")
    assert (take.position, take.start, take.length) == (POSITION, REGION_START, REGION_LENGTH)
    assert sorted(placed) == sorted(stems)
    for region in placed.values():
        assert region.position == take.position
        assert region.length == take.length
        assert region.natural_position == POSITION  # Ardour read the BWF TimeReference itself

    render_path = headless.export(session, SESSION, original["root"] / "render_bounce.wav")
    render, _ = sf.read(render_path, dtype="float32")
    bounce, _ = sf.read(original["bounce"], dtype="float32")
    assert render.shape == bounce.shape
    assert read_time_reference(render_path) == POSITION
    assert np.abs(render).max() > 0.1  # the original is gone: this is the stems alone
    residual = residual_db(render, bounce)
    assert residual <= NULL_LIMIT_DB, f"stems null only to {residual:.1f} dB"


def test_import_hook_placement_recreates_a_region_with_an_offset(original, model_repo):
    """The GUI action sends the region's source file; the hook imports each stem whole at the
    region's position and reshapes it with stembridge_lib's plan. Run that plan in Ardour."""
    manifest = separate(original["source"], original["root"] / "stems_source", model_repo)
    assert manifest["frames"] == SOURCE_FRAMES and manifest["time_reference"] is None

    session = fresh_session(original, "session_source")
    stems = manifest["stems"]
    headless.add_tracks(session, SESSION, RATE, 2, list(stems))
    edit = SessionFile(session / f"{SESSION}.ardour")
    for stem, file_name in stems.items():
        # What Editor:do_import leaves: the whole file at the import position.
        edit.add_region(stem, manifest["folder"] / file_name, POSITION, manifest["frames"], 2)
    edit.save()
    headless.run_lua("place.lua", session, SESSION, LIB, POSITION, REGION_START, REGION_LENGTH, POSITION,
                     *stems)

    placed = {r.track: r for r in headless.regions(session, SESSION, clear="take")}
    take = placed.pop("take")
    for region in placed.values():
        assert (region.position, region.start, region.length) == (take.position, take.start, take.length)

    # The whole-file imports stretched the session range past the region; render the region's span.
    edit = SessionFile(session / f"{SESSION}.ardour")
    edit.set_session_range(POSITION, POSITION + REGION_LENGTH)
    edit.save()
    render, _ = sf.read(headless.export(session, SESSION, original["root"] / "render_source.wav"), dtype="float32")
    bounce, _ = sf.read(original["bounce"], dtype="float32")
    assert np.abs(render).max() > 0.1
    residual = residual_db(render, bounce)
    assert residual <= NULL_LIMIT_DB, f"stems null only to {residual:.1f} dB"


def receive_until(sock: socket.socket, address: str, predicate, timeout: float) -> list:
    """OSC messages on `sock` until one at `address` whose arguments satisfy `predicate`."""
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            raise AssertionError(f"no {address} matching within {timeout} s; got {seen}") from None
        message = OscMessage(data)
        seen.append((message.address, message.params))
        if message.address == "/stembridge/error":
            raise AssertionError(f"daemon reported an error: {message.params}")
        if message.address == address and predicate(message.params):
            return message.params


def test_ardour_lua_sends_the_separate_request_to_the_daemon(original, model_repo, tmp_path):
    """The action's sending half runs in Ardour (ardour7-lua) against a running daemon: the
    request reaches it, and the stems land exactly where the script will look for them."""
    daemon = DaemonProcess(tmp_path, model_repo)
    config = tmp_path / "config.toml"
    # The request audio lives in the session folder, which the user adds to allowed_roots.
    config.write_text(f'[paths]\nallowed_roots = ["{original["root"]}"]\n')
    session = fresh_session(original, "session_osc")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        try:
            daemon.start("--config", str(config))
            listener.sendto(OscMessageBuilder("/stembridge/subscribe").build().dgram, ("127.0.0.1", daemon.port))
            daemon.wait_for(rf"subscriber 127\.0\.0\.1:{listener.getsockname()[1]} added", timeout=10)

            out = headless.run_lua("send_request.lua", session, SESSION, LIB, "take", daemon.port, daemon.output)
            fields = dict(line.split("\t", 1) for line in out.splitlines() if line.startswith(("pending\t", "request\t")))
            manifest_path, track, position, start, length, _sent = fields["pending"].split("\t")
            request = Path(fields["request"])
            assert (track, int(position), int(start), int(length)) == ("take", POSITION, 0, REGION_LENGTH)
            assert request.parent == session / "stembridge"

            receive_until(listener, "/stembridge/queued", lambda p: Path(p[1]) == request, timeout=30)
            done = receive_until(listener, "/stembridge/done", lambda p: Path(p[1]) == Path(manifest_path), timeout=120)
        finally:
            daemon.stop()

    # The audio Ardour wrote is the region itself, stamped with its position.
    bounce, _ = sf.read(original["bounce"], dtype="float32")
    sent, rate = sf.read(request, dtype="float32")
    assert rate == RATE and read_time_reference(request) == POSITION
    np.testing.assert_array_equal(sent, bounce)
    manifest = read_manifest(Path(done[1]))
    assert manifest["time_reference"] == POSITION and manifest["frames"] == REGION_LENGTH
    stems = sum(sf.read(Path(done[1]).parent / f, dtype="float64")[0] for f in manifest["stems"].values())
    assert residual_db(stems, bounce) <= NULL_LIMIT_DB  # exact_sum=1 travelled with the request
