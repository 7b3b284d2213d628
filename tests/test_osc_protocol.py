"""The v1 OSC address space as plain values: parsing, type checks, encoding."""

from __future__ import annotations

import pytest
from pythonosc.osc_message import OscMessage

from bridge.osc import protocol
from bridge.osc.protocol import Cancel, Ping, Preview, RequestError, Separate, Status, Subscribe, parse_request


def test_valid_requests() -> None:
    assert parse_request("/stembridge/ping", []) == Ping()
    assert parse_request("/stembridge/separate", ["/m/a.wav"]) == Separate("/m/a.wav", {})
    assert parse_request("/stembridge/separate", ["/m/a.wav", "quality=preview", "stems = 6"]) == \
        Separate("/m/a.wav", {"quality": "preview", "stems": "6"})
    assert parse_request("/stembridge/cancel", ["ab12"]) == Cancel("ab12")
    assert parse_request("/stembridge/status", []) == Status(None)
    assert parse_request("/stembridge/status", ["ab12"]) == Status("ab12")
    assert parse_request("/stembridge/subscribe", []) == Subscribe(None, None)
    assert parse_request("/stembridge/subscribe", [9001, "127.0.0.1"]) == Subscribe(9001, "127.0.0.1")
    # Some hosts send every number as a float (Ardour's `h`): a whole one is a fine port.
    assert parse_request("/stembridge/subscribe", [9001.0]) == Subscribe(9001, None)
    assert parse_request("/stembridge/unsubscribe", [9001]) == Subscribe(9001, None, remove=True)
    assert parse_request("/stembridge/preview", ["ab12", "vocals.gain_db=-3"]) == \
        Preview("ab12", {"vocals.gain_db": "-3"})


@pytest.mark.parametrize("address, args, message", [
    ("/stembridge/pong", [], "unknown address '/stembridge/pong'"),
    ("/other/thing", [1], "unknown address '/other/thing'"),
    ("/stembridge/ping", ["x"], "/stembridge/ping takes at most 0 argument(s), got 1"),
    ("/stembridge/separate", [], "/stembridge/separate needs a string and a string plus key=value strings"),
    ("/stembridge/separate", [42], "/stembridge/separate: argument 1 must be a string, got an integer 42"),
    ("/stembridge/separate", ["  "], "/stembridge/separate: the path is empty"),
    ("/stembridge/separate", ["/a.wav", 3.5], "argument 2 must be a string, got a float 3.5"),
    ("/stembridge/separate", ["/a.wav", "quality"], "option 'quality' is not key=value"),
    ("/stembridge/separate", ["/a.wav", "=x"], "option '=x' is not key=value"),
    ("/stembridge/separate", ["/a.wav", "stems=4", "stems=6"], "option 'stems' given twice"),
    ("/stembridge/cancel", [], "/stembridge/cancel needs a string"),
    ("/stembridge/cancel", [12], "argument 1 must be a string, got an integer 12"),
    ("/stembridge/cancel", ["a", "b"], "takes at most 1 argument(s), got 2"),
    ("/stembridge/status", [True], "argument 1 must be a string, got a boolean True"),
    ("/stembridge/subscribe", ["9001"], "argument 1 must be an integer, got a string '9001'"),
    ("/stembridge/subscribe", [9001.5], "argument 1 must be an integer, got a float 9001.5"),
    ("/stembridge/subscribe", [70000], "port 70000 is outside 1-65535"),
    ("/stembridge/subscribe", [9001, 5], "argument 2 must be a string, got an integer 5"),
    ("/stembridge/preview", [b"blob"], "argument 1 must be a string, got a blob"),
])
def test_malformed_requests(address: str, args: list, message: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(address, args)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_option_errors_carry_the_job_id() -> None:
    with pytest.raises(RequestError) as info:
        parse_request("/stembridge/preview", ["job7", "mute"])
    assert info.value.job_id == "job7"


def test_encode_round_trips_types() -> None:
    message = OscMessage(protocol.encode("/stembridge/progress", "job7", 0.25, "separate"))
    assert message.address == "/stembridge/progress"
    assert message.params == ["job7", 0.25, "separate"]
    assert OscMessage(protocol.encode("/stembridge/jobs_end", 3)).params == [3]
    with pytest.raises(TypeError):
        protocol.encode("/x", None)


def test_every_request_has_a_type_table_entry() -> None:
    # `stembridge send` types arguments from this table: it must cover the whole space.
    assert set(protocol.REQUEST_TYPES) == {
        "/stembridge/ping", "/stembridge/separate", "/stembridge/cancel", "/stembridge/status",
        "/stembridge/subscribe", "/stembridge/unsubscribe", "/stembridge/preview"}
