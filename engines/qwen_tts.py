"""Qwen3-TTS CustomVoice (12 Hz speech tokenizer, 24 kHz) via qwen-tts, streamed frame by frame.

qwen-tts has no streaming API: ``generate_custom_voice`` returns the whole waveform. The model
itself streams, though. Its talker emits one codec frame (16 codes, 80 ms of audio) per
generation step, and the speech tokenizer's decoder is causal (causal convolutions, a causal
sliding-window transformer), so a run of frames decoded with some frames of left context gives
the same samples as decoding the whole utterance; the library's own ``chunked_decode`` relies on
that. So this engine runs the talker's ``generate`` in a thread of its own, takes each frame
from a forward hook on the talker as it is produced, and decodes chunks of frames while the next
ones are generated: the first chunk after :attr:`QwenTTS.first_chunk_frames` frames, later ones
every :attr:`QwenTTS.chunk_frames`. Cancellation stops the talker before its next step and the
stream at its next chunk.

``speed`` is not supported: the 0.6B models take no speaking-rate instruction, and a
pitch-keeping time stretch applied chunk by chunk (a phase vocoder) smears transients and
clicks at chunk joins, so the engine speaks at the model's natural rate whatever ``speed`` is.

qwen-tts is Apache-2.0, and so are the Qwen3-TTS weights.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from engines.base import CancelToken, EngineError, FloatAudio, MissingDependency
from engines.torch_runtime import import_library, resolve_device, torch_threads

ENGINE = "Qwen3-TTS"
EXTRA = "qwen-tts"
DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"

#: the OpenAI voice names clients send, each with the CustomVoice speakers it prefers, best
#: first: female voices go to female speakers and male voices to male ones, matched on timbre
#: as the model card describes it (alloy: neutral and even, Serena: warm and gentle; coral:
#: bright, Vivian: bright; sage: calm and warm, Sohee: warm; shimmer: light, Ono_Anna: light
#: and nimble; marin: natural, Serena; ash: clear, Aiden: clear midrange; echo: resonant,
#: Ryan: dynamic; ballad: low and expressive, Uncle_Fu: low and mellow; verse: versatile,
#: Dylan: youthful and clear; cedar: deep, Eric: husky). The rest of each list is the same
#: gender's other speakers, so a checkpoint with fewer speakers still keeps the gender.
VOICE_PREFERENCES: dict[str, tuple[str, ...]] = {
    "alloy": ("serena", "vivian", "sohee", "ono_anna"),
    "coral": ("vivian", "sohee", "serena", "ono_anna"),
    "sage": ("sohee", "serena", "vivian", "ono_anna"),
    "shimmer": ("ono_anna", "vivian", "sohee", "serena"),
    "marin": ("serena", "sohee", "vivian", "ono_anna"),
    "ash": ("aiden", "ryan", "dylan", "eric", "uncle_fu"),
    "echo": ("ryan", "aiden", "dylan", "eric", "uncle_fu"),
    "ballad": ("uncle_fu", "ryan", "eric", "aiden", "dylan"),
    "verse": ("dylan", "aiden", "ryan", "eric", "uncle_fu"),
    "cedar": ("eric", "uncle_fu", "ryan", "aiden", "dylan"),
}
#: the default speaker, when not chosen: the model's English-native speakers first
DEFAULT_SPEAKERS = ("ryan", "aiden")

#: speech allowed per character of text (seconds), plus a fixed allowance: about four times
#: the length of English read aloud and over the length of slow Chinese, so a model that never
#: emits its end code stops within seconds of where it should have
SECONDS_PER_CHARACTER = 0.3
SECONDS_FIXED = 2.0
#: frames of codes decoded before a chunk, as the library's own chunked_decode does: the
#: decoder's receptive field beyond this changes the samples by well under 1 %
LEFT_CONTEXT_FRAMES = 25

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """Raised inside the talker's generation loop to end it early."""


_END = object()


def speaker_for_voice(voice: str | None, speakers: Sequence[str], default: str) -> str:
    """The speaker that ``voice`` names: one of ``speakers`` itself (any case), an OpenAI voice
    name mapped by :data:`VOICE_PREFERENCES`, else ``default``. An OpenAI voice none of whose
    preferred speakers exists gets a speaker picked by a stable hash of its name."""
    if voice is None:
        return default
    name = voice.strip().lower()
    if name in speakers:
        return name
    preferences = VOICE_PREFERENCES.get(name)
    if preferences is None:
        return default
    for speaker in preferences:
        if speaker in speakers:
            return speaker
    ordered = sorted(speakers)
    return ordered[zlib.crc32(name.encode()) % len(ordered)]


class QwenTTS:
    """Speech for a text as float32 mono chunks at 24 kHz, streamed as the model generates.

    ``model`` is a Hugging Face hub id (downloaded to the hub cache on first use) or a local
    checkpoint directory of a Qwen3-TTS 12 Hz CustomVoice model. ``device`` is ``auto`` (CUDA
    when torch sees a GPU), ``cpu``, ``cuda`` or ``mps``; weights are bfloat16 on CUDA and
    float32 elsewhere. ``language`` is one the model lists (``English``, ``Chinese``, ...,
    or ``Auto``). ``speaker`` is the default speaker (default: an English-native one).
    ``threads`` bounds torch's CPU threads in each of the engine's threads. Each engine loads
    its own copy of the model: one utterance holds a model for its whole generation, so
    pipelines with copies of their own speak concurrently."""

    def __init__(
        self,
        *,
        model: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        language: str = "English",
        speaker: str | None = None,
        threads: int = 2,
        first_chunk_frames: int = 4,
        chunk_frames: int = 12,
    ) -> None:
        if first_chunk_frames < 1 or chunk_frames < 1:
            raise ValueError("first_chunk_frames and chunk_frames must be at least 1")
        self._torch = import_library(ENGINE, EXTRA, "torch", "torch")
        qwen_tts = import_library(ENGINE, EXTRA, "qwen_tts", "qwen-tts")
        torch = self._torch
        self.device = resolve_device(torch, device)
        self.threads = threads
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self.model_name = _model_reference(model)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        try:
            self._qwen = qwen_tts.Qwen3TTSModel.from_pretrained(
                self.model_name, device_map=self.device, dtype=dtype
            )
        except Exception as error:  # offline, unknown id, network: told at start-up
            raise EngineError(f"{ENGINE} could not load {self.model_name}: {error}") from error
        network = self._qwen.model
        if network.tts_model_type != "custom_voice":
            raise EngineError(
                f"{ENGINE} needs a CustomVoice model; {self.model_name} is {network.tts_model_type}"
            )
        if network.tokenizer_type != "qwen3_tts_tokenizer_12hz":
            raise EngineError(
                f"{ENGINE} streams the 12 Hz speech tokenizer; {self.model_name} uses "
                f"{network.tokenizer_type}"
            )
        languages = {str(n).lower() for n in network.get_supported_languages()}
        if language.lower() not in languages:
            raise ValueError(f"language {language!r} is not one of {sorted(languages)}")
        self.language = language
        self._speakers = sorted(str(n).lower() for n in network.get_supported_speakers())
        if not self._speakers:
            raise EngineError(f"{ENGINE}: {self.model_name} lists no speakers")
        chosen = speaker.lower() if speaker is not None else None
        if chosen is not None and chosen not in self._speakers:
            raise ValueError(f"speaker {speaker!r} is not one of {self._speakers}")
        self.default_speaker = chosen or next(
            (s for s in DEFAULT_SPEAKERS if s in self._speakers), self._speakers[0]
        )
        speech_tokenizer = network.speech_tokenizer
        self.sample_rate: int = speech_tokenizer.get_output_sample_rate()
        #: samples of audio per codec frame (1920 = 80 ms at 24 kHz)
        self.samples_per_frame: int = speech_tokenizer.get_decode_upsample_rate()
        self._decoder = speech_tokenizer.model.decoder
        #: the model's own cap on frames per utterance (its generation config)
        self._max_frames = int(self._qwen._merge_generate_kwargs()["max_new_tokens"])
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded ``qwen_tts.Qwen3TTSModel`` (talker, text processor, speech tokenizer)."""
        return self._qwen

    def voices(self) -> Sequence[str]:
        return [self.default_speaker, *(s for s in self._speakers if s != self.default_speaker)]

    def speaker_for(self, voice: str | None) -> str:
        """The model speaker that speaks for ``voice`` (see :func:`speaker_for_voice`)."""
        return speaker_for_voice(voice, self._speakers, self.default_speaker)

    def max_frames(self, text: str) -> int:
        """The most codec frames generated for ``text``: proportional to its length, within
        the model's own limit."""
        frame_rate = self.sample_rate / self.samples_per_frame
        seconds = SECONDS_FIXED + SECONDS_PER_CHARACTER * len(text)
        return max(1, min(self._max_frames, math.ceil(seconds * frame_rate)))

    def synthesize(
        self, text: str, *, voice: str | None, speed: float, cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        """Yield float32 chunks of 24 kHz speech for ``text``, each a whole number of codec
        frames (:attr:`samples_per_frame` samples each), as they are generated. ``speed`` is
        accepted and ignored (see the module's docstring); an unknown ``voice`` uses the
        default speaker."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        text = text.strip()
        if not text or cancel.cancelled:
            return
        frames: queue.SimpleQueue[Any] = queue.SimpleQueue()
        stop = threading.Event()
        talker = threading.Thread(
            target=self._generate,
            args=(text, self.speaker_for(voice), frames, stop, cancel),
            name="qwen-tts talker",
            daemon=True,
        )
        talker.start()
        try:
            yield from self._decode_stream(frames, cancel)
        finally:
            stop.set()
            # The talker checks ``stop`` before each step (and while it waits for the model),
            # so this waits for one step at most.
            talker.join()

    def _generate(
        self,
        text: str,
        speaker: str,
        frames: queue.SimpleQueue[Any],
        stop: threading.Event,
        cancel: CancelToken,
    ) -> None:
        """The talker's generation, in its own thread: each codec frame goes to ``frames`` as
        soon as it exists, then an end marker (or the exception that ended generation)."""
        torch, qwen = self._torch, self._qwen
        network = qwen.model

        def before_step(module: Any, args: Any) -> None:
            if stop.is_set() or cancel.cancelled:
                raise _Stopped

        def after_step(module: Any, args: Any, output: Any) -> None:
            # A step's output carries the full codes of the frame whose first code the
            # previous step sampled (the prefill step has none).
            codes = output.hidden_states[1]
            if codes is not None:
                frames.put(codes[0].detach().clone())

        # Another utterance of this engine may hold the model; stop waiting once this one is
        # no longer wanted.
        while not self._lock.acquire(timeout=0.05):
            if stop.is_set() or cancel.cancelled:
                frames.put(_END)
                return
        outcome: Any = _END
        try:
            with torch_threads(torch, self.threads), torch.inference_mode():
                hooks = [
                    network.talker.register_forward_pre_hook(before_step),
                    network.talker.register_forward_hook(after_step),
                ]
                try:
                    network.generate(
                        input_ids=qwen._tokenize_texts([qwen._build_assistant_text(text)]),
                        instruct_ids=[None],
                        languages=[self.language],
                        speakers=[speaker],
                        non_streaming_mode=True,
                        **qwen._merge_generate_kwargs(max_new_tokens=self.max_frames(text)),
                    )
                finally:
                    for hook in hooks:
                        hook.remove()
        except _Stopped:
            pass
        except BaseException as error:
            outcome = error
        finally:
            self._lock.release()
        frames.put(outcome)

    def _decode_stream(
        self, frames: queue.SimpleQueue[Any], cancel: CancelToken
    ) -> Iterator[FloatAudio]:
        """Audio chunks decoded from the frames the talker produces, until its end marker."""
        torch = self._torch
        decoded: list[Any] = []  # frames already decoded, the left context of the next chunk
        pending: list[Any] = []
        wanted = self.first_chunk_frames
        while not cancel.cancelled:
            try:
                item = frames.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise EngineError(f"{ENGINE} generation failed: {item}") from item
            finished = item is _END
            if not finished:
                pending.append(item)
            if pending and (finished or len(pending) >= wanted):
                context = decoded[-LEFT_CONTEXT_FRAMES:]
                yield self._decode(torch, context, pending)
                decoded = [*context, *pending]
                pending = []
                wanted = self.chunk_frames
            if finished:
                return

    def _decode(self, torch: Any, context: list[Any], frames: list[Any]) -> FloatAudio:
        """The samples of ``frames``, decoded after the ``context`` frames that precede them."""
        with torch_threads(torch, self.threads), torch.inference_mode():
            codes = torch.stack([*context, *frames]).T.unsqueeze(0).clamp(min=0)
            wav = self._decoder(codes)[0, 0, len(context) * self.samples_per_frame :]
        audio: FloatAudio = wav.to(torch.float32).cpu().numpy()
        return audio


def _model_reference(model: str | Path) -> str:
    """A local checkpoint directory (checked to exist), resolved; anything else is a hub id."""
    path = Path(model).expanduser()
    if isinstance(model, Path) or path.is_absolute() or str(model).startswith("."):
        if not path.is_dir():
            raise MissingDependency(ENGINE, extra=EXTRA, detail=f"the model directory {path}")
        return str(path.resolve())
    if path.is_dir():
        return str(path.resolve())
    return str(model)
