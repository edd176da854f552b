"""Async client for OpenAI-compatible chat endpoints (SGLang, vLLM, transformers serve, hosted APIs)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from webdancer.breaker import BREAKERS
from webdancer.config import ModelConfig
from webdancer.errors import ModelError, ModelUnavailable
from webdancer.http import HttpClient, RawResponse, RetriesExhausted, Retry, with_retries
from webdancer.jsonl import json_bytes
from webdancer.keys import read_secret
from webdancer.records import Message, Sampled, Usage

log = logging.getLogger("webdancer.llm")
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class ChatResult:
    text: str
    reasoning: str = ""
    finish_reason: str = ""
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    attempts: int = 1
    sampled: Optional[Sampled] = None  # the token ids, when the server reported them (model.return_token_ids)


class ChatClient:
    """One endpoint + model. Retries 429/5xx/connection errors with jittered exponential backoff.

    The API key is read once from the env var the config names and only ever goes into the
    Authorization header; error messages are scrubbed of it.
    """

    def __init__(self, config: ModelConfig, client: Optional[Any] = None):
        self.config = config
        self._key = read_secret(config.api_key_env, f"model endpoint {config.base_url}")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        connect = min(10.0, config.timeout_s)
        self._client = client or HttpClient(config.timeout_s, connect)
        self._headers = headers
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._breaker = BREAKERS.get(f"model endpoint {config.base_url}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    async def chat(
        self,
        messages: list[Message],
        *,
        stop: Optional[list[str]] = None,
        temperature: Optional[float] = None,
        max_tokens: Optional[int] = None,
        **extra: Any,
    ) -> ChatResult:
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": cfg.temperature if temperature is None else temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_tokens if max_tokens is None else max_tokens,
            **cfg.extra_body,
            **extra,
        }
        if cfg.return_token_ids:
            body["return_token_ids"] = True
        stops = cfg.stop if stop is None else stop
        if stops:
            body["stop"] = list(stops)
        start = time.perf_counter()
        attempts = 0
        payload = json_bytes(body)

        async def attempt() -> ChatResult:
            nonlocal attempts
            attempts += 1
            resp = await self._client.request("POST", self._url, content=payload, headers=self._headers)
            if resp.status_code == 200:
                return self._result(resp, start, attempts)
            reason = f"HTTP {resp.status_code}: {resp.text[:300]}"
            if resp.status_code in RETRY_STATUS:
                raise Retry(reason, _retry_after(resp))
            raise ModelError(f"model endpoint {cfg.base_url} (model {cfg.model}) failed: {self._scrub(reason)}")

        def warn(reason: str, number: int, delay: float) -> None:
            log.warning("model call failed (%s), retry %d/%d in %.2fs", self._scrub(reason)[:200], number, cfg.max_retries, delay)

        try:
            return await with_retries(attempt, cfg.max_retries, cfg.backoff_s, warn, self._breaker)
        except RetriesExhausted as exc:
            raise ModelUnavailable(f"model endpoint {cfg.base_url} (model {cfg.model}) failed after {exc.attempts} tries: {self._scrub(exc.reason)}") from None

    def _result(self, resp: RawResponse, start: float, attempt: int) -> ChatResult:
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice.get("message") or {}
            text = message.get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelError(f"model endpoint {self.config.base_url} sent a reply that is not a chat completion ({type(exc).__name__}: {exc})") from None
        reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        usage = data.get("usage") or {}
        sampled = None
        if self.config.return_token_ids:
            sampled = _sampled(data, choice)
            if sampled is None:
                raise ModelError(f"model endpoint {self.config.base_url} sent no token ids though model.return_token_ids asks for "
                                 "them (vLLM and the batched server report them): set model.return_token_ids=false for this server")
        return ChatResult(
            text=text,
            reasoning=reasoning,
            finish_reason=choice.get("finish_reason") or "",
            usage=Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            latency_s=time.perf_counter() - start,
            attempts=attempt,
            sampled=sampled,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _sampled(data: dict[str, Any], choice: dict[str, Any]) -> Optional[Sampled]:
    """The token ids of a reply as vLLM reports them (`prompt_token_ids`, `choices[].token_ids`, `logprobs.content`)."""
    prompt, completion = data.get("prompt_token_ids"), choice.get("token_ids")
    if not isinstance(prompt, list) or not isinstance(completion, list):
        return None
    content = (choice.get("logprobs") or {}).get("content")
    logprobs = [float(entry["logprob"]) for entry in content] if isinstance(content, list) and len(content) == len(completion) else None
    return Sampled([int(i) for i in prompt], [int(i) for i in completion], logprobs)


def _retry_after(resp: RawResponse) -> Optional[float]:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return min(float(value), 60.0)
    except ValueError:
        return None


def parse_json_object(text: str) -> Optional[dict[str, Any]]:
    """The JSON object in a model reply (fenced or surrounded by prose), or None when there is none."""
    import re

    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
