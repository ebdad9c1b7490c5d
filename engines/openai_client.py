"""What the engines speaking OpenAI-compatible HTTP APIs share: one ``openai`` client per
engine (connections are kept alive between calls), its settings in the log, and failures
turned into messages that name the engine, its server and what went wrong."""

from __future__ import annotations

import logging

import openai

log = logging.getLogger(__name__)

#: seconds to wait for the server's next bytes (first byte included) before giving up
DEFAULT_TIMEOUT_S = 30.0
#: retries of a request that failed before its answer began (connection errors, 429, 5xx)
DEFAULT_MAX_RETRIES = 1


class ApiClient:
    """An engine's client of one server. ``api_key`` is sent as is; ``base_url`` None means
    ``$OPENAI_BASE_URL`` or OpenAI's own; ``timeout_s`` bounds each wait for bytes."""

    def __init__(
        self,
        engine: str,
        *,
        model: str,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        self.engine = engine
        self.timeout_s = timeout_s
        self.openai = openai.OpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=max_retries
        )
        self.base_url = str(self.openai.base_url).rstrip("/")
        log.info(
            "%s: model %s at %s (timeout %g s, %d retries)",
            engine,
            model,
            self.base_url,
            timeout_s,
            max_retries,
        )

    @property
    def where(self) -> str:
        """The engine and its server, as error messages name them."""
        return f"{self.engine} at {self.base_url}"

    def failure(self, error: openai.OpenAIError) -> str:
        """A one-line description of a failed call."""
        if isinstance(error, openai.APITimeoutError):
            return f"{self.where}: nothing received for {self.timeout_s:g} s"
        if isinstance(error, openai.APIConnectionError):
            return f"{self.where}: connection failed ({error.__cause__ or error})"
        if isinstance(error, openai.APIStatusError):
            return f"{self.where}: HTTP {error.status_code}: {status_detail(error)}"
        return f"{self.where}: {error}"


def status_detail(error: openai.APIStatusError) -> str:
    """The server's own words for an HTTP error: its error message, else its text."""
    body = error.body  # the "error" object of an OpenAI-shaped answer, else the text
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return error.response.reason_phrase or "no detail"
