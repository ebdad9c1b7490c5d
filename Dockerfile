# syntax=docker/dockerfile:1
# The server as a container image, in two variants:
#
#   docker build -t realtime-voice-server .                                   # embedded (default)
#   docker build --target production -t realtime-voice-server:production .    # production engines
#
# "embedded" runs the offline default (Silero, Whisper tiny.en, SmolLM2, Piper; CPU, no network),
# "production" the production preset's engines (Parakeet, the OpenAI Responses API, Qwen3-TTS;
# set OPENAI_API_KEY, give it a GPU). Both serve ws://0.0.0.0:8765/v1/realtime; SIGTERM drains.

# --- build: a virtualenv with the server and the engines' packages ------------------------------
FROM python:3.11-slim-bookworm AS build
# llama-cpp-python compiles llama.cpp. Debian packages are not pinned (DL3008): a pin stops
# the image from taking the distribution's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocol protocol
COPY realtime realtime
COPY engines engines
RUN python -m venv /opt/embedded \
    && /opt/embedded/bin/pip install --no-cache-dir ".[embedded,webrtc]" \
    && /opt/embedded/bin/pip install --no-cache-dir --no-deps pipecat-ai==1.14.0
RUN python -m venv /opt/production \
    && /opt/production/bin/pip install --no-cache-dir ".[vad,nemo,qwen-tts,webrtc]" \
    && /opt/production/bin/pip install --no-cache-dir --no-deps pipecat-ai==1.14.0

# --- what both variants run on --------------------------------------------------------------
FROM python:3.11-slim-bookworm AS base
# libgomp: the OpenMP runtime of llama.cpp, onnxruntime and torch
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home realtime
USER realtime
EXPOSE 8765
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=3)"]

FROM base AS production
COPY --from=build /opt/production /opt/production
ENV PATH=/opt/production/bin:$PATH PYTHONUNBUFFERED=1
# the preset in the entrypoint: flags given to `docker run` (or a pod's args) add to it
ENTRYPOINT ["python", "-m", "realtime", "--ws_host", "0.0.0.0", "--preset", "production"]
CMD []

# the default target: the embedded offline engines
FROM base AS embedded
COPY --from=build /opt/embedded /opt/embedded
ENV PATH=/opt/embedded/bin:$PATH PYTHONUNBUFFERED=1
ENTRYPOINT ["python", "-m", "realtime", "--ws_host", "0.0.0.0"]
CMD []
