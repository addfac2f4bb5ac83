"""The input's audio moved into an overlay video as it is muxed (edge/writer.py): copied where mp4
takes its codec, re-encoded to AAC where not, cut to the run's range and shifted with it."""

import contextlib
from collections.abc import Callable
from fractions import Fraction

import av

from .container import DecodeStats, audio_stream, open_input, read_packets

# Audio codecs the mp4 muxer takes as they are; anything else is re-encoded to AAC.
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


def has_audio(path) -> bool:
    with open_input(path) as source:
        return audio_stream(source) is not None


class AudioTrack:
    """Moves the audio of [start_s, end_s) from an input file into the output, in step with
    the video so the muxer never has to hold more than a moment of either."""

    @classmethod
    def open(cls, out, path: str, start_s: float, end_s: float | None, mux: Callable):
        """The track for the first audio stream of `path`, or None when it has none."""
        source = open_input(path)
        try:
            if audio_stream(source) is not None:
                return cls(out, source, start_s, end_s, mux)
        except BaseException:
            source.close()
            raise
        source.close()
        return None

    def __init__(self, out, source, start_s: float, end_s: float | None, mux: Callable):
        self._in = source
        self._mux = mux
        self._start_s = start_s
        self._end_s = end_s
        self._src = audio_stream(source)
        self._copy = self._src.codec_context.codec.canonical_name in MP4_AUDIO_COPY
        if self._copy:
            self._dst = out.add_stream_from_template(self._src)
            self._shift = round(start_s / self._src.time_base)
        else:
            src = self._src.codec_context
            rates = av.Codec("aac", "w").audio_rates
            rate = src.sample_rate if src.sample_rate in rates else 48000
            layout = "mono" if src.layout.nb_channels == 1 else "stereo"
            self._dst = out.add_stream("aac", rate=rate, layout=layout)
            self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)
            self._samples = None  # output pts in samples, set by the first frame
        self._packets = read_packets(self._in, self._src, DecodeStats())  # damage ends the audio, not the run
        self._last_dts = None
        self._next = self._read()

    def mux_until(self, t_s: float | None) -> None:
        """Mux the packets that start at or before output time `t_s` (None: all)."""
        while self._next is not None and (t_s is None or self._time(self._next) - self._start_s <= t_s):
            self._move(self._next)
            self._next = self._read()

    def finish(self) -> None:
        self.mux_until(None)
        if not self._copy:
            self._encode(self._decode(None))
            self._encode([None])  # drain the resampler
            for packet in self._dst.encode(None):
                self._mux(packet)
        self.close()

    def close(self) -> None:
        self._in.close()

    def _read(self) -> av.Packet | None:
        for packet in self._packets:
            if packet is None or packet.pts is None or not packet.size:
                continue
            t = self._time(packet)
            if self._end_s is not None and t >= self._end_s:
                break
            # `<`, not `<=`: AAC's priming packet ends exactly at 0 and the decoder needs it
            # (mp4 hides it again with an edit list).
            if t + float((packet.duration or 0) * self._src.time_base) < self._start_s:
                continue
            return packet
        return None

    def _move(self, packet: av.Packet) -> None:
        if self._copy:
            packet.stream = self._dst
            packet.pts -= self._shift
            if packet.dts is not None:
                packet.dts -= self._shift
            # A damaged file's audio times can go backwards; the muxer refuses those (and then
            # the whole file), so such a packet is dropped: a moment of sound, not the run.
            dts = packet.dts if packet.dts is not None else packet.pts
            if self._last_dts is not None and dts <= self._last_dts:
                return
            self._last_dts = dts
            # A damaged packet the muxer refuses (an ADTS header gone bad) is a moment of sound;
            # a disk that fails arrives as an OutputError, which is no FFmpegError, and stops the run.
            with contextlib.suppress(av.FFmpegError):
                self._mux(packet)
        else:
            self._encode(self._decode(packet))

    def _decode(self, packet: av.Packet | None) -> list[av.AudioFrame]:
        try:
            return self._src.decode(packet)
        except av.FFmpegError:
            return []  # a damaged audio packet costs a moment of sound, not the whole run

    def _encode(self, frames: list[av.AudioFrame | None]) -> None:
        for frame in frames:
            if frame is not None and self._samples is None:
                # Starts at 0 at the earliest: a packet that straddles start_s is kept whole.
                t = frame.time if frame.time is not None else self._start_s
                self._samples = max(0, round((t - self._start_s) * self._dst.rate))
            for chunk in self._resampler.resample(frame):
                # Count samples rather than trust input times: the encoder needs them gapless.
                chunk.pts = self._samples
                chunk.time_base = Fraction(1, self._dst.rate)
                self._samples += chunk.samples
                for out_packet in self._dst.encode(chunk):
                    self._mux(out_packet)

    def _time(self, packet: av.Packet) -> float:
        return float(packet.pts * self._src.time_base)
