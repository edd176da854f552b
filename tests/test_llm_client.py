import logging

import pytest

from webdancer.config import ModelConfig
from webdancer.errors import ModelError, ModelUnavailable, OutageError
from webdancer.llm import ChatClient
from webdancer.records import Message
from webdancer.testing.fake_openai import FakeOpenAIServer

MSGS = [Message("user", "hi")]


def model_cfg(base_url, **kw):
    return ModelConfig(base_url=base_url, model="fake", backoff_s=0.01, **kw)


async def test_retries_429_and_5xx_then_succeeds():
    with FakeOpenAIServer([(429, "slow down"), (503, "overloaded"), (500, "oops"), "hello"]) as srv:
        async with ChatClient(model_cfg(srv.base_url, max_retries=4)) as client:
            result = await client.chat(MSGS)
    assert result.text == "hello"
    assert result.attempts == 4
    assert result.usage.completion_tokens > 0
    assert len(srv.state.requests) == 4


async def test_gives_up_after_max_retries_with_clear_error():
    with FakeOpenAIServer(default=(502, "bad gateway")) as srv:
        async with ChatClient(model_cfg(srv.base_url, max_retries=2)) as client:
            with pytest.raises(ModelUnavailable, match=r"failed after 3 tries: HTTP 502"):
                await client.chat(MSGS)
    assert len(srv.state.requests) == 3


async def test_client_error_is_not_retried():
    with FakeOpenAIServer(default=(400, "bad request")) as srv:
        async with ChatClient(model_cfg(srv.base_url, max_retries=3)) as client:
            with pytest.raises(ModelError, match="HTTP 400") as err:
                await client.chat(MSGS)
    assert not isinstance(err.value, OutageError)  # a refused request is an answer, not an outage
    assert len(srv.state.requests) == 1


async def test_connection_refused_is_retried_then_reported():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with ChatClient(model_cfg(f"http://127.0.0.1:{port}/v1", max_retries=1)) as client:
        with pytest.raises(ModelUnavailable, match="ConnectError"):
            await client.chat(MSGS)


async def test_stop_sequences_and_params_are_sent():
    with FakeOpenAIServer(["answer<tool_response>invented"]) as srv:
        async with ChatClient(model_cfg(srv.base_url, temperature=0.3, max_tokens=77)) as client:
            result = await client.chat(MSGS)
    req = srv.state.requests[0]
    assert req["stop"] == ["<tool_response>"] and req["temperature"] == 0.3 and req["max_tokens"] == 77
    assert result.text == "answer"


async def test_reasoning_content_is_returned():
    with FakeOpenAIServer(["<answer>x</answer>"]) as srv:
        srv.state.reasoning = "deep thoughts"
        async with ChatClient(model_cfg(srv.base_url)) as client:
            result = await client.chat(MSGS)
    assert result.reasoning == "deep thoughts"


async def test_secret_never_in_logs_or_errors(monkeypatch, caplog):
    secret = "sk-test-5ecr3t-value"
    monkeypatch.setenv("WD_FAKE_KEY", secret)

    def echo_auth(request):
        return (500, "server echoes your key: " + secret)

    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(default=echo_auth) as srv:
        async with ChatClient(model_cfg(srv.base_url, api_key_env="WD_FAKE_KEY", max_retries=1)) as client:
            with pytest.raises(ModelError) as err:
                await client.chat(MSGS)
    assert srv.state.headers[0]["Authorization"] == f"Bearer {secret}"  # it was sent ...
    assert secret not in str(err.value)  # ... but never shown
    assert secret not in caplog.text
    assert "***" in str(err.value)


async def test_reply_that_is_not_a_chat_completion_is_a_clear_error():
    with FakeOpenAIServer([(200, "not a completion")]) as srv:
        async with ChatClient(model_cfg(srv.base_url)) as client:
            with pytest.raises(ModelError, match="not a chat completion"):
                await client.chat(MSGS)
