"""Server metrics, exposed in the Prometheus text format at ``GET /metrics``."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence

import attrs

from engines.workers import EngineWorker

_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


@attrs.define
class Histogram:
    buckets: tuple[float, ...] = _LATENCY_BUCKETS_S
    counts: list[int] = attrs.Factory(lambda: [0] * (len(_LATENCY_BUCKETS_S) + 1))
    total: float = 0.0
    count: int = 0
    #: the latest observations, for quantiles in benchmarks and logs
    recent: deque[float] = attrs.Factory(lambda: deque(maxlen=4096))

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1
        self.recent.append(value)

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.total:.6f}")
        out.append(f"{name}_count {self.count}")
        return out


@attrs.define
class Metrics:
    """Counters of one server process; only the Trio thread touches them."""

    pool_size: int = 0
    pool_in_use: int = 0
    draining: int = 0  #: 1 while the server drains or shuts down
    active_sessions: int = 0
    #: calls (WebRTC, phone) from their answer to their end (connecting ones included)
    calls_live: int = 0
    #: phone calls by (provider, outcome): "connect", "reject", "refuse" (a spoken refusal)
    phone_calls: dict[tuple[str, str], int] = attrs.Factory(dict)
    sessions_total: int = 0
    sessions_refused: int = 0
    turns: int = 0
    barge_ins: int = 0
    responses_cancelled: int = 0
    engine_errors: int = 0
    protocol_errors: int = 0
    time_to_first_audio: Histogram = attrs.Factory(Histogram)
    end_of_turn_to_first_audio: Histogram = attrs.Factory(Histogram)
    stt_seconds: Histogram = attrs.Factory(Histogram)
    llm_first_token_seconds: Histogram = attrs.Factory(Histogram)
    first_piece_seconds: Histogram = attrs.Factory(Histogram)
    tts_first_chunk_seconds: Histogram = attrs.Factory(Histogram)

    def render(self) -> str:
        gauges = {
            "realtime_pool_size": ("Engine pipelines in the pool.", self.pool_size),
            "realtime_pool_in_use": (
                "Engine pipelines held by voice sessions now (scale out as it nears the size).",
                self.pool_in_use,
            ),
            "realtime_draining": (
                "1 while the server drains or shuts down (it takes no new session).",
                self.draining,
            ),
            "realtime_active_sessions": ("Sessions connected now.", self.active_sessions),
            "realtime_calls_live": (
                "WebRTC and phone calls live now (ringing and connecting ones included).",
                self.calls_live,
            ),
        }
        counters = {
            "realtime_sessions_total": ("Sessions accepted.", self.sessions_total),
            "realtime_sessions_refused_total": (
                "Connections refused: pool full or bad API key.",
                self.sessions_refused,
            ),
            "realtime_turns_total": ("Responses started.", self.turns),
            "realtime_barge_ins_total": ("Responses interrupted by speech.", self.barge_ins),
            "realtime_responses_cancelled_total": (
                "Responses cancelled by the client.",
                self.responses_cancelled,
            ),
            "realtime_engine_errors_total": ("Engine failures.", self.engine_errors),
            "realtime_protocol_errors_total": (
                "Error events sent for invalid client events.",
                self.protocol_errors,
            ),
        }
        lines: list[str] = []
        for name, (help_text, value) in gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        for name, (help_text, value) in counters.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        name = "realtime_phone_calls_total"
        lines += [
            f"# HELP {name} Phone calls by provider and outcome: connect, reject, refuse.",
            f"# TYPE {name} counter",
        ]
        for (provider, outcome), count in sorted(self.phone_calls.items()):
            lines.append(f'{name}{{provider="{provider}",outcome="{outcome}"}} {count}')
        histograms = {
            "realtime_time_to_first_audio_seconds": (
                "From the start of a response's work to its first audio delta.",
                self.time_to_first_audio,
            ),
            "realtime_end_of_turn_to_first_audio_seconds": (
                "From the VAD's end-of-turn decision to the answer's first audio delta.",
                self.end_of_turn_to_first_audio,
            ),
            "realtime_stt_seconds": ("Final transcription of a segment.", self.stt_seconds),
            "realtime_llm_first_token_seconds": (
                "From a response's start to the language model's first output.",
                self.llm_first_token_seconds,
            ),
            "realtime_first_piece_seconds": (
                "From a response's start to its first piece of text ready for speech.",
                self.first_piece_seconds,
            ),
            "realtime_tts_first_chunk_seconds": (
                "From a text piece sent to TTS to its first audio.",
                self.tts_first_chunk_seconds,
            ),
        }
        for name, (help_text, histogram) in histograms.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
            lines += histogram.lines(name)
        return "\n".join(lines) + "\n"


def render_workers(workers: Sequence[EngineWorker], pipelines_healthy: int) -> str:
    """The engine workers' gauges and counters, one series per engine (``engine`` label)."""
    series = {
        "realtime_pipelines_healthy": (
            "gauge",
            "Pipelines whose engines are all up.",
            [("", pipelines_healthy)],
        ),
        "realtime_engine_worker_up": (
            "gauge",
            "1 when the engine's worker process is ready.",
            [(w.name, int(w.healthy)) for w in workers],
        ),
        "realtime_engine_worker_restarts_total": (
            "counter",
            "Restarts of the engine's worker process.",
            [(w.name, w.restarts) for w in workers],
        ),
        "realtime_engine_worker_crashes_total": (
            "counter",
            "Deaths of the engine's worker process (signals, exits, kills when hung).",
            [(w.name, w.crashes) for w in workers],
        ),
    }
    lines: list[str] = []
    for name, (kind, help_text, values) in series.items():
        if not values:
            continue
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for engine, value in values:
            labels = f'{{engine="{engine}"}}' if engine else ""
            lines.append(f"{name}{labels} {value}")
    return "\n".join(lines) + "\n" if lines else ""
