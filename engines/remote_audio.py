"""Speech-to-text and text-to-speech on OpenAI-compatible HTTP servers, reached with the
official ``openai`` client: OpenAI itself, or a serving engine that offers
``POST /v1/audio/transcriptions`` and ``POST /v1/audio/speech`` (vLLM, Speaches, ...).

Each engine holds one client, so its requests reuse kept-alive connections. The client
retries a request that failed before its answer began (connection errors, timeouts, 408, 409,
429 and 5xx answers) up to ``max_retries`` times, with a short exponential back-off (0.5 s,
1 s, ...) or the wait a ``Retry-After`` header asks for; any other 4xx answer is an
:class:`~engines.base.EngineError` carrying the server's message at once.

Cancellation: a token cancelled before a call sends no request. A transcription under way
cannot be interrupted from another thread (the synchronous client blocks in the socket read
until the answer or ``timeout_s``), so it runs to its end: the realtime shell abandons the
worker at once and drops the late result, and the pipeline's STT takes its next call once
this one has returned. Speech is streamed: the engine stops at the next network chunk once
cancelled and closes the response, which drops the connection and so tells the server to stop.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import wave
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import openai

from engines.base import CancelToken, EngineError, FloatAudio, Transcript
from engines.openai_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S, ApiClient, status_detail

log = logging.getLogger(__name__)

DEFAULT_STT_MODEL = "whisper-1"
DEFAULT_TTS_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
#: The built-in voices of OpenAI's speech endpoint.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)
#: Hz of ``response_format="pcm"`` at OpenAI (16-bit little-endian mono).
OPENAI_PCM_RATE = 24_000
#: OpenAI refuses audio files shorter than this ("Audio file is too short"); shorter
#: segments are padded with silence up to it.
MIN_AUDIO_SECONDS = 0.1
#: Answers that may mean the server does not take ``include=["logprobs"]``.
_REFUSALS = (openai.BadRequestError, openai.UnprocessableEntityError)


class _RemoteAudio:
    """What both engines share: the client and turning failures into :class:`EngineError`.

    ``base_url`` is the API's root, e.g. ``http://localhost:8000/v1``; ``api_key`` defaults to
    ``$OPENAI_API_KEY``, else ``none`` (local servers need none); ``timeout_s`` is the longest
    wait for the server's next bytes; ``max_retries`` counts the retries of a request that
    failed before its answer began."""

    engine: str  #: the engine's name in logs and errors
    flag: str  #: the command-line flag that sets ``base_url``

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        if not base_url:
            raise EngineError(f"the {self.engine} needs the server's base URL ({self.flag})")
        self.model = model
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.api = ApiClient(
            self.engine,
            model=model,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none",
            base_url=base_url,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self.client, self.base_url = self.api.openai, self.api.base_url

    @property
    def where(self) -> str:
        """The engine and its server, as error messages name them."""
        return self.api.where


# --- STT -------------------------------------------------------------------------------------


class RemoteSTT(_RemoteAudio):
    """``POST {base_url}/audio/transcriptions``: one request per segment.

    ``model`` is the served model's name; ``language`` (ISO-639-1) and ``prompt`` apply when a
    call gives none. Audio goes as a 16-bit PCM WAV file: its header states rate, channels and
    sample width, so every server decodes it without guessing, it is lossless, and the
    standard library writes it (raw PCM is no accepted upload, and float WAV is not read
    everywhere). The answer is asked for as ``json``, the one format every OpenAI model gives
    and the only one that carries log probabilities; ``verbose_json`` would add the detected
    language and segment timings, which nothing downstream reads, and is refused by the
    ``gpt-4o`` transcription models.

    ``partial=True`` makes the same request (these servers have no cheaper hypothesis mode);
    the session's live-transcription interval is what bounds the requests per second.
    ``logprobs=True`` sends ``include=["logprobs"]``; a server that refuses it is asked again
    without it, and is not asked for log probabilities again."""

    engine = "remote STT"
    flag = "--stt_base_url"
    sample_rate = 16_000

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        model: str = DEFAULT_STT_MODEL,
        language: str | None = None,
        prompt: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            model=model or DEFAULT_STT_MODEL,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self.language = language
        self.prompt = prompt
        #: False once the server refused ``include=["logprobs"]``
        self.include_logprobs = True

    def transcribe(
        self,
        audio: FloatAudio,
        *,
        language: str | None = None,
        prompt: str | None = None,
        partial: bool = False,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> Transcript:
        """Text of ``audio`` (16 kHz float32 mono); with ``logprobs``, the tokens' natural-log
        probabilities when the server gives them (None when it does not)."""
        requested = language or self.language
        if len(audio) == 0 or (cancel is not None and cancel.cancelled):
            return Transcript(text="", audio_seconds=0.0, language=requested)
        arguments = self.arguments(audio, language=requested, prompt=prompt or self.prompt)
        if logprobs and self.include_logprobs:
            result = self._transcribe_with_logprobs(arguments)
        else:
            result = self._create(arguments)
        return Transcript(
            text=result.text.strip(),
            audio_seconds=len(audio) / self.sample_rate,
            language=requested,
            logprobs=_logprobs(result) if logprobs else None,
        )

    def arguments(
        self, audio: FloatAudio, *, language: str | None, prompt: str | None
    ) -> dict[str, Any]:
        """The keyword arguments of ``audio.transcriptions.create`` for ``audio``."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "file": ("audio.wav", wav_bytes(audio, self.sample_rate), "audio/wav"),
            "response_format": "json",
        }
        if language:
            arguments["language"] = language
        if prompt:
            arguments["prompt"] = prompt
        return arguments

    def _create(self, arguments: dict[str, Any]) -> Any:
        try:
            return self.client.audio.transcriptions.create(**arguments)
        except openai.OpenAIError as error:
            raise EngineError(self.api.failure(error)) from error

    def _transcribe_with_logprobs(self, arguments: dict[str, Any]) -> Any:
        try:
            return self.client.audio.transcriptions.create(**arguments, include=["logprobs"])
        except _REFUSALS as refusal:
            # If the plain request fails too, the refusal was not about ``include``: the
            # error is raised and the next call asks for log probabilities again.
            result = self._create(arguments)
            self.include_logprobs = False
            log.warning(
                "%s: %s refused include=logprobs (%s); transcribing without log "
                "probabilities from now on",
                self.engine,
                self.base_url,
                status_detail(refusal),
            )
            return result
        except openai.OpenAIError as error:
            raise EngineError(self.api.failure(error)) from error


def wav_bytes(audio: FloatAudio, sample_rate: int) -> bytes:
    """``audio`` (float32 in [-1, 1]) as a 16-bit mono PCM WAV file, padded with silence to
    :data:`MIN_AUDIO_SECONDS`."""
    shortest = round(MIN_AUDIO_SECONDS * sample_rate)
    if len(audio) < shortest:
        audio = np.concatenate([audio, np.zeros(shortest - len(audio), np.float32)])
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm.tobytes())
    return buffer.getvalue()


def _logprobs(result: Any) -> tuple[tuple[str, float], ...] | None:
    scores = getattr(result, "logprobs", None)
    if scores is None:
        return None
    return tuple(
        (score.token, score.logprob)
        for score in scores
        if score.token is not None and score.logprob is not None
    )


# --- TTS -------------------------------------------------------------------------------------


class _BrokenBody(EngineError):
    """The audio stream failed after the answer began."""


class RemoteTTS(_RemoteAudio):
    """``POST {base_url}/audio/speech`` with ``response_format="pcm"``, streamed.

    ``model`` is the served model's name; ``voice`` the default voice, used for a call whose
    voice is not in ``voices`` (by default OpenAI's built-in voices); ``instructions`` (how
    to speak) go with every request when set. ``sample_rate`` is the rate of the server's PCM:
    OpenAI sends 16-bit little-endian mono at 24 kHz; set it for a server that differs.

    A request is retried only before the first audio was yielded: the client retries failures
    before the answer begins, and the engine asks again when the body breaks before carrying
    a whole sample. After that a retry would repeat speech, so a broken stream is an
    :class:`EngineError`."""

    engine = "remote TTS"
    flag = "--tts_base_url"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        model: str = DEFAULT_TTS_MODEL,
        voice: str = DEFAULT_VOICE,
        voices: Sequence[str] | None = None,
        instructions: str | None = None,
        sample_rate: int = OPENAI_PCM_RATE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        super().__init__(
            base_url=base_url,
            api_key=api_key,
            model=model or DEFAULT_TTS_MODEL,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
        self.sample_rate = sample_rate
        self.voice = voice
        self.instructions = instructions
        listed = tuple(voices) if voices else OPENAI_VOICES
        self._voices = (voice, *(name for name in listed if name != voice))

    def voices(self) -> Sequence[str]:
        """The default voice first, then the others."""
        return self._voices

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        """Yield float32 chunks of speech at :attr:`sample_rate` as the bytes arrive. ``speed``
        goes to the server as it is (OpenAI takes 0.25-4.0). Stops at the next network chunk
        once ``cancel`` is set."""
        if cancel.cancelled or not text.strip():
            return
        arguments = self.arguments(text, voice=voice, speed=speed)
        retries = self.max_retries
        while True:
            produced = False
            try:
                for samples in self._stream(arguments, cancel):
                    produced = True
                    yield samples
                return
            except _BrokenBody as broken:
                if produced or retries == 0:
                    raise
                retries -= 1
                log.info("%s: %s; asking again", self.engine, broken)

    def arguments(self, text: str, *, voice: str | None, speed: float) -> dict[str, Any]:
        """The keyword arguments of ``audio.speech.create`` for ``text``."""
        arguments: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": voice if voice in self._voices else self.voice,
            "response_format": "pcm",
            "speed": speed,
        }
        if self.instructions:
            arguments["instructions"] = self.instructions
        return arguments

    def _stream(self, arguments: dict[str, Any], cancel: CancelToken) -> Iterator[FloatAudio]:
        with ExitStack() as closing:
            try:
                response = closing.enter_context(
                    self.client.audio.speech.with_streaming_response.create(**arguments)
                )
            except openai.OpenAIError as error:
                raise EngineError(self.api.failure(error)) from error
            http = _http_library(response)
            chunks = response.iter_bytes()
            odd = b""  # a sample's first byte, whose second comes in the next network chunk
            while not cancel.cancelled:
                try:
                    data = next(chunks, None)
                except http.TimeoutException as error:
                    silence = f"nothing received for {self.timeout_s:g} s"
                    raise _BrokenBody(f"{self.where}: {silence}") from error
                except http.HTTPError as error:
                    raise _BrokenBody(f"{self.where}: the audio stream broke ({error})") from error
                if data is None:
                    if odd:
                        log.warning("%s: dropped a trailing odd byte of PCM", self.engine)
                    return
                if cancel.cancelled:  # set while this thread waited for the bytes
                    return
                data = odd + data
                whole = len(data) - len(data) % 2
                odd = data[whole:]
                if whole:
                    yield pcm16_to_float(data[:whole])


def pcm16_to_float(pcm: bytes) -> FloatAudio:
    """16-bit little-endian PCM (an even number of bytes) as float32 in [-1, 1)."""
    return (np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0).astype(np.float32)


def _http_library(response: Any) -> Any:
    """The HTTP library under the client (httpx2 since openai 3, httpx before), whose errors a
    streamed body raises as they are."""
    return sys.modules[type(response.http_response).__module__.partition(".")[0]]
