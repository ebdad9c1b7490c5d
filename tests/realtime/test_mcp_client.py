"""realtime/mcp_client.py against real MCP servers (the ``mcp`` SDK's own) on loopback ports."""

from __future__ import annotations

import json

import pytest
import trio

from protocol.mcp_config import McpServerConfig, ToolFilter
from realtime.mcp_client import (
    McpFailure,
    first_failure,
    open_mcp_server,
    reraisable,
    url_allowed,
)
from tests import mcp_servers
from tests.mcp_servers import free_port, serving


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_lists_every_tool_and_calls_them(transport: str) -> None:
    async def body() -> None:
        with serving(transport) as url:
            async with open_mcp_server(McpServerConfig("weather", url)) as server:
                tools = {t.name: t for t in await server.list_tools()}
                assert set(tools) == {"forecast", "add", "slow", "broken"}
                forecast = tools["forecast"]
                assert forecast.description == "The forecast for a city"
                assert forecast.read_only and not tools["add"].read_only
                assert forecast.input_schema["required"] == ["city"]
                item = forecast.item_json()
                assert item["name"] == "forecast" and item["annotations"]["readOnlyHint"] is True
                assert (
                    await server.call("forecast", '{"city": "Oslo"}') == "Sunny in Oslo, 21 degrees"
                )
                assert json.loads(await server.call("add", '{"a": 2, "b": 40}')) == 42

    trio.run(body)


def test_allowed_tools_filter_the_listing() -> None:
    async def body() -> None:
        with serving() as url:
            for allowed, expected in [
                (ToolFilter(tool_names=("add", "nope")), {"add"}),
                (ToolFilter(read_only=True), {"forecast"}),
                (ToolFilter(tool_names=("add", "forecast"), read_only=False), {"add"}),
                (ToolFilter(), {"forecast", "add", "slow", "broken"}),
            ]:
                config = McpServerConfig("weather", url, allowed_tools=allowed)
                async with open_mcp_server(config) as server:
                    assert {t.name for t in await server.list_tools()} == expected, allowed

    trio.run(body)


def test_failures_have_openai_error_kinds_and_the_connection_stays_usable() -> None:
    async def body() -> None:
        with serving() as url:
            async with open_mcp_server(McpServerConfig("weather", url)) as server:
                with pytest.raises(McpFailure) as failed:
                    await server.call("broken", "{}")
                assert failed.value.error_json() == {
                    "type": "tool_execution_error",
                    "message": failed.value.message,
                }
                assert "the sensor is offline" in failed.value.message
                with pytest.raises(McpFailure) as failed:
                    await server.call("add", '{"a": "x"}')  # the server validates
                assert failed.value.kind == "tool_execution_error"
                for arguments in ("[1, 2]", "{nope"):
                    with pytest.raises(McpFailure) as failed:
                        await server.call("add", arguments)
                    assert failed.value.error_json()["type"] == "protocol_error"
                    assert failed.value.code == -32602
                with pytest.raises(McpFailure) as failed:
                    await server.call("slow", '{"seconds": 5}', timeout_s=0.3)
                assert failed.value.error_json() == {
                    "type": "protocol_error",
                    "code": -32001,
                    "message": failed.value.message,
                }
                assert await server.call("add", '{"a": 1, "b": 1}') == "2"

    trio.run(body)


def test_a_cancelled_call_is_abandoned_and_the_next_one_works() -> None:
    async def body() -> None:
        with serving() as url:
            async with open_mcp_server(McpServerConfig("weather", url)) as server:
                with trio.move_on_after(0.3) as scope:
                    await server.call("slow", '{"seconds": 5}')
                assert scope.cancelled_caught
                assert await server.call("add", '{"a": 3, "b": 4}') == "7"

    trio.run(body)


@pytest.mark.parametrize("transport", ["http", "sse"])
def test_headers_and_authorization_reach_the_server_and_stay_out_of_messages(
    transport: str,
) -> None:
    secret = "s3cret-token-for-the-test"

    async def body() -> None:
        with serving(transport, token=secret) as url:
            config = McpServerConfig(
                "weather", url, headers=(("X-Test", "header-value"),), authorization=secret
            )
            async with open_mcp_server(config) as server:
                assert await server.call("add", '{"a": 1, "b": 2}') == "3"
            assert (None, None) not in {(a, x) for _, a, x in mcp_servers.SEEN[-3:]}
            assert all(a == f"Bearer {secret}" for _, a, _ in mcp_servers.SEEN[-3:])
            assert all(x == "header-value" for _, _, x in mcp_servers.SEEN[-3:])
            assert secret not in repr(config)

            wrong = McpServerConfig("weather", url, authorization="wrong")
            with pytest.raises(McpFailure) as failed:
                async with open_mcp_server(wrong):
                    pass
            assert failed.value.error_json() == {
                "type": "http_error",
                "code": 401,
                "message": "the MCP server answered HTTP 401",
            }
            assert "wrong" not in str(failed.value)

    trio.run(body)


def test_an_unreachable_server_is_a_protocol_error() -> None:
    async def body() -> None:
        url = f"http://127.0.0.1:{free_port()}/mcp"
        with pytest.raises(McpFailure) as failed:
            async with open_mcp_server(McpServerConfig("gone", url), connect_timeout_s=3):
                pass
        assert failed.value.kind == "protocol_error"
        assert "cannot reach the MCP server" in failed.value.message

    trio.run(body)


def test_what_the_block_raises_comes_out_as_raised() -> None:
    async def body() -> None:
        with serving() as url:
            with pytest.raises(McpFailure) as failed:
                async with open_mcp_server(McpServerConfig("weather", url)) as server:
                    await server.call("broken", "{}")
            assert failed.value.kind == "tool_execution_error"
            with pytest.raises(KeyError):
                async with open_mcp_server(McpServerConfig("weather", url)):
                    raise KeyError("mine")

    trio.run(body)


def test_a_tool_the_filter_left_out_is_not_called() -> None:
    async def body() -> None:
        with serving() as url:
            config = McpServerConfig("weather", url, allowed_tools=ToolFilter(read_only=True))
            async with open_mcp_server(config) as server:
                assert [t.name for t in await server.list_tools()] == ["forecast"]
                calls_before = len(mcp_servers.SEEN)
                with pytest.raises(McpFailure) as failed:
                    await server.call("add", '{"a": 1, "b": 2}')
                assert failed.value.kind == "protocol_error"
                assert len(mcp_servers.SEEN) == calls_before  # nothing was sent

    trio.run(body)


def test_a_header_that_cannot_be_sent_is_named_without_its_value() -> None:
    async def body() -> None:
        config = McpServerConfig("x", "http://127.0.0.1:9/mcp", authorization="clé-secrète")
        with pytest.raises(McpFailure) as failed:
            async with open_mcp_server(config):
                pass
        assert "Authorization" in failed.value.message
        assert "secr" not in failed.value.message and "secr" not in repr(failed.value)

    trio.run(body)


def test_a_server_that_never_answers_fails_within_the_connect_timeout() -> None:
    async def body() -> None:
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts connections (the kernel does), answers nothing
        port = listener.getsockname()[1]
        with pytest.raises(McpFailure) as failed:
            async with open_mcp_server(
                McpServerConfig("mute", f"http://127.0.0.1:{port}/mcp"), connect_timeout_s=0.5
            ):
                pass
        assert failed.value.kind == "protocol_error" and failed.value.code == -32001
        listener.close()

    trio.run(body)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://tools.example/mcp", True),
        ("http://TOOLS.example:80/mcp/x", True),
        ("http://tools.example/mcpx", False),
        ("http://tools.example/other", False),
        ("https://tools.example/mcp", False),
        ("http://tools.example:8080/mcp", False),
        ("http://tools.example.evil.test/mcp", False),
        ("http://tools.example@evil.test/mcp", False),
        ("https://any.example.org/sse", True),
        ("ftp://tools.example/mcp", False),
    ],
)
def test_the_url_policy_allows_the_origin_and_path_below(url: str, allowed: bool) -> None:
    patterns = ("http://tools.example/mcp/", "https://any.example.org")
    assert url_allowed(url, patterns) is allowed
    assert url_allowed(url, None) is True
    assert url_allowed(url, ()) is False


def test_reraisable_keeps_what_is_not_an_ordinary_error() -> None:
    interrupt, broken = KeyboardInterrupt(), ValueError("broken")
    assert reraisable(broken) is None
    assert reraisable(ExceptionGroup("transport", [broken])) is None
    assert reraisable(interrupt) is interrupt
    kept = reraisable(BaseExceptionGroup("cancelled mid-call", [interrupt, broken]))
    assert isinstance(kept, BaseExceptionGroup)
    assert list(kept.exceptions) == [interrupt]
    failure = McpFailure("http_error", "the MCP server answered HTTP 500", 500)
    assert first_failure(ExceptionGroup("g", [broken, ExceptionGroup("h", [failure])])) is failure
