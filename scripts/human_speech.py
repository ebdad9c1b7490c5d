"""Recorded human speech for the benchmarks: short English utterances by real speakers, taken
from files that packages on PyPI and Debian ship (none is committed here).

- pocketsphinx 5.1.1 (PyPI source archive, BSD-style licence): its test recordings, a US male
  speaker ("go forward ten meters"; playing cards) and a LibriVox reader of *Sense and
  Sensibility* (public domain), 16 kHz;
- pysptk 1.0.1 (PyPI source archive, MIT): CMU ARCTIC's Scottish male speaker ``awb``, 16 kHz;
- asterisk-core-sounds-en-wav 1.6.1-1 (Debian, CC-BY-SA-3.0): Allison Smith's telephone
  prompts, a US female speaker, 8 kHz telephone audio.

Each recording keeps its own room tone before and after the speech. The archives are fetched
once (about 53 MB: PyPI over its simple index, the Debian package with ``apt-get download``),
checked against their SHA-256 and kept in ``~/.cache/realtime-voice/speech``
(``REALTIME_SPEECH_CACHE`` elsewhere); only the clips are kept, as WAV files.

``python scripts/human_speech.py`` fetches them and lists the clips with where speech ends.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
import urllib.request
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Archive:
    kind: str  #: "sdist" (PyPI source archive) or "deb" (Debian package)
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Clip:
    archive: Archive
    member: str  #: path inside the archive
    text: str  #: what is said
    speaker: str

    @property
    def file_name(self) -> str:
        return f"{self.archive.name}-{Path(self.member).stem}.wav"


POCKETSPHINX = Archive(
    "sdist",
    "pocketsphinx",
    "5.1.1",
    "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
)
PYSPTK = Archive(
    "sdist", "pysptk", "1.0.1", "78b1c9338bf795a41cdc3ff03fcd4699c401c323f54630bb71a19710078d0b3f"
)
ASTERISK = Archive(
    "deb",
    "asterisk-core-sounds-en-wav",
    "1.6.1-1",
    "2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
)
_LIBRIVOX = "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-"
_ALLISON = "./usr/share/asterisk/sounds/en_US_f_Allison/"

CLIPS = [
    Clip(
        POCKETSPHINX, "pocketsphinx-5.1.1/test/data/goforward.raw", "go forward ten meters", "cmu"
    ),
    Clip(
        POCKETSPHINX,
        "pocketsphinx-5.1.1/test/data/cards/005.wav",
        "eight of spades four of clubs seven of hearts",
        "cmu",
    ),
    Clip(POCKETSPHINX, f"{_LIBRIVOX}0880.wav", "he was not an ill disposed young man", "librivox"),
    Clip(
        POCKETSPHINX,
        f"{_LIBRIVOX}0930.wav",
        "he might even have been made amiable himself",
        "librivox",
    ),
    Clip(
        PYSPTK,
        "pysptk-1.0.1/pysptk/example_audio_data/arctic_a0007.wav",
        "and you always want to see it in the superlative degree",
        "awb",
    ),
    Clip(
        ASTERISK,
        f"{_ALLISON}vm-savefolder.wav",
        "which folder should I save the message to",
        "allison",
    ),
    Clip(
        ASTERISK,
        f"{_ALLISON}check-number-dial-again.wav",
        "please check the number and dial again",
        "allison",
    ),
    Clip(
        ASTERISK,
        f"{_ALLISON}cannot-complete-as-dialed.wav",
        "your call cannot be completed as dialed",
        "allison",
    ),
]


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "realtime-voice" / "speech"
    return Path(os.environ.get("REALTIME_SPEECH_CACHE", default))


def _verified(data: bytes, archive: Archive) -> bytes:
    digest = hashlib.sha256(data).hexdigest()
    if digest != archive.sha256:
        raise RuntimeError(
            f"{archive.name} {archive.version}: SHA-256 {digest} is not the known one"
        )
    return data


def _sdist(archive: Archive) -> bytes:
    """The source archive from PyPI's simple index."""
    index = f"https://pypi.org/simple/{archive.name}/"
    page = urllib.request.urlopen(index, timeout=60).read().decode()
    name = f"{archive.name.replace('-', '_')}-{archive.version}.tar.gz"
    links = [u for u in re.findall(r'href="([^"]+)"', page) if u.split("#")[0].endswith(name)]
    if not links:
        raise RuntimeError(f"{name} is not on {index}")
    return _verified(urllib.request.urlopen(links[0], timeout=300).read(), archive)


def _deb_members(archive: Archive, members: list[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", f"{archive.name}={archive.version}"], cwd=tmp, check=True
        )
        (deb,) = Path(tmp).glob("*.deb")
        _verified(deb.read_bytes(), archive)
        tree = Path(tmp) / "tree"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
        return {m: (tree / m).read_bytes() for m in members}


def _fetch(archive: Archive, clips: list[Clip], into: Path) -> None:
    members = [c.member for c in clips]
    if archive.kind == "deb":
        found = _deb_members(archive, members)
    else:
        with tarfile.open(fileobj=io.BytesIO(_sdist(archive))) as tar:
            found = {}
            for m in members:
                extracted = tar.extractfile(m)
                assert extracted is not None, m
                found[m] = extracted.read()
    into.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        data = found[clip.member]
        if clip.member.endswith(".raw"):  # headerless 16 kHz PCM16 (pocketsphinx's tests)
            buffer = io.BytesIO()
            with wave.open(buffer, "wb") as writer:
                writer.setnchannels(1)
                writer.setsampwidth(2)
                writer.setframerate(16_000)
                writer.writeframes(data)
            data = buffer.getvalue()
        (into / clip.file_name).write_bytes(data)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples of a PCM16 WAV file, and its rate."""
    with wave.open(str(path)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
    return samples.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768, rate


def speech_span(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Where the speech starts and ends (s): the first and last 10 ms frame louder than a
    tenth of the loudest frame's RMS (the room tone stays well under that)."""
    step = rate // 100
    frames = samples[: len(samples) // step * step].reshape(-1, step)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = np.nonzero(rms > 0.1 * rms.max())[0]
    return loud[0] / 100, (loud[-1] + 1) / 100


def clips() -> list[tuple[Clip, np.ndarray, int]]:
    """Every clip (fetched first if it is not in the cache): the clip, its samples, its rate."""
    where = cache_dir()
    missing = [c for c in CLIPS if not (where / c.file_name).exists()]
    for archive in dict.fromkeys(c.archive for c in missing):
        _fetch(archive, [c for c in missing if c.archive == archive], where)
    return [(c, *read_wav(where / c.file_name)) for c in CLIPS]


if __name__ == "__main__":
    for clip, samples, rate in clips():
        start, end = speech_span(samples, rate)
        print(
            f"{clip.file_name:60s} {clip.speaker:9s} {rate:5d} Hz {len(samples) / rate:4.1f} s, "
            f"speech {start:.2f}-{end:.2f} s: {clip.text}"
        )
