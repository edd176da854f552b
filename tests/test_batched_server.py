"""The default CPU model server (`serve.backend: batched`): concurrent requests share decode steps, and every
request keeps its own temperature, top_p, max_tokens and stop strings, as any OpenAI server would."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import torch
from conftest import free_port
from webdancer_models.batched_server import (
    GREEDY_TEMPERATURE,
    BadRequest,
    DecodeThreads,
    Sampling,
    bf16_supported,
    decode_thread_candidates,
    first_stop,
    install_fast_top_p,
    install_lean_sampling,
    install_step_threads,
    pack_linear_weights,
    parse_request,
)
from webdancer_models.serve import served_model_name

from webdancer.config import ModelConfig
from webdancer.errors import ModelError
from webdancer.llm import ChatClient
from webdancer.records import Message

LONG = "Summarize this log: " + " ".join(f"step {i} visited page {i * 7} and found nothing new;" for i in range(80))  # > max_batch_tokens
PROMPTS = ["What is FOLDOC?", "Who invented Python?", LONG, "Name three prime numbers.", LONG.replace("nothing", "a date"), "Explain TCP in one sentence."]


def test_requests_are_parsed_with_their_own_settings_and_unsupported_fields_refused():
    messages, sampling, kwargs = parse_request({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "temperature": 0,
                                               "top_p": 0.5, "stop": "<tool_response>", "n": 1, "stream": False, "user": "me"}, 99)
    assert sampling == Sampling(7, 0.0, 0.5, ["<tool_response>"]) and kwargs == {}
    assert sampling.processor_kwargs == {"temperature": GREEDY_TEMPERATURE, "top_p": 1.0}  # greedy ignores top_p
    assert Sampling(5, 0.7, 0.9).processor_kwargs == {"temperature": 0.7, "top_p": 0.9}
    assert parse_request({"messages": [{"role": "user", "content": "x"}]}, 99)[1].max_new_tokens == 99
    assert parse_request({"messages": [{"role": "user", "content": "x"}], "stream": True, "stream_options": {"include_usage": True}}, 9)
    for body, field in [({"seed": 1}, "'seed'"), ({"n": 2}, "'n'"), ({"logprobs": True}, "'logprobs'"),
                        ({"max_tokens": 0}, "'max_tokens'"), ({"temperature": -1}, "'temperature'"), ({"top_p": 0}, "'top_p'"),
                        ({"stop": [""]}, "'stop'"), ({"messages": []}, "'messages'")]:
        with pytest.raises(BadRequest, match=field):
            parse_request({"messages": [{"role": "user", "content": "x"}], **body}, 99)
    # Every text shape the OpenAI API accepts: parts joined, null content beside tool calls; other parts named.
    shapes = [{"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
              {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": "{}"}}]},
              {"role": "assistant"}]
    assert [m["content"] for m in parse_request({"messages": shapes}, 9)[0]] == ["one\ntwo", "", ""]
    for message, field in [({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}, r"messages\[0\].content\[0\].*'image_url'"),
                           ({"role": "user", "content": None}, r"messages\[0\].content' must be .* \(null only on an assistant turn\)"),
                           ({"role": "user", "content": 3}, r"messages\[0\].content' must be a string")]:
        with pytest.raises(BadRequest, match=field):
            parse_request({"messages": [message]}, 9)
    assert first_stop("abc<tool_response>x</tool_response>", ["</tool_response>", "<tool_response>"]) == 3
    assert first_stop("abc", ["z"]) is None


def test_the_fast_top_p_keeps_the_same_tokens_as_transformers_own():
    from transformers.generation.continuous_batching import cb_logits_processors as cbl
    from transformers.generation.logits_process import TopPLogitsWarper

    stock = cbl.CLASSIC_TO_CB_PROCESSORS_MAP[TopPLogitsWarper]
    assert install_fast_top_p()
    fast_cls = cbl.CLASSIC_TO_CB_PROCESSORS_MAP[TopPLogitsWarper]
    base = TopPLogitsWarper(0.9)
    stock_p, fast_p = stock(base), fast_cls(base)
    torch.manual_seed(0)
    peaked, flat = torch.randn(3, 5000) * 8, torch.randn(3, 5000) * 0.1  # nucleus inside the top 256 / far wider
    scores = torch.cat([peaked, flat])
    top_p = torch.tensor([0.9, 0.5, 1.0, 0.95, 0.3, 1.0], dtype=torch.float32)
    arg = top_p.view(dtype=torch.int32)
    want, got = stock_p(scores.clone(), arg), fast_p(scores.clone(), arg)
    assert torch.equal(torch.isinf(want), torch.isinf(got))  # the same tokens survive in every row
    assert torch.equal(got[~torch.isinf(got)], scores[~torch.isinf(got)])  # and keep their scores
    assert not torch.isinf(got[2]).any() and not torch.isinf(got[5]).any()  # top_p 1 rows untouched


def test_the_lean_sampler_draws_from_the_same_distribution_and_never_a_filtered_token():
    from transformers.generation.continuous_batching.model_runner import ModelRunner

    assert install_lean_sampling()
    runner = ModelRunner.__new__(ModelRunner)  # only the sampling settings are read
    runner.do_sample, runner.return_logprobs = True, False
    probs = torch.tensor([0.5, 0.0, 0.3, 0.15, 0.05] + [0.0] * 3)
    scores = probs.log().expand(4000, -1).clone()  # -inf for the filtered tokens, as top-p leaves them
    scores[-1] = torch.tensor([0.1, 3.0, -2.0, 0.5, 0.0, 1.0, 2.0, 2.9]) / GREEDY_TEMPERATURE  # a greedy row
    out = torch.zeros(2, scores.size(0), dtype=torch.int64)
    torch.manual_seed(0)
    runner._sample(scores.unsqueeze(0), out)
    drawn, greedy = out[0, :-1], int(out[0, -1])
    assert greedy == 1
    counts = torch.bincount(drawn, minlength=8).double()
    assert counts[probs == 0].sum() == 0
    expected = probs * drawn.numel()
    keep = probs > 0
    chi2 = float((((counts - expected)[keep]) ** 2 / expected[keep]).sum())
    assert chi2 < 16.3, (counts, chi2)  # 3 degrees of freedom, p = 0.001


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_packed_linear_layers_compute_what_the_stock_ones_do(dtype):
    """float32: the same up to summation order. bfloat16 (serve.linear_dtype): close (bf16 rounding, not garbage),
    fp32 out, and really rounded."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.SiLU(), torch.nn.Linear(96, 32, bias=False))
    x = torch.randn(1, 8, 64)
    tol = {"float32": (1e-5, 1e-6), "bfloat16": (0.05, 0.02)}[dtype]
    with torch.inference_mode():
        want = model(x)
        if dtype == "bfloat16" and not bf16_supported():
            pytest.skip("this CPU has no native bf16 matmuls")
        if not pack_linear_weights(model, dtype):
            pytest.skip("this torch has no oneDNN")
        got = model(x)
        assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=tol[0], atol=tol[1])
        assert torch.allclose(model(x[:, :1]), want[:, :1], rtol=tol[0], atol=tol[1])  # any number of rows
        if dtype == "bfloat16":
            assert not torch.allclose(got, want, rtol=1e-6, atol=1e-7)  # the weights and inputs really were rounded
    with pytest.raises(ValueError, match="'float16' is not one of float32, bfloat16"):
        pack_linear_weights(torch.nn.Linear(2, 2), "float16")


def test_bf16_on_a_cpu_without_native_bf16_is_refused_before_loading(monkeypatch, tmp_path):
    from webdancer_models import batched_server

    monkeypatch.setattr(batched_server, "bf16_supported", lambda: False)
    with pytest.raises(SystemExit, match="no native bf16 matmuls .* serve.linear_dtype=float32"):
        batched_server.BatchedGenerator.from_dir(tmp_path, 512, 8, 64, None, linear_dtype="bfloat16")


def test_decoding_steps_run_on_the_chosen_threads_and_steps_with_prefill_on_all(monkeypatch):
    from transformers.generation.continuous_batching import model_runner

    runner = model_runner.ModelRunner
    seen = []
    monkeypatch.setattr(runner, "webdancer_unthreaded_step", lambda self, model, batch, *a, **k: seen.append(torch.get_num_threads()), raising=False)
    monkeypatch.setattr(runner, "_forward_process_and_sample", runner._forward_process_and_sample)  # put back afterwards
    full = torch.get_num_threads()
    threads = DecodeThreads([1])
    try:
        assert install_step_threads(threads)
        for tokens in (8, 512, 8):  # 8 requests decoding; a prefill chunk; decoding again
            runner._forward_process_and_sample(None, None, {"input_ids": torch.zeros(1, tokens, dtype=torch.long)})
    finally:
        torch.set_num_threads(full)
    assert seen == [1, full, 1]
    assert threads.steps_since_choice == 2  # the decode steps were timed, the prefill step not


def test_decode_threads_alternate_keep_the_faster_and_try_again_later():
    threads = DecodeThreads([2, 1], trial=3, settle=5)
    step_s = {1: 0.050, 2: 0.030}
    tried = []
    for _ in range(6):  # the trial: both candidates alternate until each has 3 timed steps
        n = threads.next()
        tried.append(n)
        threads.record(n, step_s[n])
    assert sorted(tried) == [1, 1, 1, 2, 2, 2] and all(a != b for a, b in zip(tried, tried[1:]))
    assert threads.chosen == 2 and [threads.next() for _ in range(3)] == [2, 2, 2]
    step_s = {1: 0.020, 2: 0.030}  # the machine changed (a neighbour came)
    for _ in range(5):
        threads.record(threads.next(), step_s[2])
    assert threads.chosen is None  # after `settle` decode steps the trial runs again ...
    for _ in range(6):
        n = threads.next()
        threads.record(n, step_s[n] + (0.5 if len(threads.times[n]) == 0 else 0))  # one outlier step each: medians ignore it
    assert threads.chosen == 1  # ... and follows the machine
    pinned = DecodeThreads([1])
    assert pinned.chosen == 1 and pinned.next() == 1
    for _ in range(10):
        pinned.record(1, 0.1)
    assert pinned.chosen == 1  # a pinned count is never tried again


@pytest.mark.parametrize("asked, full, want", [(0, 2, [1, 2]), (0, 1, [1]), (0, 16, [15, 16]), (1, 2, [1]), (4, 2, [2])])
def test_decode_thread_candidates(asked, full, want):
    assert decode_thread_candidates(asked, full) == want


def chat_config(serve_cfg, server, **kw) -> ModelConfig:
    return ModelConfig(base_url=server.base_url, model=served_model_name(serve_cfg), max_retries=0, **{"top_p": 1.0, "stop": [], **kw})


async def test_batched_greedy_replies_are_what_generate_gives_one_prompt_at_a_time(tiny_server, tiny_model):
    """Long prompts are prefilled in chunks beside other requests' decoding: still token for token the same."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    serve_cfg, server = tiny_server
    async with ChatClient(chat_config(serve_cfg, server, temperature=0.0, max_tokens=32)) as client:
        replies = await asyncio.gather(*(client.chat([Message("user", p)]) for p in PROMPTS))  # in flight together
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for prompt, reply in zip(PROMPTS, replies):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=32, do_sample=False)
        assert reply.text == tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True), prompt
        assert reply.usage.completion_tokens == out.shape[1] - ids["input_ids"].shape[1]


async def test_each_request_keeps_its_temperature_and_stop_strings_while_batched_with_others(tiny_server):
    serve_cfg, server = tiny_server
    prompt = [Message("user", "Write one sentence about a city you like.")]
    async with ChatClient(chat_config(serve_cfg, server, max_tokens=24)) as client:
        mixed = await asyncio.gather(*(client.chat(prompt, temperature=t) for t in [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
        greedy, sampled = {r.text for r in mixed[0::2]}, [r.text for r in mixed[1::2]]
        assert len(greedy) == 1 and len(set(sampled)) > 1  # greedy rows stay greedy beside sampled ones, and vice versa
        full = mixed[0].text
        word = full.split()[3]
        cut = await client.chat(prompt, temperature=0.0, stop=[word, "never-appears"])
    assert cut.text == full[: full.index(word)] and cut.finish_reason == "stop"
    assert cut.usage.completion_tokens < mixed[0].usage.completion_tokens  # generation stopped there, not at max_tokens


async def test_a_streamed_request_gets_the_same_completion_as_server_sent_events_and_token_ids_when_asked(tiny_server):
    """Clients that only read streams (verifiers' harness programs) get the completion in OpenAI's stream format."""
    serve_cfg, server = tiny_server
    body = {"model": served_model_name(serve_cfg), "messages": [{"role": "user", "content": "Name three prime numbers."}],
            "temperature": 0, "max_tokens": 16, "return_token_ids": True}
    async with httpx.AsyncClient(timeout=120) as http:
        whole = (await http.post(server.base_url + "/chat/completions", json=body)).json()
        async with http.stream("POST", server.base_url + "/chat/completions",
                               json={**body, "stream": True, "stream_options": {"include_usage": True}}) as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            events = [line[len("data: "):] async for line in streamed.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]
    # Token ids as vLLM reports them (return_token_ids): the prompt's, the completion's.
    assert len(whole["prompt_token_ids"]) == whole["usage"]["prompt_tokens"] == len(chunks[0]["prompt_token_ids"])
    assert whole["choices"][0]["token_ids"] == chunks[0]["choices"][0]["token_ids"]
    assert len(whole["choices"][0]["token_ids"]) == whole["usage"]["completion_tokens"]


async def test_bad_requests_get_clear_http_errors_and_the_server_keeps_serving(tiny_server):
    serve_cfg, server = tiny_server
    url = server.base_url + "/chat/completions"
    msg = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(timeout=120) as http:
        seeded = await http.post(url, json={"model": served_model_name(serve_cfg), "messages": msg, "seed": 3})
        assert seeded.status_code == 400 and "'seed'" in seeded.json()["error"]["message"]
        other = await http.post(url, json={"model": "gpt-4o", "messages": msg})
        assert other.status_code == 404 and "gpt-4o" in other.json()["error"]["message"]
        huge = await http.post(url, json={"messages": [{"role": "user", "content": "word " * 9000}], "max_tokens": 8})
        assert huge.status_code == 400 and "--kv-cache-tokens" in huge.json()["error"]["message"]
        assert (await http.post(url, content=b"{not json")).status_code == 400
        shaped = [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                  {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": "{}"}}]},
                  {"role": "tool", "content": [{"type": "text", "text": "nothing found"}]}]
        assert (await http.post(url, json={"messages": shaped, "max_tokens": 2})).status_code == 200  # OpenAI's shapes for text
        image = await http.post(url, json={"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
        assert image.status_code == 400 and "messages[0].content[0]" in image.json()["error"]["message"]
        models = (await http.get(server.base_url + "/models")).json()["data"]
        assert served_model_name(serve_cfg) in [m["id"] for m in models]
    with pytest.raises(ModelError, match="'seed'"):  # a 400 is not retried and names the field
        async with ChatClient(chat_config(serve_cfg, server, max_tokens=4, extra_body={"seed": 1})) as client:
            await client.chat([Message("user", "hi")])
    async with ChatClient(chat_config(serve_cfg, server, temperature=0.0, max_tokens=4)) as client:
        assert (await client.chat([Message("user", "hi")])).usage.completion_tokens > 0


async def test_a_request_whose_client_has_gone_stops_generating(tiny_server):
    """A client that gives up (a timeout, a killed agent) takes its generation with it: the engine drops it at once
    instead of decoding to max_tokens for nobody."""
    serve_cfg, server = tiny_server
    health = server.base_url.removesuffix("/v1") + "/health"
    long = {"model": served_model_name(serve_cfg), "messages": [{"role": "user", "content": "Tell a very long story about ships."}],
            "max_tokens": 1500, "temperature": 0.0}  # greedy, this prompt loops past 400 tokens without an end (checked)

    async def in_flight(http):
        return (await http.get(health)).json()["requests_in_flight"]

    async with httpx.AsyncClient(timeout=30) as http:
        async with httpx.AsyncClient(timeout=4) as impatient:
            request = asyncio.ensure_future(impatient.post(server.base_url + "/chat/completions", json=long))
            await asyncio.sleep(2)
            assert await in_flight(http) == 1 and not request.done()  # 1,500 tokens take about a minute here
            with pytest.raises(httpx.TimeoutException):
                await request
        deadline = time.monotonic() + 15
        while await in_flight(http) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await in_flight(http) == 0
        reply = await http.post(server.base_url + "/chat/completions", json={**long, "max_tokens": 2})
        assert reply.status_code == 200


async def test_bf16_linear_layers_serve_the_fp32_servers_greedy_replies_mostly(tiny_server, tmp_path):
    """serve.linear_dtype=bfloat16 through `webdancer serve`'s own start path: it says so in its log, and bf16 rounding
    leaves most greedy replies as the fp32 server gives them (a broken cast would change all of them)."""
    from dataclasses import replace

    from webdancer_models.serve import start_server

    if not bf16_supported():
        pytest.skip("this CPU has no native bf16 matmuls")
    fp32_cfg, fp32_server = tiny_server
    cfg = replace(fp32_cfg, linear_dtype="bfloat16", port=free_port())
    prompts = [p for p in PROMPTS if p is not LONG]
    with start_server(cfg, tmp_path) as server:
        async with ChatClient(chat_config(cfg, server, temperature=0.0, max_tokens=16)) as client:
            fast = await asyncio.gather(*(client.chat([Message("user", p)]) for p in prompts))
        log = (tmp_path / f"batched-{cfg.port}.log").read_text()
    async with ChatClient(chat_config(fp32_cfg, fp32_server, temperature=0.0, max_tokens=16)) as client:
        exact = await asyncio.gather(*(client.chat([Message("user", p)]) for p in prompts))
    assert "bfloat16 linear layers" in log
    assert all(r.text.strip() for r in fast)
    assert sum(a.text == b.text for a, b in zip(fast, exact)) >= len(prompts) // 2, [(a.text, b.text) for a, b in zip(fast, exact)]


def paged_batch(lengths: list[int], slots_total: int = 4096, seed: int = 0) -> tuple[torch.Tensor, list[list[int]]]:
    """A shuffled page store and each request's slots in it (as the engine's read index lists them)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(slots_total, generator=gen).tolist()
    slots, at = [], 0
    for n in lengths:
        slots.append(order[at: at + n])
        at += n
    return order[at:], slots


def step_inputs(slots: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    read = torch.tensor([s for request in slots for s in request])
    cu = torch.tensor([0] + [len(r) for r in slots]).cumsum(0).to(torch.int32)
    return read, cu


def test_decode_kv_appends_while_the_batch_only_grows_and_regathers_when_it_changes():
    """Against the truth (each request's keys gathered from the pages): exact at every step, and the pages are only
    read again when a request leaves, a request's history changes, or the buffers are over budget."""
    from webdancer_models.decode_kv import DecodeKV

    heads, dim = 3, 4
    k_cache, v_cache = torch.randn(4096, heads, dim), torch.randn(4096, heads, dim)
    free, slots = paged_batch([5, 130, 17])
    kv = DecodeKV(budget_tokens=10_000)

    def step(slots: list[list[int]]) -> None:
        new = [r[-1] for r in slots]  # each request's newest key, written to the pages before attention
        new_k, new_v = torch.randn(len(slots), heads, dim), torch.randn(len(slots), heads, dim)
        k_cache[new], v_cache[new] = new_k, new_v
        read, cu = step_inputs(slots)
        layout = kv.step_layout(read, cu)
        assert kv.step_layout(read, cu) is layout  # every layer of the step shares it
        for layer in range(2):
            keys, values = kv.keys_values(layer, k_cache, v_cache, new_k, new_v, layout)
            for b, request in enumerate(slots):
                n = len(request)
                assert torch.equal(keys[b, :, :n], k_cache[request].transpose(0, 1)) and torch.equal(values[b, :, :n], v_cache[request].transpose(0, 1))
                assert bool((layout.mask[b, 0, 0, :n] == 0).all()) and bool(torch.isinf(layout.mask[b, 0, 0, n:]).all())

    step(slots)
    for _ in range(260):  # past the first capacity (130 + 128, rounded up to 384): one more gather on the way
        slots = [r + [free.pop()] for r in slots]
        step(slots)
    assert (kv.appends, kv.regathers) == (259, 2)
    slots = [r + [free.pop()] for r in slots[1:]]  # the first request finished
    step(slots)
    slots[0][3] = free.pop()  # a slot of one request's history is not what it was
    slots = [r + [free.pop()] for r in slots]
    step(slots)
    assert kv.regathers == 4
    kv.invalidate()  # a step with a prefill chunk ran: the buffers miss its tokens
    slots = [r + [free.pop()] for r in slots]
    step(slots)
    assert kv.regathers == 5

    small = DecodeKV(budget_tokens=100)  # 2 requests x (>= 128 capacity) is over it: gathered every step, nothing kept
    kv = small
    _, slots = paged_batch([5, 20], seed=1)
    for _ in range(3):
        step(slots)
        slots = [r + [free.pop()] for r in slots]
    assert (small.appends, small.regathers, small.buffers) == (0, 3, {})


def test_batched_decode_attention_is_per_request_sdpa():
    from webdancer_models.decode_kv import attend

    torch.manual_seed(0)
    lengths, kv_heads, group, dim = [7, 1, 30], 3, 3, 16
    longest = max(lengths)
    keys, values = torch.randn(len(lengths), kv_heads, longest, dim), torch.randn(len(lengths), kv_heads, longest, dim)
    query = torch.randn(1, kv_heads * group, len(lengths), dim)
    mask = torch.zeros(len(lengths), 1, 1, longest)
    for b, n in enumerate(lengths):
        mask[b, ..., n:] = float("-inf")
        keys[b, :, n:] = 1e4  # garbage past a request's end must not leak in
    got = attend(query, keys, values, mask, dim ** -0.5)
    assert got.shape == (1, len(lengths), kv_heads * group, dim)
    for b, n in enumerate(lengths):
        want = torch.nn.functional.scaled_dot_product_attention(query[:, :, b:b + 1], keys[b:b + 1, :, :n], values[b:b + 1, :, :n], enable_gqa=True)
        assert torch.allclose(got[0, b], want[0, :, 0], atol=1e-5)


def test_the_engine_appends_decode_steps_to_the_kept_keys(tiny_model):
    """In the real engine (in this process): requests joining and leaving re-gather, the steps between only append,
    and the greedy replies are still generate's."""
    from pathlib import Path

    from transformers import AutoModelForCausalLM
    from webdancer_models.batched_server import BatchedGenerator

    generator = BatchedGenerator.from_dir(Path(tiny_model), max_batch_tokens=256, num_blocks=64, block_size=64, seed=0)
    try:
        prompts = [[{"role": "user", "content": p}] for p in PROMPTS[:2] + PROMPTS[3:4]]
        ids = [generator.prompt_ids(m, {}) for m in prompts]

        async def run() -> list[tuple[str, list[int], str]]:
            return await asyncio.gather(*(generator.generate(i, Sampling(20, 0.0, 1.0)) for i in ids))

        replies = asyncio.run(run())
        kept = generator.decode_kv()
        assert kept is not None and kept.appends > 3 * kept.regathers, (kept.appends, kept.regathers)
        assert generator.model.webdancer_lean_llama.steps >= kept.appends + kept.regathers  # every step ran the lean loop
        assert kept.buffers  # a pause shorter than RELEASE_AFTER_IDLE_S keeps them
        deadline = time.monotonic() + 10  # idle longer: the engine frees the kept keys on its own thread
        while (kept.buffers or not kept.releases) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not kept.buffers and kept.releases >= 1
        again = asyncio.run(run())  # and keeps them again for the next batch
        assert [r[1] for r in again] == [r[1] for r in replies]
    finally:
        generator.stop()
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    for prompt, (_, tokens, _) in zip(ids, replies):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)
        assert tokens == out[0, len(prompt):].tolist()


def test_only_a_plain_llama_on_the_cpu_takes_the_lean_loop():
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    from webdancer_models.lean_llama import why_not_lean

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    assert why_not_lean(LlamaForCausalLM(LlamaConfig(**small))) is None
    assert "biases" in why_not_lean(LlamaForCausalLM(LlamaConfig(**small, attention_bias=True)))
    assert "activation" in why_not_lean(LlamaForCausalLM(LlamaConfig(**small, hidden_act="gelu")))
    assert "not LlamaForCausalLM" in why_not_lean(Qwen2ForCausalLM(Qwen2Config(**small)))
    assert "float32 on the CPU" in why_not_lean(LlamaForCausalLM(LlamaConfig(**small)).to(torch.bfloat16))


@pytest.mark.parametrize("onednn", [True, False])
def test_stacked_projections_give_the_separate_layers_outputs_bitwise(monkeypatch, onednn):
    from webdancer_models import cpu_linear, lean_llama

    monkeypatch.setattr(cpu_linear, "onednn", lambda: onednn and torch.backends.mkldnn.is_available())
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, n, bias=False) for n in (64, 16, 16)]
    fused = lean_llama._fuse(layers, "float32")
    for rows in (1, 2, 8, 37):
        x = torch.randn(1, rows, 64)
        with torch.no_grad():
            want = torch.cat([torch.nn.functional.linear(x, layer.weight) for layer in layers], dim=-1)
            got = fused(x)
        if rows <= 2 or not onednn:
            assert torch.equal(got, want)
        else:  # oneDNN's packed kernel: the same sums in another order
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # with a packed stacked copy, the layers get no packed copy of their own
    assert all(getattr(layer, "webdancer_fused", False) == onednn for layer in layers)
    with pytest.raises(ValueError, match="a bias goes with one weight"):
        cpu_linear.CpuLinear([layer.weight for layer in layers], torch.zeros(96))
    single = torch.nn.Linear(64, 16)  # one layer with its bias, as pack_linear_weights runs it: torch's linear at 1-2 rows
    with torch.no_grad():
        x = torch.randn(1, 2, 64)
        assert torch.equal(cpu_linear.CpuLinear([single.weight], single.bias)(x), single(x))


def test_bf16_counts_as_native_only_with_avx512_bf16_or_amx():
    """oneDNN's own bf16 check says yes on any AVX512 CPU, where bf16 is emulated and slower than fp32 (SFT and the
    RL update would turn autocast on there): ours follows the CPU's flags."""
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = set(cpuinfo.read_text().split())
    assert bf16_supported() == bool({"avx512_bf16", "amx_bf16"} & flags)


RELEASE_CHECK = """
import os, threading, torch
from webdancer_models.openmp import loaded_libgomp, release_thread_pool
torch.set_num_threads(2)
x = torch.randn(1500, 1500)
want = x @ x  # the main thread runs parallel regions: libgomp gives it a pool of one worker
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
print("libgomp", loaded_libgomp() is not None)
print("released", release_thread_pool())
print("threads freed", before - threads())
got = {}
worker = threading.Thread(target=lambda: got.update(y=x @ x))  # another thread's regions, as the engine's
worker.start(); worker.join()
print("same on another thread", torch.equal(got["y"], want))
print("same here again", torch.equal(x @ x, want))  # and this thread makes a new pool when it needs one
"""


def test_the_loading_threads_openmp_pool_is_freed_for_the_engines_thread():
    """libgomp puts a pool's workers to sleep after every parallel region while the process holds more of its threads
    than CPUs, so the engine's thread paid a wake-up per region while the loader's pool lived: releasing it ends that
    worker thread, and torch computes the same on any thread afterwards."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if (os.cpu_count() or 1) < 2 or not Path("/proc/self/task").is_dir():
        pytest.skip("needs two CPUs and /proc to count threads")
    plugins = str(Path(__file__).resolve().parent.parent / "plugins")
    out = subprocess.run([sys.executable, "-c", RELEASE_CHECK], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": plugins, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.rsplit(" ", 1) for line in out.stdout.splitlines())
    if lines["libgomp"] != "True":
        pytest.skip("this torch does not run on libgomp")
    assert lines == {"libgomp": "True", "released": "True", "threads freed": "1", "same on another thread": "True", "same here again": "True"}


def test_one_row_inputs_go_to_the_kernel_that_times_faster(monkeypatch):
    """torch's GEMV is the faster kernel for one row on some CPUs and half the speed of oneDNN's packed one on others:
    the choice is timed on the layers themselves, applies to every fp32 layer, and either way computes the same map."""
    from webdancer_models import cpu_linear

    if not cpu_linear.onednn():
        pytest.skip("this torch has no oneDNN packed kernel to choose")
    torch.manual_seed(0)
    weights = [torch.randn(n, 64) for n in (64, 96)]
    fp32 = [cpu_linear.CpuLinear([w]) for w in weights]
    bf16 = cpu_linear.CpuLinear([weights[0]], dtype="bfloat16") if cpu_linear.bf16_supported() else None
    x = torch.randn(1, 1, 64)
    assert all(linear.plain_rows == cpu_linear.PLAIN_GEMV_ROWS for linear in fp32)  # until timed: GEMV, bitwise torch's own
    assert torch.equal(fp32[0](x), torch.nn.functional.linear(x, weights[0]))
    stock_linear = torch.nn.functional.linear
    now = [0.0]  # the choice's clock: only what the fake CPU below spends moves it, not this machine's load

    def slow_gemv(*args, **kwargs):  # a CPU where torch's GEMV takes 5 ms a call and the packed kernel no time
        now[0] += 0.005
        return stock_linear(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "linear", slow_gemv)
    kernel, gemv_ms, packed_ms = cpu_linear.choose_small_input_kernel(fp32 + ([bf16] if bf16 else []), trials=3, clock=lambda: now[0])
    monkeypatch.setattr(torch.nn.functional, "linear", stock_linear)
    assert kernel == "oneDNN's packed kernel" and gemv_ms > packed_ms
    assert all(linear.plain_rows == 0 for linear in fp32)
    if bf16 is not None:
        assert bf16.plain_rows == cpu_linear.PLAIN_GEMV_ROWS  # bf16 layers always run packed: nothing to choose
    for linear, weight in zip(fp32, weights):
        torch.testing.assert_close(linear(x), stock_linear(x, weight), rtol=1e-5, atol=1e-6)
    assert cpu_linear.choose_small_input_kernel([bf16] if bf16 else []) is None
