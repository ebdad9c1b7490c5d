import subprocess
import sys
from pathlib import Path

import pytest

from engines.base import MissingDependency
from engines.loading import existing_path, import_runtime, packaged_file

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_runtime_names_the_distribution_and_the_extra():
    with pytest.raises(MissingDependency) as raised:
        import_runtime("Some engine", "no_such_module_xyz", "no-such-dist")
    assert raised.value.extra == "embedded"
    assert "no-such-dist" in str(raised.value)
    assert "pip install -e '.[embedded]'" in str(raised.value)


def test_a_missing_model_package_is_a_missing_dependency():
    with pytest.raises(MissingDependency, match="no-such-models"):
        packaged_file("Some engine", "no_such_models", "model.bin")


def test_a_missing_file_inside_a_package_is_a_missing_dependency():
    with pytest.raises(MissingDependency, match=r"absent\.bin"):
        packaged_file("Some engine", "engines", "absent.bin")


def test_a_packaged_file_is_found_without_importing_its_package():
    assert packaged_file("Some engine", "engines", "base.py") == ROOT / "engines" / "base.py"


def test_a_missing_user_path_is_a_missing_dependency(tmp_path):
    with pytest.raises(MissingDependency):
        existing_path("Some engine", tmp_path / "nothing.onnx")


def test_importing_the_engine_modules_loads_no_heavy_runtime():
    code = (
        "import sys, engines, engines.embedded, engines.silero_vad, engines.whisper_stt,"
        " engines.llama_cpp_llm, engines.piper_tts\n"
        "heavy = {'onnxruntime', 'faster_whisper', 'ctranslate2', 'llama_cpp', 'piper', 'llm'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
