import logging

from engines.base import LLM, STT, TTS, VAD
from engines.embedded import load_vad


def test_load_embedded_builds_the_four_engines(embedded):
    vad, stt, llm, tts = embedded
    assert isinstance(vad, VAD) and isinstance(stt, STT)
    assert isinstance(llm, LLM) and isinstance(tts, TTS)
    assert vad.sample_rate == stt.sample_rate == 16_000


def test_each_load_is_logged_with_its_duration(caplog):
    with caplog.at_level(logging.INFO, logger="engines.embedded"):
        load_vad(threads=1)
    (record,) = caplog.records
    assert record.getMessage().startswith("loaded vad SileroVAD in ")
    assert record.getMessage().endswith(" s")
