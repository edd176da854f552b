"""The embedded tiny model on the CPU server: generation tokens/s at concurrency 1 and 4, and the
agent's end-to-end time per trajectory (offline web + `transformers serve`).

Ratios: tokens/s at 4 concurrent vs 1 (what batching/overlap buys on 2 cores), and the share of an
agent trajectory's wall time spent inside model calls (the rest is tools and the loop itself).
Needs `webdancer model export smollm2-135m .webdancer/models/smollm2-135m` and a built web
(`webdancer web build`), as scripts/quickstart.sh leaves them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

MODEL = ROOT / ".webdancer/models/smollm2-135m"
WEB = ROOT / ".webdancer/web"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def tokens_per_s(base_url: str, model: str, concurrency: int, rounds: int = 2) -> float:
    from webdancer.config import ModelConfig
    from webdancer.llm import ChatClient
    from webdancer.records import Message

    cfg = ModelConfig(base_url=base_url, model=model, max_tokens=64, temperature=0.7, stop=[], timeout_s=300)
    async with ChatClient(cfg) as client:
        await client.chat([Message("user", "Say hello.")], max_tokens=4)
        start = time.perf_counter()
        results = await asyncio.gather(
            *(client.chat([Message("user", f"Write a few sentences about the history of computing, part {i}.")]) for i in range(concurrency * rounds))
        )
        elapsed = time.perf_counter() - start
    return sum(r.usage.completion_tokens for r in results) / elapsed


async def agent_trajectories(base_url: str, model: str, web_port: int, n: int = 3) -> tuple[float, float]:
    from webdancer.agent import Agent
    from webdancer.config import AgentConfig, ModelConfig
    from webdancer.config_loader import load_config
    from webdancer.policies import build_policy
    from webdancer.tools import ToolBox

    cfg = load_config(None, [f"web.root={WEB}", f"web.port={web_port}", "tools.visit.cache_dir=null"])
    policy = build_policy("openai", {}, ModelConfig(base_url=base_url, model=model, max_tokens=160, temperature=0.0))
    toolbox = ToolBox.from_config(cfg.agent.tools, cfg.tools, 60)
    agent = Agent(policy, toolbox, AgentConfig(max_turns=4, max_context_tokens=6000, current_date="2026-11-24"))
    walls, model_share = [], []
    async with toolbox:
        for q in ["Who invented Python?", "Which company invented the FPGA?", "What is FOLDOC?"][:n]:
            traj = await agent.run(q)
            walls.append(traj.elapsed_s)
            model_share.append(sum(s.model_latency_s for s in traj.steps) / traj.elapsed_s)
    await policy.aclose()
    return statistics.mean(walls), statistics.mean(model_share)


def in_process_tokens_per_s() -> float:
    """The same model with plain `generate` in this process: what the server could at best match."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    ids = tok.apply_chat_template([{"role": "user", "content": "Write about the history of computing."}], add_generation_prompt=True, return_tensors="pt")
    ids = ids if torch.is_tensor(ids) else ids["input_ids"]
    model.generate(ids, max_new_tokens=4)
    start = time.perf_counter()
    model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
    return 64 / (time.perf_counter() - start)


def main() -> None:
    from webdancer_models.serve import served_model_name, start_server
    from webdancer_web.server import LocalWebServer

    from webdancer.config import ServeConfig

    if not (MODEL / "config.json").is_file() or not (WEB / "manifest.json").is_file():
        sys.exit("run scripts/quickstart.sh first (it exports the model and builds the web)")
    cfg = ServeConfig(backend="transformers", model_path=str(MODEL), port=free_port(), health_timeout_s=300)
    rows = []
    with tempfile.TemporaryDirectory() as logs, start_server(cfg, Path(logs)) as server:
        name = served_model_name(cfg)
        t1 = asyncio.run(tokens_per_s(server.base_url, name, 1))
        t4 = asyncio.run(tokens_per_s(server.base_url, name, 4))
        raw = in_process_tokens_per_s()
        rows.append(Row("tiny_model_cpu", "in-process generate (baseline)", raw, "tok/s", 1.0, "baseline", "report", True))
        rows.append(Row("tiny_model_cpu", "server generation @ concurrency 1", t1, "tok/s", t1 / raw, "vs in-process generate", "report", True))
        rows.append(Row("tiny_model_cpu", "server generation @ concurrency 4", t4, "tok/s", t4 / t1, "vs concurrency 1", "report", True))
        # The index's URLs name the port the web was built for; reuse a server already there.
        base_port = int(json.loads((WEB / "manifest.json").read_text())["base_url"].rsplit(":", 1)[1])
        web = contextlib.nullcontext() if _busy(base_port) else LocalWebServer(WEB, "127.0.0.1", base_port)
        with web:
            wall, share = asyncio.run(agent_trajectories(server.base_url, name, base_port))
        rows.append(Row("tiny_model_agent", "seconds per trajectory (4 turns max)", wall, "s", share, "share of time in model calls", "report", True))
    emit(rows)


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
