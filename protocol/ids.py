"""Identifiers in OpenAI's shape: a prefix, an underscore and 21 base62 characters."""

from __future__ import annotations

import os

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_CHARS = 21


def new_id(prefix: str) -> str:
    """``prefix`` + ``_`` + 21 random base62 characters, e.g. ``item_Ct1OXLqYLre7VW2Bz9Eoy``."""
    raw = os.urandom(_ID_CHARS)
    return prefix + "_" + "".join(_ALPHABET[b % 62] for b in raw)


def event_id() -> str:
    return new_id("event")


def item_id() -> str:
    return new_id("item")


def response_id() -> str:
    return new_id("resp")


def call_id() -> str:
    return new_id("call")


def session_id() -> str:
    return new_id("sess")


def conversation_id() -> str:
    return new_id("conv")
