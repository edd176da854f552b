"""The embedded tiny model: loaded from its package, exported, templated, served on CPU, driven by the agent."""

import json
import sys
from pathlib import Path

import pytest
from conftest import free_port
from toolkit import served_agent_episode
from webdancer_models.config import ServeConfig
from webdancer_models.export import export_model
from webdancer_models.serve import (
    ServerProcess,
    port_in_use,
    served_model_name,
    server_command,
    sglang_command,
    start_server,
    transformers_command,
)

from webdancer.config import ModelConfig
from webdancer.errors import WebdancerError
from webdancer.records import ToolCall
from webdancer.wire import render_assistant, render_tool_response


def test_export_writes_a_plain_hf_folder(tiny_model):
    from transformers import AutoConfig

    names = {p.name for p in tiny_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "webdancer_model.json"} <= names
    assert AutoConfig.from_pretrained(tiny_model).model_type == "llama"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None  # the chat template's end of turn
    assert export_model("smollm2-135m", tiny_model) == tiny_model  # resume: already there, untouched


def test_exported_folder_loads_as_a_plain_float32_model(tiny_model, tmp_path):
    """No GGUF `quantization_config` is left behind: Trainer would refuse the model, servers would look for a GGUF."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from webdancer_models.export import clean_model_folder

    config = json.loads((tiny_model / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    Trainer(model=model, args=TrainingArguments(str(tmp_path / "t"), use_cpu=True, report_to=[]))  # refuses quantized models

    # A folder exported before the fix is repaired by exporting it again (the weights are untouched).
    old = tmp_path / "old"
    shutil.copytree(tiny_model, old)
    stale = {**config, "quantization_config": {"quant_method": "gguf", "dequantize": False}}
    (old / "config.json").write_text(json.dumps(stale))
    weights = (old / "model.safetensors").stat().st_mtime_ns
    assert export_model("smollm2-135m", old) == old
    assert "quantization_config" not in json.loads((old / "config.json").read_text())
    assert (old / "model.safetensors").stat().st_mtime_ns == weights
    assert clean_model_folder(old) is False  # nothing left to clean
    # A real quantization (not GGUF's leftover) is never touched.
    real = {**config, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    (old / "config.json").write_text(json.dumps(real))
    assert clean_model_folder(old) is False and json.loads((old / "config.json").read_text()) == real


def test_export_never_overwrites_other_content(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(WebdancerError, match="not empty"):
        export_model("smollm2-135m", tmp_path)
    with pytest.raises(WebdancerError, match="unknown model 'gpt-9'"):
        export_model("gpt-9", tmp_path / "x")


def test_chat_template_renders_openai_tool_messages_as_the_wire_format(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    call = ToolCall("search", {"query": ["who invented Python"]})
    wire = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": render_assistant("look it up", tool_call=call)},
        {"role": "user", "content": render_tool_response("1. [Python](http://x)")},
    ]
    openai_style = [
        wire[0],
        wire[1],
        {"role": "assistant", "content": "<think>\nlook it up\n</think>\n",
         "tool_calls": [{"type": "function", "function": {"name": "search", "arguments": {"query": ["who invented Python"]}}}]},
        {"role": "tool", "content": "1. [Python](http://x)"},
    ]
    a = tok.apply_chat_template(wire, tokenize=False, add_generation_prompt=True)
    b = tok.apply_chat_template(openai_style, tokenize=False, add_generation_prompt=True)
    assert a == b
    assert a.endswith("<|im_start|>assistant\n")
    assert '<tool_call>\n{"name": "search", "arguments": {"query": ["who invented Python"]}}\n</tool_call><|im_end|>' in a
    # Arguments as a JSON string (what OpenAI clients send) render the same.
    openai_style[2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"query": ["who invented Python"]})
    assert tok.apply_chat_template(openai_style, tokenize=False, add_generation_prompt=True) == a


def test_command_builders():
    cfg = ServeConfig(backend="sglang", model_path="/m/WebDancer-32B", port=8004, tensor_parallel=4, served_model_name="wd",
                      context_length=32768, mem_fraction_static=0.8, host="0.0.0.0")
    assert sglang_command(cfg) == [  # from the serving environment, which has SGLang (the core one does not)
        str(Path(".venvs/serve").absolute() / "bin" / "python"), "-m", "sglang.launch_server", "--model-path", "/m/WebDancer-32B", "--host", "0.0.0.0", "--port", "8004",
        "--tp", "4", "--context-length", "32768", "--mem-fraction-static", "0.8", "--served-model-name", "wd",
    ]
    t = ServeConfig(backend="transformers", model_path="/m/tiny", port=9000)
    assert transformers_command(t)[1:6] == ["-m", "transformers.cli.transformers", "serve", "/m/tiny", "--host"]
    assert "--device" in transformers_command(t) and served_model_name(t) == "/m/tiny"
    b = ServeConfig(model_path="/m/tiny", port=9001, kv_cache_tokens=4096)  # the default backend
    assert server_command(b)[1:4] == ["-m", "webdancer_models.batched_server", "/m/tiny"] and served_model_name(b) == "/m/tiny"
    assert server_command(b)[server_command(b).index("--kv-cache-tokens") + 1] == "4096"
    with pytest.raises(WebdancerError, match="'tgi' is not one of batched, transformers, vllm, sglang, external"):
        server_command(ServeConfig(backend="tgi"))
    assert server_command(b)[server_command(b).index("--linear-dtype") + 1] == "float32"
    fast = ServeConfig(model_path="/m/tiny", linear_dtype="bfloat16")
    assert server_command(fast)[server_command(fast).index("--linear-dtype") + 1] == "bfloat16"
    with pytest.raises(WebdancerError, match="serve.linear_dtype 'fp16' is not one of float32, bfloat16"):
        server_command(ServeConfig(linear_dtype="fp16"))
    with pytest.raises(WebdancerError, match="serve.linear_dtype=bfloat16 is for serve.backend=batched, not transformers"):
        server_command(ServeConfig(backend="transformers", linear_dtype="bfloat16"))


def test_server_that_dies_shows_its_log(tmp_path):
    cmd = [sys.executable, "-c", "print('loading weights'); print('CUDA error: no device'); raise SystemExit(3)"]
    with pytest.raises(WebdancerError) as err:
        ServerProcess(cmd, f"http://127.0.0.1:{free_port()}/v1", tmp_path / "s.log").start(30)
    assert "exited with code 3" in str(err.value) and "CUDA error: no device" in str(err.value)


def test_a_start_interrupted_before_the_server_is_ready_stops_the_server(tmp_path):
    """`webdancer serve` given SIGTERM while it still waits for readiness (its handler raises KeyboardInterrupt there):
    the server child is stopped too, not left running after the wrapper has gone."""
    import signal

    import psutil

    cmd = [sys.executable, "-c", "import time; time.sleep(120)"]
    server = ServerProcess(cmd, f"http://127.0.0.1:{free_port()}/v1", tmp_path / "s.log")

    def interrupt(*_):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start(30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert server.proc.returncode is not None and not psutil.pid_exists(server.proc.pid)


def test_port_in_use_and_missing_model_are_clear_errors(tiny_server, tmp_path):
    cfg, _ = tiny_server
    assert port_in_use(cfg.host, cfg.port)
    with pytest.raises(WebdancerError, match=f"port {cfg.port} .* already in use"):
        start_server(cfg, tmp_path)
    with pytest.raises(WebdancerError, match="webdancer model export"):
        start_server(ServeConfig(model_path=str(tmp_path / "nothing"), port=free_port()), tmp_path)


async def test_agent_runs_against_the_served_tiny_model(plugins, tiny_server, local_web):
    serve_cfg, server = tiny_server
    await served_agent_episode(server.base_url, served_model_name(serve_cfg), local_web[0])


@pytest.fixture(scope="module")
def transformers_server(tiny_model, tmp_path_factory):
    """`transformers serve` (serve.backend=transformers: one request at a time) with the tiny model."""
    cfg = ServeConfig(backend="transformers", model_path=str(tiny_model), port=free_port(), health_timeout_s=240)
    with start_server(cfg, tmp_path_factory.mktemp("logs")) as server:
        yield cfg, server


async def test_transformers_serve_samples_when_asked_and_is_greedy_at_temperature_0(transformers_server):
    from webdancer.llm import ChatClient
    from webdancer.records import Message

    serve_cfg, server = transformers_server
    prompt = [Message("user", "Write one sentence about a city you like.")]

    async def replies(temperature):
        model = ModelConfig(base_url=server.base_url, model=served_model_name(serve_cfg), max_tokens=24, temperature=temperature,
                            top_p=1.0, stop=[])
        async with ChatClient(model) as client:
            return [(await client.chat(prompt)).text for _ in range(3)]

    greedy, sampled = await replies(0.0), await replies(1.0)
    assert len(set(greedy)) == 1  # temperature 0: the same text every time
    assert len(set(sampled)) > 1  # transformers serve decoded greedily at any temperature before
    assert json.loads((Path(serve_cfg.model_path) / "generation_config.json").read_text())["do_sample"] is True


def test_serve_stops_within_seconds_of_sigterm_while_generating(tiny_model, tmp_path):
    """`webdancer serve` given SIGTERM during a long generation: the wrapper and its server child are gone within
    seconds (uvicorn waited for the reply before; the wrapper died without stopping its child)."""
    import asyncio
    import contextlib
    import os
    import signal
    import subprocess
    import time

    import httpx
    import psutil

    port = free_port()
    wrapper = subprocess.Popen([str(Path(sys.executable).with_name("webdancer")), "serve", f"serve.model_path={tiny_model}", f"serve.port={port}",
                                "serve.kv_cache_tokens=4096", f"run.root={tmp_path}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and wrapper.poll() is None:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    tree = [wrapper.pid, *(p.pid for p in psutil.Process(wrapper.pid).children(recursive=True))]

    async def long_request_then_sigterm():
        async with httpx.AsyncClient(timeout=120) as http:
            request = asyncio.ensure_future(http.post(f"{base}/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "Tell a very long story about ships."}], "max_tokens": 1500, "temperature": 0.0}))
            while (await http.get(f"{base}/health")).json()["requests_in_flight"] == 0:
                await asyncio.sleep(0.2)
            wrapper.send_signal(signal.SIGTERM)
            started = time.monotonic()
            await asyncio.to_thread(wrapper.wait, 30)
            took = time.monotonic() - started
            with contextlib.suppress(httpx.HTTPError):  # the reply is cut off: an error or an error status
                await request
            return took

    took = asyncio.run(long_request_then_sigterm())
    alive = [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert took < 10 and not alive, (took, alive)
