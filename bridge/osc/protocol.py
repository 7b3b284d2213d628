"""The OSC address space v1 (DESIGN.md): addresses, argument types, request parsing and the
messages the daemon sends. No sockets here, so every rule is testable with plain values.

The table of request argument types is shared with `stembridge send`, so the client types
arguments exactly as the server expects them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.errors import StemBridgeError

PREFIX = "/stembridge/"

# Requests. Type tags per position; "*" repeats the last tag (key=value options).
PING = PREFIX + "ping"
SEPARATE = PREFIX + "separate"
CANCEL = PREFIX + "cancel"
STATUS = PREFIX + "status"
SUBSCRIBE = PREFIX + "subscribe"
UNSUBSCRIBE = PREFIX + "unsubscribe"
PREVIEW = PREFIX + "preview"
REQUEST_TYPES: dict[str, str] = {
    PING: "",
    SEPARATE: "ss*",
    CANCEL: "s",
    STATUS: "s",
    SUBSCRIBE: "is",
    UNSUBSCRIBE: "is",
    PREVIEW: "ss*",
}
_REQUIRED = {SEPARATE: 1, CANCEL: 1, PREVIEW: 1}  # leading arguments that must be present

# Replies and notifications.
PONG = PREFIX + "pong"
QUEUED = PREFIX + "queued"
CANCELLED = PREFIX + "cancelled"
JOB = PREFIX + "job"
JOBS_END = PREFIX + "jobs_end"          # ends a status reply, so a client knows it has all
SUBSCRIBED = PREFIX + "subscribed"      # acknowledges (un)subscribe with the address used
UNSUBSCRIBED = PREFIX + "unsubscribed"
PREVIEW_READY = PREFIX + "preview_ready"
PROGRESS = PREFIX + "progress"
DONE = PREFIX + "done"
ERROR = PREFIX + "error"
# Replies that end an exchange for a client waiting on one request.
FINAL_REPLIES = {PONG, QUEUED, CANCELLED, JOBS_END, SUBSCRIBED, UNSUBSCRIBED, PREVIEW_READY, DONE, ERROR}


class RequestError(StemBridgeError):
    """A request the daemon cannot act on. `job_id` is "" unless the request named a job."""

    def __init__(self, message: str, job_id: str = "") -> None:
        self.job_id = job_id
        super().__init__(message)


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Separate:
    path: str
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cancel:
    job_id: str


@dataclass(frozen=True)
class Status:
    job_id: str | None = None


@dataclass(frozen=True)
class Subscribe:
    port: int | None = None
    host: str | None = None
    remove: bool = False


@dataclass(frozen=True)
class Preview:
    job_id: str
    options: dict[str, str] = field(default_factory=dict)


Request = Union[Ping, Separate, Cancel, Status, Subscribe, Preview]

_TAG_NAMES = {"s": "a string", "i": "an integer", "f": "a float"}


def parse_request(address: str, args: list[Any]) -> Request:
    """Check `address` and the argument types against the v1 address space."""
    if address not in REQUEST_TYPES:
        raise RequestError(f"unknown address {address!r}; known: {', '.join(sorted(REQUEST_TYPES))}")
    tags = REQUEST_TYPES[address]
    if not tags.endswith("*") and len(args) > len(tags):
        raise RequestError(f"{address} takes at most {len(tags)} argument(s), got {len(args)}")
    if len(args) < _REQUIRED.get(address, 0):
        raise RequestError(f"{address} needs {_describe(tags)}")
    values = [_typed(address, i, tags, arg) for i, arg in enumerate(args)]
    if address == PING:
        return Ping()
    if address == SEPARATE:
        path = values[0]
        if not path.strip():
            raise RequestError(f"{address}: the path is empty")
        return Separate(path, parse_options(address, values[1:]))
    if address in (CANCEL, PREVIEW):
        job_id = values[0].strip()
        if not job_id:
            raise RequestError(f"{address}: the job id is empty")
        if address == CANCEL:
            return Cancel(job_id)
        return Preview(job_id, parse_options(address, values[1:], job_id))
    if address == STATUS:
        return Status(values[0].strip() or None if values else None)
    port = values[0] if values else None
    if port is not None and not 1 <= port <= 65535:
        raise RequestError(f"{address}: port {port} is outside 1-65535")
    host = values[1].strip() or None if len(values) > 1 else None
    return Subscribe(port, host, remove=address == UNSUBSCRIBE)


def _typed(address: str, index: int, tags: str, value: Any) -> Any:
    tag = tags[min(index, len(tags) - 1)]
    if tag == "*":
        tag = tags[-2]
    if tag == "s" and isinstance(value, str):
        return value
    # Numbers arrive as floats from some hosts (Ardour's `h`, TouchOSC faders): accept whole ones.
    if tag == "i" and not isinstance(value, bool):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
    raise RequestError(f"{address}: argument {index + 1} must be {_TAG_NAMES[tag]}, got {_osc_type(value)} {value!r}")


def _osc_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (bytes, bytearray)):
        return "a blob"
    return "a value"


def _describe(tags: str) -> str:
    names = [_TAG_NAMES[t] for t in tags.rstrip("*")]
    return " and ".join(names) + (" plus key=value strings" if tags.endswith("*") else "")


def parse_options(address: str, items: list[str], job_id: str = "") -> dict[str, str]:
    """`["quality=preview", "stems=6"]` → dict. Key names are checked by the job service, which
    knows the separation options; this only enforces the key=value shape."""
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RequestError(f"{address}: option {item!r} is not key=value", job_id)
        if key in options:
            raise RequestError(f"{address}: option {key!r} given twice", job_id)
        options[key] = value.strip()
    return options


def encode(address: str, *args: Any) -> bytes:
    """One OSC message. Python floats go as `f`, ints as `i`, str as `s`."""
    builder = OscMessageBuilder(address=address)
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
            raise TypeError(f"cannot send {arg!r} in {address}")
        builder.add_arg(arg)
    return builder.build().dgram
