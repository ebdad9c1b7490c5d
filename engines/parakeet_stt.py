"""NVIDIA Parakeet TDT (FastConformer encoder, token-and-duration transducer) via NeMo.

Each call runs the model's encoder and its own greedy decoding directly, rather than through
``ASRModel.transcribe()``: that helper is meant for files, builds a data loader in a temporary
directory per call, and flips model state (dither, freezing, training mode, NeMo's global log
level) on and back each time. The encoder and decoder are loaded once per process per
(model, device) and shared by every engine built for them; NeMo's label-looping decoder keeps
reusable state buffers (and CUDA graphs on GPU), so calls into one model are serialised by a
lock. nemo_toolkit is Apache-2.0; Parakeet TDT 0.6B v2 is CC-BY-4.0.
"""

from __future__ import annotations

import copy
import logging
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import CancelToken, EngineError, FloatAudio, MissingDependency, Transcript
from engines.torch_runtime import import_library, resolve_device, torch_threads

ENGINE = "Parakeet STT"
EXTRA = "nemo"
DEFAULT_MODEL = "nvidia/parakeet-tdt-0.6b-v2"

log = logging.getLogger(__name__)


class _LoadedModel:
    """One restored NeMo model and what every engine sharing it needs."""

    __slots__ = ("__weakref__", "aligned_decoding", "device", "lock", "min_samples", "model")

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device
        self.lock = threading.Lock()
        #: a decoding that keeps per-step joint outputs, built on the first logprobs request
        self.aligned_decoding: Any = None
        featurizer = model.preprocessor.featurizer
        # Inference only: no dither noise, no padding to a multiple of frames (what transcribe()
        # sets for the length of each call, set here once).
        featurizer.dither = 0.0
        featurizer.pad_to = 0
        #: one analysis window (samples): shorter audio has no feature frame to transcribe
        self.min_samples = int(featurizer.win_length)


#: loaded models by (model, device); an entry lives while an engine holds it
_loaded: weakref.WeakValueDictionary[tuple[str, str], _LoadedModel] = weakref.WeakValueDictionary()
_loaded_lock = threading.Lock()


class ParakeetSTT:
    """Transcribes 16 kHz float32 mono segments with a Parakeet TDT (or other NeMo BPE
    transducer) model.

    ``model`` is a Hugging Face hub id (downloaded to the hub cache on first use) or the path
    of a local ``.nemo`` file. ``device`` is ``auto`` (CUDA when torch sees a GPU), ``cpu``,
    ``cuda`` or ``mps``. ``threads`` bounds torch's CPU threads during this engine's calls.
    ``language`` is what :class:`Transcript` reports: Parakeet TDT v2 is English-only and
    takes no language or prompt, so those arguments of :meth:`transcribe` are ignored."""

    sample_rate = 16_000

    def __init__(
        self,
        *,
        model: str | Path = DEFAULT_MODEL,
        device: str = "auto",
        threads: int = 2,
        language: str | None = "en",
    ) -> None:
        self._torch = import_library(ENGINE, EXTRA, "torch", "torch")
        self._nemo_asr = import_library(ENGINE, EXTRA, "nemo.collections.asr", "nemo_toolkit[asr]")
        self.device = resolve_device(self._torch, device)
        self.threads = threads
        self.language = language
        self.model_name = _model_reference(model)
        key = (self.model_name, self.device)
        with _loaded_lock:
            loaded = _loaded.get(key)
            if loaded is None:
                loaded = _LoadedModel(self._restore(), self.device)
                _loaded[key] = loaded
        self._loaded = loaded

    @property
    def model(self) -> Any:
        """The NeMo ASR model (shared with other engines of the same model and device)."""
        return self._loaded.model

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
        """Text of ``audio`` (16 kHz). Partials and finals use the same decoding, the model's
        own greedy TDT search, which is already its cheapest; only a final asked for
        ``logprobs`` keeps per-token scores. ``cancel`` is checked before the encoder and
        again before decoding; a cancelled call returns an empty transcript."""
        return self.transcribe_batch([audio], logprobs=logprobs and not partial, cancel=cancel)[0]

    def transcribe_batch(
        self,
        segments: Sequence[FloatAudio],
        *,
        logprobs: bool = False,
        cancel: CancelToken | None = None,
    ) -> list[Transcript]:
        """Final transcripts of several 16 kHz segments, run through the model as one padded
        batch (one transcript per segment, in order)."""
        transcripts = [
            Transcript(text="", audio_seconds=len(s) / self.sample_rate, language=self.language)
            for s in segments
        ]
        loaded = self._loaded
        batch = [i for i, s in enumerate(segments) if len(s) >= loaded.min_samples]
        if _cancelled(cancel):
            return [_nothing(t) for t in transcripts]
        if not batch:
            return transcripts
        torch = self._torch
        lengths = [len(segments[i]) for i in batch]
        signal = np.zeros((len(batch), max(lengths)), dtype=np.float32)
        for row, index in enumerate(batch):
            signal[row, : lengths[row]] = segments[index]
        with loaded.lock, torch_threads(torch, self.threads), torch.inference_mode():
            if _cancelled(cancel):
                return [_nothing(t) for t in transcripts]
            encoded, encoded_lengths = loaded.model.forward(
                input_signal=torch.from_numpy(signal).to(loaded.device),
                input_signal_length=torch.tensor(lengths, device=loaded.device),
            )
            if _cancelled(cancel):
                return [_nothing(t) for t in transcripts]
            decoding = self._aligned_decoding() if logprobs else loaded.model.decoding
            hypotheses = decoding.rnnt_decoder_predictions_tensor(
                encoder_output=encoded, encoded_lengths=encoded_lengths, return_hypotheses=True
            )
            scores = [self._token_logprobs(h) if logprobs else None for h in hypotheses]
        for index, hypothesis, score in zip(batch, hypotheses, scores, strict=True):
            transcripts[index] = Transcript(
                text=hypothesis.text.strip(),
                audio_seconds=transcripts[index].audio_seconds,
                language=self.language,
                logprobs=score,
            )
        return transcripts

    def _restore(self) -> Any:
        models = self._nemo_asr.models
        if self.model_name.endswith(".nemo"):
            model = models.ASRModel.restore_from(self.model_name, map_location=self.device)
        else:
            try:
                model = models.ASRModel.from_pretrained(self.model_name, map_location=self.device)
            except Exception as error:  # offline, unknown id, network: told at start-up
                raise EngineError(
                    f"{ENGINE} could not load {self.model_name} from the Hugging Face hub "
                    f"or its cache: {error}"
                ) from error
        if not isinstance(model, models.EncDecRNNTBPEModel):
            raise EngineError(
                f"{ENGINE} needs a BPE transducer (RNN-T/TDT) model; "
                f"{self.model_name} is a {type(model).__name__}"
            )
        rate = int(model.preprocessor._sample_rate)
        if rate != self.sample_rate:
            raise EngineError(f"{ENGINE} needs a {self.sample_rate} Hz model, not {rate} Hz")
        model.eval()
        log.debug("parakeet %s on %s: %s", self.model_name, self.device, model.cfg.decoding)
        return model

    def _aligned_decoding(self) -> Any:
        """The model's decoding, set to keep each step's joint output (called under the lock)."""
        loaded = self._loaded
        if loaded.aligned_decoding is None:
            from nemo.collections.asr.parts.submodules.rnnt_decoding import RNNTBPEDecoding
            from omegaconf import open_dict

            config = copy.deepcopy(loaded.model.cfg.decoding)
            with open_dict(config):
                config.preserve_alignments = True
            loaded.aligned_decoding = RNNTBPEDecoding(
                decoding_cfg=config,
                decoder=loaded.model.decoder,
                joint=loaded.model.joint,
                tokenizer=loaded.model.tokenizer,
            )
        return loaded.aligned_decoding

    def _token_logprobs(self, hypothesis: Any) -> tuple[tuple[str, float], ...]:
        """(token, natural-log probability) of each emitted token, from the joint output of the
        step that emitted it. A TDT joint puts duration logits after the token logits, so the
        token distribution is renormalised over the vocabulary and blank alone."""
        torch = self._torch
        model = self._loaded.model
        blank = int(model.decoding.blank_id)
        scores: list[tuple[str, float]] = []
        for step in hypothesis.alignments or ():
            for logits, label in step:
                token = int(label)
                if token == blank:
                    continue
                distribution = torch.log_softmax(logits[: blank + 1].float(), dim=-1)
                piece = model.tokenizer.ids_to_tokens([token])[0]
                scores.append((piece.replace("\u2581", " "), float(distribution[token])))
        return tuple(scores)


def _model_reference(model: str | Path) -> str:
    """A ``.nemo`` path (checked to exist), resolved; anything else is a hub id."""
    text = str(model)
    if isinstance(model, Path) or text.endswith(".nemo"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise MissingDependency(ENGINE, extra=EXTRA, detail=f"the model file {path}")
        return str(path.resolve())
    return text


def _cancelled(cancel: CancelToken | None) -> bool:
    return cancel is not None and cancel.cancelled


def _nothing(transcript: Transcript) -> Transcript:
    """What a cancelled call returns for a segment: no text, no audio transcribed."""
    return Transcript(text="", audio_seconds=0.0, language=transcript.language)
