"""The remote STT and TTS engines against a real local HTTP server, through the real ``openai``
client."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import trio
from openai.types.audio import Transcription

from engines.base import STT, TTS, CancelToken, EngineError
from engines.remote_audio import (
    DEFAULT_VOICE,
    OPENAI_VOICES,
    RemoteSTT,
    RemoteTTS,
    pcm16_to_float,
    wav_bytes,
)
from realtime import Pipeline, PipelinePool
from tests.engines.openai_server import DROP, STALL, AudioScript, FakeOpenAIServer, Reply
from tests.realtime.fakes import FakeLLM, FakeSTT, FakeTTS, FakeVAD
from tests.realtime.harness import live_server, session, silence_pcm, tone_pcm

RATE = 16_000
#: 0.5 s of a 220 Hz tone at 16 kHz
AUDIO = (0.25 * np.sin(2 * np.pi * 220 * np.arange(RATE // 2) / RATE)).astype(np.float32)
#: 0.25 s of a 330 Hz tone as the 24 kHz 16-bit little-endian PCM a speech server sends
PCM = (8000 * np.sin(2 * np.pi * 330 * np.arange(6000) / 24_000)).astype("<i2").tobytes()
REFUSED = "logprobs are not supported with this model"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def stt(server: FakeOpenAIServer, **options: Any) -> RemoteSTT:
    return RemoteSTT(**{"base_url": server.base_url, "max_retries": 0, **options})


def tts(server: FakeOpenAIServer, **options: Any) -> RemoteTTS:
    return RemoteTTS(**{"base_url": server.base_url, "max_retries": 0, **options})


def speak(engine: RemoteTTS, text: str = "Hello there.", **options: Any) -> list[np.ndarray]:
    options = {"voice": None, "speed": 1.0, "cancel": CancelToken(), **options}
    return list(engine.synthesize(text, **options))


def answers(*texts: str) -> list[Reply]:
    """One transcription reply per text."""
    return [Reply((AudioScript.transcript(text),)) for text in texts]


def unused_port() -> int:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return int(unused.getsockname()[1])


def test_the_scripted_transcripts_are_what_the_sdk_parses() -> None:
    for body in (AudioScript.transcript("hi"), AudioScript.transcript("hi", [("hi", -0.1)])):
        assert Transcription.model_validate(body).text == "hi"


def test_engines_implement_the_interfaces(server: FakeOpenAIServer) -> None:
    assert isinstance(stt(server), STT)
    assert isinstance(tts(server), TTS)


def test_an_engine_without_a_base_url_fails_at_construction() -> None:
    with pytest.raises(EngineError, match="--stt_base_url"):
        RemoteSTT(base_url="")
    with pytest.raises(EngineError, match="--tts_base_url"):
        RemoteTTS(base_url="")


# --- STT -------------------------------------------------------------------------------------


def test_transcript_text_comes_from_the_server(
    monkeypatch: pytest.MonkeyPatch, server: FakeOpenAIServer
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.script([AudioScript.transcript(" What is the weather in Paris? ")])
    result = stt(server, model="served-whisper").transcribe(AUDIO)
    assert result.text == "What is the weather in Paris?"
    assert result.audio_seconds == 0.5
    assert result.logprobs is None
    (received,) = server.received
    assert received.path == "/v1/audio/transcriptions"
    assert received.headers["authorization"] == "Bearer none"
    assert received.body == {"model": "served-whisper", "response_format": "json"}


def test_the_audio_goes_as_a_16_bit_16_khz_wav_file(server: FakeOpenAIServer) -> None:
    server.script([AudioScript.transcript("a tone")])
    stt(server).transcribe(AUDIO)
    audio = server.received[0].audio
    assert audio is not None
    assert (audio.filename, audio.content_type) == ("audio.wav", "audio/wav")
    assert (audio.sample_rate, audio.channels, audio.sample_width) == (16_000, 1, 2)
    assert audio.samples == len(AUDIO)
    sent = np.frombuffer(audio.frames, "<i2") / 32767.0
    assert np.max(np.abs(sent - AUDIO)) < 1e-4


def test_a_segment_shorter_than_a_tenth_of_a_second_is_padded(server: FakeOpenAIServer) -> None:
    server.script([AudioScript.transcript("")])
    result = stt(server).transcribe(AUDIO[:800])
    assert result.audio_seconds == 0.05
    audio = server.received[0].audio
    assert audio is not None
    assert audio.samples == 1600
    assert not np.frombuffer(audio.frames, "<i2")[800:].any()


def test_language_and_prompt_go_with_the_request(server: FakeOpenAIServer) -> None:
    server.script(*answers("bonjour", "bonjour"))
    engine = stt(server, language="en", prompt="Weather words.")
    assert engine.transcribe(AUDIO, language="fr", prompt="Paris.").language == "fr"
    assert engine.transcribe(AUDIO).language == "en"
    given, defaults = (received.body for received in server.received)
    assert (given["language"], given["prompt"]) == ("fr", "Paris.")
    assert (defaults["language"], defaults["prompt"]) == ("en", "Weather words.")


def test_a_partial_makes_the_same_request(server: FakeOpenAIServer) -> None:
    server.script(*answers("what is", "what is"))
    engine = stt(server)
    assert engine.transcribe(AUDIO, partial=True).text == "what is"
    engine.transcribe(AUDIO)
    partial, final = server.received
    assert partial.body == final.body
    assert partial.audio == final.audio


def test_logprobs_are_asked_for_and_mapped(server: FakeOpenAIServer) -> None:
    scores = [("what", -0.01), (" is", -0.25)]
    server.script([AudioScript.transcript("what is", scores)])
    result = stt(server).transcribe(AUDIO, logprobs=True)
    assert result.logprobs == (("what", -0.01), (" is", -0.25))
    assert server.received[0].body["include[]"] == ["logprobs"]


def test_a_server_that_sends_no_logprobs_gives_none(server: FakeOpenAIServer) -> None:
    server.script([AudioScript.transcript("what is")])
    assert stt(server).transcribe(AUDIO, logprobs=True).logprobs is None


def test_a_server_that_refuses_include_is_asked_again_without_it_and_never_again(
    server: FakeOpenAIServer,
) -> None:
    server.script(
        Reply(status=400, error=REFUSED),
        [AudioScript.transcript("what is")],
        [AudioScript.transcript("the weather")],
    )
    engine = stt(server)
    first = engine.transcribe(AUDIO, logprobs=True)
    assert (first.text, first.logprobs) == ("what is", None)
    assert engine.transcribe(AUDIO, logprobs=True).text == "the weather"
    assert [("include[]" in r.body) for r in server.received] == [True, False, False]


def test_a_refusal_that_was_not_about_include_is_an_error(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(status=400, error="Audio file is corrupt"),
        Reply(status=400, error="Audio file is corrupt"),
    )
    engine = stt(server)
    with pytest.raises(EngineError, match="HTTP 400: Audio file is corrupt"):
        engine.transcribe(AUDIO, logprobs=True)
    assert engine.include_logprobs


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_or_rate_limit_is_retried(server: FakeOpenAIServer, status: int) -> None:
    server.script(
        Reply(status=status, error="busy", headers=(("retry-after-ms", "10"),)),
        [AudioScript.transcript("what is")],
    )
    assert stt(server, max_retries=1).transcribe(AUDIO).text == "what is"
    assert len(server.received) == 2


def test_a_bad_request_fails_at_once_with_the_servers_message(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=400, error="Invalid language 'xx'"))
    with pytest.raises(EngineError, match=r"remote STT at .*: HTTP 400: Invalid language 'xx'"):
        stt(server, max_retries=2).transcribe(AUDIO, language="xx")
    assert len(server.received) == 1


def test_a_slow_answer_is_a_timeout_error(server: FakeOpenAIServer) -> None:
    server.script(Reply((5.0, AudioScript.transcript("too late"))))
    with pytest.raises(EngineError, match=r"nothing received for 0.3 s"):
        stt(server, timeout_s=0.3).transcribe(AUDIO)
    assert server.disconnected.wait(5), "the timed-out request's connection was not closed"


def test_an_unreachable_server_is_an_engine_error() -> None:
    port = unused_port()
    engine = RemoteSTT(base_url=f"http://127.0.0.1:{port}/v1", max_retries=0)
    with pytest.raises(EngineError, match=f"127.0.0.1:{port}/v1: connection failed"):
        engine.transcribe(AUDIO)


def test_a_cancelled_or_empty_segment_sends_no_request(server: FakeOpenAIServer) -> None:
    cancel = CancelToken()
    cancel.cancel()
    engine = stt(server)
    assert engine.transcribe(AUDIO, cancel=cancel).text == ""
    assert engine.transcribe(np.zeros(0, np.float32)).text == ""
    assert server.received == []


def test_a_transcription_cancelled_under_way_runs_to_its_answer(
    server: FakeOpenAIServer,
) -> None:
    server.script(Reply((0.5, AudioScript.transcript("what is"))))
    cancel = CancelToken()

    def cancel_once_requested() -> None:
        while not server.received:
            time.sleep(0.005)
        cancel.cancel()

    canceller = threading.Thread(target=cancel_once_requested)
    canceller.start()
    assert stt(server).transcribe(AUDIO, cancel=cancel).text == "what is"
    canceller.join(5)
    assert cancel.cancelled
    assert server.finished.is_set()


def test_transcriptions_reuse_one_connection(server: FakeOpenAIServer) -> None:
    server.script(*answers("again", "again", "again"))
    engine = stt(server)
    for _ in range(3):
        engine.transcribe(AUDIO)
    assert server.connections == 1


def test_wav_bytes_clips_out_of_range_samples() -> None:
    audio = np.array([2.0, -2.0, 0.5] * 1000, np.float32)
    pcm = np.frombuffer(wav_bytes(audio, RATE)[44:], "<i2")
    assert list(pcm[:3]) == [32767, -32767, 16384]


# --- TTS -------------------------------------------------------------------------------------


def test_speech_request_carries_model_voice_speed_and_instructions(
    server: FakeOpenAIServer,
) -> None:
    server.script(AudioScript.speech(PCM))
    engine = tts(server, model="served-tts", voice="nova", instructions="Speak calmly.")
    speak(engine, "Hello there.", voice="coral", speed=1.25)
    (received,) = server.received
    assert received.path == "/v1/audio/speech"
    assert received.body == {
        "model": "served-tts",
        "input": "Hello there.",
        "voice": "coral",
        "response_format": "pcm",
        "speed": 1.25,
        "instructions": "Speak calmly.",
    }


def test_an_unknown_voice_falls_back_to_the_default(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM), AudioScript.speech(PCM))
    speak(tts(server), voice="nobody")
    speak(tts(server, voice="af_heart", voices=["af_heart", "am_adam"]), voice="alloy")
    assert [r.body["voice"] for r in server.received] == [DEFAULT_VOICE, "af_heart"]
    assert "instructions" not in server.received[0].body


def test_voices_are_openais_unless_configured(server: FakeOpenAIServer) -> None:
    assert set(tts(server).voices()) == set(OPENAI_VOICES)
    assert tts(server).voices()[0] == DEFAULT_VOICE
    assert list(tts(server, voice="b", voices=["a", "b"]).voices()) == ["b", "a"]


def test_audio_is_yielded_as_it_arrives(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 4000, 8000, pause_s=0.2))
    stream = tts(server).synthesize("Hello there.", voice=None, speed=1.0, cancel=CancelToken())
    first = next(stream)
    assert len(first) == 2000
    assert not server.finished.is_set()
    chunks = [first, *stream]
    assert server.finished.is_set()
    assert len(chunks) >= 3
    assert all(chunk.dtype == np.float32 for chunk in chunks)
    assert np.array_equal(np.concatenate(chunks), pcm16_to_float(PCM))


def test_samples_split_across_network_chunks_are_joined(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 1, 3001, 3002, 7777))
    chunks = speak(tts(server))
    assert len(chunks) > 1
    assert sum(len(chunk) for chunk in chunks) == len(PCM) // 2
    assert np.array_equal(np.concatenate(chunks), pcm16_to_float(PCM))


def test_a_trailing_odd_byte_is_dropped(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM + b"\x01", 5))
    assert np.array_equal(np.concatenate(speak(tts(server))), pcm16_to_float(PCM))


def test_the_sample_rate_is_the_configured_one(server: FakeOpenAIServer) -> None:
    assert tts(server).sample_rate == 24_000
    assert tts(server, sample_rate=22_050).sample_rate == 22_050


def test_a_speech_server_error_before_the_answer_is_retried(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(status=503, error="overloaded", headers=(("retry-after-ms", "10"),)),
        AudioScript.speech(PCM, 5000),
    )
    chunks = speak(tts(server, max_retries=1))
    assert sum(len(chunk) for chunk in chunks) == len(PCM) // 2
    assert len(server.received) == 2


def test_a_body_that_breaks_before_any_sample_is_retried(server: FakeOpenAIServer) -> None:
    server.script([PCM[:1], 0.05, DROP], AudioScript.speech(PCM))
    chunks = speak(tts(server, max_retries=1))
    assert np.array_equal(np.concatenate(chunks), pcm16_to_float(PCM))
    assert len(server.received) == 2


def test_a_body_that_breaks_after_audio_is_an_error_and_not_retried(
    server: FakeOpenAIServer,
) -> None:
    server.script([PCM[:1000], 0.05, DROP], AudioScript.speech(PCM))
    stream = tts(server, max_retries=1).synthesize(
        "Hello.", voice=None, speed=1.0, cancel=CancelToken()
    )
    assert len(next(stream)) == 500
    with pytest.raises(EngineError, match=r"remote TTS at .*: the audio stream broke"):
        next(stream)
    assert len(server.received) == 1


def test_a_speech_bad_request_fails_at_once(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=400, error="Input is too long"))
    with pytest.raises(EngineError, match="HTTP 400: Input is too long"):
        speak(tts(server, max_retries=2))
    assert len(server.received) == 1


def test_a_server_that_stalls_mid_stream_fails_after_the_timeout(
    server: FakeOpenAIServer,
) -> None:
    server.script([PCM[:2000], STALL])
    stream = tts(server, timeout_s=0.3).synthesize(
        "Hello.", voice=None, speed=1.0, cancel=CancelToken()
    )
    assert len(next(stream)) == 1000
    with pytest.raises(EngineError, match=r"nothing received for 0.3 s"):
        next(stream)
    assert server.disconnected.wait(5), "the stalled connection was not closed"


def test_cancel_between_chunks_stops_and_closes_the_connection(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 2000, 4000, 6000, 8000, pause_s=0.2))
    cancel = CancelToken()
    stream = tts(server).synthesize("Hello.", voice=None, speed=1.0, cancel=cancel)
    assert len(next(stream)) == 1000
    cancel.cancel()
    assert list(stream) == []
    assert server.disconnected.wait(5), "the server never saw the connection close"
    assert not server.finished.is_set()


def test_cancel_while_waiting_stops_at_the_next_chunk(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 2000, 4000, 6000, 8000, pause_s=1.0))
    cancel = CancelToken()
    stream = tts(server).synthesize("Hello.", voice=None, speed=1.0, cancel=cancel)
    assert len(next(stream)) == 1000
    # Cancelled while the worker waits for the next chunk: that chunk is the last it reads.
    threading.Timer(0.05, cancel.cancel).start()
    assert list(stream) == []
    assert server.disconnected.wait(5), "the server never saw the connection close"
    assert not server.finished.is_set()


def test_cancelled_or_empty_text_sends_no_request(server: FakeOpenAIServer) -> None:
    cancel = CancelToken()
    cancel.cancel()
    assert speak(tts(server), cancel=cancel) == []
    assert speak(tts(server), " \n") == []
    assert server.received == []


def test_speech_requests_reuse_one_connection(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 3000), AudioScript.speech(PCM, 3000))
    engine = tts(server)
    for _ in range(2):
        assert sum(len(chunk) for chunk in speak(engine)) == len(PCM) // 2
    assert server.connections == 1


# --- through the realtime server -------------------------------------------------------------


def test_a_voice_turn_is_transcribed_by_the_remote_stt(server: FakeOpenAIServer) -> None:
    server.script([AudioScript.transcript("what is the weather in paris")])
    engine = RemoteSTT(base_url=server.base_url, max_retries=0)
    pool = PipelinePool([Pipeline(0, FakeVAD(), engine, FakeLLM(), FakeTTS())], 1)

    async def turn(live: Any) -> list[dict[str, Any]]:
        async with session(live) as client:
            await client.update_session(audio={"input": {"transcription": {"model": "whisper-1"}}})
            await client.append(silence_pcm(200) + tone_pcm(1000) + silence_pcm(700))
            return await client.until(
                "conversation.item.input_audio_transcription.completed", timeout=20
            )

    with live_server(pool, live_transcription=False) as live:
        events = trio.run(turn, live)
    assert events[-1]["transcript"] == "what is the weather in paris"
    (received,) = server.received
    assert received.audio is not None
    assert received.audio.sample_rate == 16_000
    # the committed segment: the tone and the silence that ended the turn, at least
    assert received.audio.samples >= 16 * 1000


def test_a_text_turn_is_voiced_by_the_remote_tts(server: FakeOpenAIServer) -> None:
    server.script(AudioScript.speech(PCM, 3001, 7000))
    engine = RemoteTTS(base_url=server.base_url, max_retries=0)
    pool = PipelinePool([Pipeline(0, FakeVAD(), FakeSTT(), FakeLLM("Hello there."), engine)], 1)

    async def turn(live: Any) -> list[dict[str, Any]]:
        async with session(live) as client:
            await client.user_text("Say hello")
            await client.send({"type": "response.create"})
            return await client.until("response.done")

    with live_server(pool) as live:
        events = trio.run(turn, live)
    assert events[-1]["response"]["status"] == "completed"
    deltas = [e["delta"] for e in events if e["type"] == "response.output_audio.delta"]
    assert len(deltas) > 1
    voiced = np.frombuffer(b"".join(base64.b64decode(d) for d in deltas), "<i2").astype(int)
    sent = np.frombuffer(PCM, "<i2").astype(int)
    assert len(voiced) == len(sent)
    assert np.max(np.abs(voiced - sent)) <= 1  # float32 and back
    assert server.received[0].body["input"] == "Hello there."
