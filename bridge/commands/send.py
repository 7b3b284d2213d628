"""`stembridge send ADDRESS [ARG...]`: one OSC request to the daemon, wait for the reply.

For DAWs and scripts that can run a shell command but not speak OSC. Arguments of the
daemon's own addresses are typed from the address space table (a job id such as 20240101 stays
a string); `--types` sets them explicitly (`--types is` sends an int, then a string) and is
the way to force a string for any other address. Exit 0 on a reply, 1 on an
`/stembridge/error` reply or no reply in time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bridge.errors import ConfigError, StemBridgeError
from bridge.osc import protocol

NAME = "send"
HELP = "send one OSC request to the running daemon and print the reply"
_TAGS = {"s": str, "i": int, "f": float}


class ReplyError(StemBridgeError):
    """The daemon answered with /stembridge/error, or did not answer."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("address", metavar="ADDRESS", help="OSC address, e.g. /stembridge/ping")
    parser.add_argument("args", nargs="*", metavar="ARG",
                        help="arguments; typed as the address expects (or see --types)")
    parser.add_argument("--host", help="daemon host (default: the config's osc.host, loopback if it binds all)")
    parser.add_argument("--port", type=int, help="daemon port (default: the running daemon's, else osc.port)")
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file to read osc.* from")
    parser.add_argument("--types", metavar="TAGS",
                        help="one OSC type tag per argument: s string, i int, f float (e.g. --types ss)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="how long to wait for the reply (default 5)")
    parser.add_argument("--wait", action="store_true",
                        help="after /stembridge/separate, also wait for the job's done or error")
    parser.add_argument("--json", action="store_true", help="print each message as a JSON object")


def run(args: argparse.Namespace) -> int:
    values = typed_args(args.address, args.args, args.types)
    if args.address == protocol.SEPARATE and values and isinstance(values[0], str):
        # The daemon does not share our working folder: send what the shell user meant.
        values[0] = os.path.abspath(values[0])
    host, port = _target(args)
    waiting_for_job = args.wait and args.address == protocol.SEPARATE
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        # connect(): only the daemon's packets reach us, and a closed port fails fast.
        try:
            sock.connect((host, port))
            sock.send(_encode(args.address, values))
        except OSError as exc:
            raise ReplyError(f"cannot send to {host}:{port}: {exc.strerror or exc}") from None
        job_id = None
        deadline = time.monotonic() + args.timeout
        while True:
            address, params = _receive(sock, deadline, host, port, args.address)
            if address == protocol.ERROR:  # becomes the one stderr line and exit 1
                job = params[0] if params else ""
                message = params[1] if len(params) > 1 else "error"
                raise ReplyError(f"job {job}: {message}" if job else str(message))
            _print(address, params, args.json)
            if waiting_for_job and address == protocol.QUEUED and job_id is None:
                job_id = params[0]
                deadline = float("inf")  # a separation takes as long as it takes
                continue
            if waiting_for_job and job_id is not None:
                if address == protocol.DONE and params[:1] == [job_id]:
                    return 0
                if address == protocol.CANCELLED and params[:1] == [job_id]:
                    raise ReplyError(f"job {job_id} was cancelled")
                continue
            if address in protocol.FINAL_REPLIES:
                return 0


def typed_args(address: str, raw: list[str], types: str | None) -> list[Any]:
    """Command-line strings → OSC values: explicit --types, else the address space's table,
    else a guess (int, then float, then string) for addresses outside it."""
    if types is not None:
        if len(types) != len(raw) or set(types) - set(_TAGS):
            raise ConfigError(f"--types {types!r}: give one of s, i, f for each of the {len(raw)} argument(s)")
        tags = types
    elif address in protocol.REQUEST_TYPES:
        table = protocol.REQUEST_TYPES[address]
        repeat = table[-2] if table.endswith("*") else None
        tags = "".join(table[i] if i < len(table.rstrip("*")) else (repeat or "s") for i in range(len(raw)))
    else:
        tags = "".join(_guess(value) for value in raw)
    values = []
    for tag, value in zip(tags, raw):
        try:
            values.append(_TAGS[tag](value))
        except ValueError:
            kind = {"i": "an integer", "f": "a number"}[tag]
            raise ConfigError(f"{address}: argument {value!r} must be {kind}") from None
    return values


def _guess(value: str) -> str:
    for tag, kind in (("i", int), ("f", float)):
        try:
            kind(value)
            return tag
        except ValueError:
            pass
    return "s"


def _target(args: argparse.Namespace) -> tuple[str, int]:
    host, port = args.host, args.port
    if host is None or port is None:
        from bridge.commands.status import daemon_info
        from bridge.config import load_config

        config = load_config(args.config)
        info = daemon_info(config.paths_state_dir) if port is None else None
        port = port or (int(info["osc_port"]) if info else config.osc_port)
        host = host or config.osc_host
    # A daemon bound to every interface is reached on loopback from here.
    return ("127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host), port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _encode(address: str, values: list[Any]) -> bytes:
    if not address.startswith("/"):
        raise ConfigError(f"OSC address {address!r} must start with '/'")
    builder = OscMessageBuilder(address=address)
    for value in values:
        builder.add_arg(value)
    return builder.build().dgram


def _receive(sock: socket.socket, deadline: float, host: str, port: int, request: str) -> tuple[str, list[Any]]:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyError(f"no reply to {request} from {host}:{port} within the timeout; "
                             "is `stembridge serve` running there?")
        sock.settimeout(min(remaining, 3600.0))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionRefusedError:
            raise ReplyError(f"nothing listens for OSC on {host}:{port}; start it with `stembridge serve`") from None
        try:
            message = OscMessage(data)
        except Exception:  # a stray non-OSC datagram: not our reply
            continue
        return message.address, list(message.params)


def _print(address: str, params: list[Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"address": address, "args": params}), flush=True)
    else:
        print(" ".join([address, *(_show(p) for p in params)]), flush=True)
    sys.stdout.flush()


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
