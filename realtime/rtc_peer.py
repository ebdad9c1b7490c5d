"""One WebRTC peer of the server: SDP offer in, SDP answer out, the ``oai-events`` data channel
and the two audio tracks. Everything here runs in the WebRTC loop; what the session needs
crosses to Trio through the :class:`PeerEvents` callbacks, called in the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import aioice.ice
import attrs
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from .rtc_media import Float32, OutboundAudioTrack, read_inbound

log = logging.getLogger("realtime.rtc")

EVENTS_CHANNEL = "oai-events"  #: the data channel's label, as OpenAI names it


class OfferError(Exception):
    """The SDP offer cannot be answered (malformed, or without an audio section)."""


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer ICE host candidates on exactly these local addresses (None: every interface
    but loopback, the WebRTC stack's own choice). Process-wide: the server has one loop."""
    if addresses is None:
        aioice.ice.get_host_addresses = _all_host_addresses
    else:
        chosen = list(addresses)
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
            a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)
        ]


_all_host_addresses = aioice.ice.get_host_addresses


@attrs.define
class PeerEvents:
    """What a peer reports, each called in the WebRTC loop (they must not block)."""

    channel_open: Callable[[], None]
    message: Callable[[str | bytes], None]
    audio: Callable[[Float32], None]  #: caller's audio, float32 mono at the input rate
    output_started: Callable[[], None]
    output_stopped: Callable[[], None]
    closed: Callable[[], None]  #: the connection failed or closed (once)


class RtcPeer:
    """The server side of one call."""

    def __init__(
        self, events: PeerEvents, input_rate: int, ice_servers: Sequence[str] = ()
    ) -> None:
        config = RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in ice_servers])
        self.pc = RTCPeerConnection(configuration=config)
        self.events = events
        self.input_rate = input_rate
        self.output = OutboundAudioTrack(events.output_started, events.output_stopped)
        self.channel: RTCDataChannel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)
        self.pc.on("connectionstatechange", self._on_state)

    async def answer(self, offer_sdp: str) -> str:
        """Apply the caller's offer; returns the answer SDP with every ICE candidate in it
        (gathered before answering: no trickle ICE)."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, KeyError, IndexError) as exc:
            raise OfferError(f"the SDP offer could not be parsed: {exc}") from None
        audio = [t for t in self.pc.getTransceivers() if t.kind == "audio"]
        if not audio:
            raise OfferError("the SDP offer has no audio section")
        audio[0].sender.replaceTrack(self.output)
        audio[0].direction = "sendrecv"
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def send(self, text: str) -> bool:
        """Send one event on the data channel; False when it is not open."""
        if self.channel is None or self.channel.readyState != "open":
            return False
        self.channel.send(text)
        return True

    async def close(self) -> None:
        self.output.stop()
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
        self._report_closed()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != EVENTS_CHANNEL or self.channel is not None:
            log.info("ignoring data channel %r", channel.label)
            return
        self.channel = channel
        channel.on("message", self.events.message)
        if channel.readyState == "open":
            self.events.channel_open()
        else:
            channel.on("open", self.events.channel_open)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            return
        task = asyncio.ensure_future(read_inbound(track, self.input_rate, self.events.audio))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            await self.close()

    def _report_closed(self) -> None:
        if not self._closed:
            self._closed = True
            self.events.closed()
