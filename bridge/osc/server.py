"""The OSC server: one UDP socket, one thread, every request answered.

Replies and notifications leave from the socket requests arrive on, so a DAW sees them come
from the port it sent to. Nothing a peer sends can stop the loop: every failure becomes an
`/stembridge/error` reply. Bundle time tags are not honoured (requests act at once), so a
peer cannot park the thread with a far-future bundle.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Protocol

from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import BlockingOSCUDPServer

from bridge import __version__
from bridge.errors import ConfigError, StemBridgeError
from bridge.osc import protocol
from bridge.osc.notifier import Address, Notifier

log = logging.getLogger("bridge.osc")

STATUS_LIMIT = 100  # most recent jobs listed by a bare /stembridge/status
PreviewHandler = Callable[[str, dict[str, str]], Path]


class Service(Protocol):
    def submit(self, source: Path, options: dict[str, str], origin: str,
               reply_to: tuple[str, int] | None = None) -> Any: ...
    def cancel(self, job_id: str) -> Any: ...
    def jobs(self, job_id: str | None = None) -> list[Any]: ...
    def add_listener(self, listener: Callable[[Any], None]) -> None: ...


class _UDPServer(BlockingOSCUDPServer):
    """python-osc's UDP server, with our own packet handling and peer filter."""

    def __init__(self, address: tuple[str, int], owner: "OscServer") -> None:
        self._owner = owner
        super().__init__(address, Dispatcher())

    def verify_request(self, request: Any, client_address: Any) -> bool:
        # Let through malformed datagrams too (they get an error reply), but only from peers
        # that may talk to us at all.
        return self._owner.allowed(client_address[0])

    def finish_request(self, request: Any, client_address: Any) -> None:
        self._owner.handle_datagram(request[0], client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("OSC request from %s failed", client_address)


class OscServer:
    def __init__(self, host: str, port: int, service: Service, allow: list[str] | None = None, *,
                 preview_handler: PreviewHandler | None = None, max_subscribers: int = 16,
                 progress_interval: float = 0.1) -> None:
        self._address = (host, port)
        self._service = service
        self._allow = _parse_allow(allow or [])
        self._preview_handler = preview_handler
        self.notifier = Notifier(self._sendto, max_subscribers, progress_interval)
        self._server: _UDPServer | None = None
        self._thread: threading.Thread | None = None
        # Previews render off the receiving thread (a re-render of every chain can take a
        # second or two), so pings, status and cancels keep their answers meanwhile; one
        # thread, because the renderer serialises renders anyway.
        self._previews: ThreadPoolExecutor | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError("OscServer not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind (OSError if the port is taken) and serve on a background thread."""
        if self._server is not None:
            raise RuntimeError("OscServer already started")
        self._server = _UDPServer(self._address, self)
        self._previews = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stembridge-osc-preview")
        self._service.add_listener(self.notifier)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="stembridge-osc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, join the thread, close the socket. Safe to call twice."""
        if self._server is None:
            return
        remove = getattr(self._service, "remove_listener", None)
        if remove is not None:
            remove(self.notifier)
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        if self._previews is not None:
            # The render in progress finishes and answers; requests still waiting are dropped.
            self._previews.shutdown(wait=True, cancel_futures=True)
            self._previews = None
        self._server.server_close()
        self._server = None
        self._thread = None

    # -- peers -------------------------------------------------------------------------------
    def allowed(self, host: str) -> bool:
        """Loopback is always trusted (as when bound to it); others only when allow-listed.
        Without an allow-list every peer that can reach the socket may talk."""
        if not self._allow:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback):
            return True
        return any(ip in network for network in self._allow)

    def _sendto(self, data: bytes, peer: Address) -> None:
        server = self._server
        if server is not None:
            server.socket.sendto(data, peer)

    def _reply(self, peer: Address, address: str, *args: Any) -> None:
        try:
            self._sendto(protocol.encode(address, *args), peer)
        except OSError as exc:
            log.debug("reply to %s:%d failed: %s", peer[0], peer[1], exc)

    # -- requests ----------------------------------------------------------------------------
    def handle_datagram(self, data: bytes, client_address: tuple) -> None:
        # IPv6 peers come as (host, port, flowinfo, scope_id); jobs store (host, port).
        peer: Address = (client_address[0], int(client_address[1]))
        try:
            messages = osc_packet.OscPacket(data).messages
        except osc_packet.ParseError as exc:
            self._reply(peer, protocol.ERROR, "", f"not an OSC message ({exc})")
            return
        for timed in messages:
            message = timed.message
            try:
                self._dispatch(message.address, list(message.params), peer)
            except StemBridgeError as exc:
                job_id = getattr(exc, "job_id", "")
                log.info("request %s from %s:%d refused: %s", message.address, peer[0], peer[1], exc)
                self._reply(peer, protocol.ERROR, job_id, str(exc))
            except Exception as exc:  # a bug must cost one request, not the server
                log.exception("request %s from %s:%d failed", message.address, peer[0], peer[1])
                self._reply(peer, protocol.ERROR, "", f"internal error: {type(exc).__name__}: {exc}")

    def _dispatch(self, address: str, args: list[Any], peer: Address) -> None:
        request = protocol.parse_request(address, args)
        log.debug("%s:%d -> %s %r", peer[0], peer[1], address, args)
        if isinstance(request, protocol.Ping):
            self._reply(peer, protocol.PONG, __version__)
        elif isinstance(request, protocol.Separate):
            # The service's `queued` event (through the notifier) is the reply: it is sent
            # before the worker can start, so it precedes any progress or done message.
            self._service.submit(Path(request.path), request.options, origin="osc", reply_to=peer)
        elif isinstance(request, protocol.Cancel):
            self._cancel(request.job_id, peer)
        elif isinstance(request, protocol.Status):
            self._status(request.job_id, peer)
        elif isinstance(request, protocol.Subscribe):
            self._subscribe(request, peer)
        elif isinstance(request, protocol.Preview):
            self._preview(request, peer)

    def _cancel(self, job_id: str, peer: Address) -> None:
        # Follow first: cancelling a queued job emits `cancelled` before cancel() returns.
        self.notifier.follow(job_id, peer)
        try:
            self._service.cancel(job_id)
        except StemBridgeError as exc:
            self.notifier.unfollow(job_id, peer)
            raise protocol.RequestError(str(exc), job_id) from None

    def _status(self, job_id: str | None, peer: Address) -> None:
        jobs = self._service.jobs(job_id)
        if job_id is not None and not jobs:
            raise protocol.RequestError(f"no job with id {job_id!r}", job_id)
        for job in jobs[-STATUS_LIMIT:]:
            path = job.manifest if job.manifest is not None else job.source
            self._reply(peer, protocol.JOB, job.id, job.state, float(job.progress), str(path))
        self._reply(peer, protocol.JOBS_END, len(jobs))

    def _subscribe(self, request: protocol.Subscribe, peer: Address) -> None:
        host = request.host or peer[0]
        if request.host is not None:
            try:
                target_ip = ipaddress.ip_address(request.host)
            except ValueError:
                raise protocol.RequestError(f"{request.host!r} is not an IP address") from None
            # Never let one peer point the notifications at a third machine we do not trust.
            if not self._may_notify(target_ip, peer[0]):
                raise protocol.RequestError(f"notifications may only go to the sender or an allowed peer, not {host}")
        target = (host, request.port or peer[1])
        if request.remove:
            self.notifier.unsubscribe(target)
            self._reply(peer, protocol.UNSUBSCRIBED, target[0], target[1])
        else:
            self.notifier.subscribe(target)
            log.info("subscriber %s:%d added", *target)
            self._reply(peer, protocol.SUBSCRIBED, target[0], target[1])

    def _may_notify(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, sender: str) -> bool:
        if str(ip) == sender or ip.is_loopback:
            return True
        return bool(self._allow) and self.allowed(str(ip))

    def _preview(self, request: protocol.Preview, peer: Address) -> None:
        if self._preview_handler is None or self._previews is None:
            raise protocol.RequestError("previews not enabled", request.job_id)
        self._previews.submit(self._render_preview, self._preview_handler, request, peer)

    def _render_preview(self, handler: PreviewHandler, request: protocol.Preview, peer: Address) -> None:
        """On the preview thread: render, then answer `preview_ready` or `error`."""
        try:
            path = handler(request.job_id, request.options)
        except StemBridgeError as exc:
            log.info("preview of %s refused: %s", request.job_id, exc)
            self._reply(peer, protocol.ERROR, request.job_id, str(exc))
            return
        except Exception as exc:  # a bug must cost one preview, not the preview thread
            log.exception("preview of %s failed", request.job_id)
            self._reply(peer, protocol.ERROR, request.job_id, f"internal error: {type(exc).__name__}: {exc}")
            return
        self._reply(peer, protocol.PREVIEW_READY, request.job_id, str(path))


def _parse_allow(entries: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Addresses or networks ("192.168.1.20", "10.0.0.0/24"); host names resolved once."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(entry.strip(), None, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ConfigError(f"osc.allow: {entry!r} is neither an address nor a known host name ({exc})") from None
        networks.extend(ipaddress.ip_network(info[4][0]) for info in infos)
    return networks
