"""Context policies on long-horizon questions (issue 41): what each policy does where a ReAct context overflows.

Questions: CrawlQA's `chain` kind over the offline web's FOLDOC (6 entries read in turn, each naming the next).
Policies: each of `agent.context` (blank_old, keep_last_k, summarize), one after another, same questions, same
budget (`agent.max_context_tokens`, BENCH_CONTEXT_TOKENS, default 6000: the configs' own for SmolLM2's 8,192-token
window; the expert's 8-turn chain trajectories pass it). Rollout policies: the expert demonstrator (the ceiling: it
reads every page of the chain) and the quickstart's fine-tuned tiny model (runs/quickstart/sft, else the base
model), served by our batched server. The tiny model summarizes its own rollouts for `summarize` (ReSum without a
separate summarizer); the expert, which is no model, gets an extractive summarizer on loopback speaking the OpenAI
protocol (the earlier summary and the agent's own turns, with the pages they read: a stand-in for a strong
summarizer such as ReSum's, which cannot run here; the tiny model's summaries lose the pages read, and the expert
then starts over). Per policy and rollout policy: Pass@1 (the configured rewards' correctness), rollouts ended by
`context_overflow`, peak and mean prompt tokens per turn (counted as the policies count them), model tokens per
answered question, wall time. Ratios against blank_old in the same run.

Targets (issue 41): keep_last_k and summarize end no rollout by overflow where blank_old ends more than 10 %, at
equal or better Pass@1, and cut mean prompt tokens per turn by at least 30 %.

Needs the quickstart's outputs (scripts/quickstart.sh, or `webdancer pipeline configs/quickstart.yaml` up to `sft`).
Run it alone: it measures the CPU (~25 min here). BENCH_CHAIN_QUESTIONS (default 12) sets the questions,
BENCH_CHAIN_HOPS (default 6) their length, BENCH_ROLLOUT_POLICIES (default "expert,model") who answers them,
BENCH_CONTEXT_TOKENS the budget, or several (`8000,16000,32000`: a sweep, Pass@1 and the mean-prompt ratio per budget:
a policy's cut depends on the budget against the task's length, and blank_old blanks nothing where the whole context fits).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_MODEL, QUICKSTART_CONFIG, ROOT, Row, emit, need_quickstart, tuned_or_base_model
from _common import WEB_ROOT as WEB
from tiny_model_serving import free_port

sys.path.insert(0, str(ROOT / "plugins"))

POLICIES = ("blank_old", "keep_last_k", "summarize")


def extractive_summary(request: dict) -> str:
    """The summarizer prompt's earlier summary and agent turns (their thoughts and tool calls, so the pages read)."""
    text = request["messages"][0]["content"]
    previous = text.split("Summary of the research before this part:\n", 1)[-1].split("\n\nThis part of the research", 1)[0].strip()
    evidence = text.split("tool results it got):\n", 1)[-1].split("\n\nWrite the new summary", 1)[0]
    # The turns' tool calls without their thoughts (the summarize policy keeps what follows a summary's last </think>).
    turns = [re.sub(r"<think>.*?</think>", "", t, flags=re.S).strip() for t in re.findall(r"\[agent\]\n(.*?)(?=\n\n\[|\Z)", evidence, re.S)]
    return "\n".join(([previous] if previous and previous != "(none yet)" else []) + turns)



async def chain_questions(base_url: str, folder: Path, count: int, hops: int) -> list:
    from webdancer_synth.crawlqa import CrawlQA, CrawlQAConfig

    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer.synth import run_synthesizer

    out = folder / "chain.jsonl"
    cfg = CrawlQAConfig(root_url=f"{base_url}/foldoc/python.html", crawl_store=str(folder / "crawl.jsonl"), max_pages=1500,
                        num_items=count, kinds=["chain"], chain_hops=hops, seed=41)
    await run_synthesizer(CrawlQA(cfg), out)
    return list(read_records(out, QAItem))


async def run_policy(cfg, rollout_policy: str, items: list) -> dict:
    """Every question once with `rollout_policy` under cfg's context policy; the measures of the docstring."""
    from webdancer.agent import configured_agent, run_many
    from webdancer.rewards import RewardSet, reward_input

    prompts: list[int] = []
    started = time.perf_counter()
    async with configured_agent(cfg, policy=rollout_policy) as agent:
        act, count = agent.policy.act, agent.policy.count_tokens

        async def recording(messages, task=None):
            prompts.append(sum(count(m.content) for m in messages))  # the prompt this turn, as the context policy counted it
            return await act(messages, task)

        agent.policy.act = recording
        trajs = await run_many(agent, [(item, 0) for item in items], cfg.agent.concurrency)
    wall = time.perf_counter() - started
    rewards = RewardSet.from_config(cfg)
    try:
        correct = [(await rewards.score(reward_input(t))).correct for t in trajs]
    finally:
        await rewards.aclose()
    answered = [t for t in trajs if t.termination == "answered"]
    ends: dict[str, int] = {}
    for t in trajs:
        ends[t.termination] = ends.get(t.termination, 0) + 1
    return {"pass_at_1": statistics.fmean(correct), "overflow": ends.get("context_overflow", 0) / len(trajs), "ends": ends,
            "peak_prompt": max(prompts), "mean_prompt": statistics.fmean(prompts),
            "model_tokens_per_answered": sum(t.usage.completion_tokens for t in trajs) / len(answered) if answered else float("nan"),
            "segments": statistics.fmean(len(t.segments) + 1 for t in trajs), "wall_s": wall}


def main() -> None:
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import served_model_name, start_server
    from webdancer_web.server import LocalWebServer

    from webdancer.config_loader import load_config

    need_quickstart(BASE_MODEL / "config.json", WEB / "manifest.json")
    model_dir = tuned_or_base_model()
    from webdancer.testing.fake_openai import FakeOpenAIServer

    budgets = [int(b) for b in os.environ.get("BENCH_CONTEXT_TOKENS", "6000").split(",")]
    count = int(os.environ.get("BENCH_CHAIN_QUESTIONS", "12"))
    hops = int(os.environ.get("BENCH_CHAIN_HOPS", "6"))
    who = [p for p in os.environ.get("BENCH_ROLLOUT_POLICIES", "expert,model").split(",") if p in ("expert", "model")]
    port = free_port()
    results: dict[tuple[str, int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp, LocalWebServer(WEB, "127.0.0.1", port):
        items = asyncio.run(chain_questions(f"http://127.0.0.1:{port}", Path(tmp), count, hops))
        print(f"{len(items)} chain questions ({items[0].hops if items else 0} hops each)", flush=True)
        serve = ServeConfig(backend="batched", model_path=str(model_dir), port=free_port(), health_timeout_s=300)
        with start_server(serve, Path(tmp) / "logs") as server, FakeOpenAIServer(default=extractive_summary) as extractive:
            endpoint = {"base_url": server.base_url, "model": served_model_name(serve)}
            for rollout_policy in who:
                summarizer = {"base_url": extractive.base_url, "model": "extractive"} if rollout_policy == "expert" else endpoint
                for budget in budgets:
                    for context in POLICIES:
                        overrides = [f"web.root={WEB}", f"web.port={port}", "tools.visit.cache_dir=null", f"agent.max_turns={hops + 6}",
                                     f"agent.max_context_tokens={budget}", f"agent.context={context}", f"model.base_url={endpoint['base_url']}",
                                     f"model.model={endpoint['model']}", "model.max_tokens=256", "tracking.backend=none",
                                     f"context.summarize.model={json.dumps(summarizer)}", "context.summarize.max_tokens=200"]
                        cfg = load_config(QUICKSTART_CONFIG, overrides)
                        name = "expert" if rollout_policy == "expert" else cfg.agent.policy
                        results[(rollout_policy, budget, context)] = measured = asyncio.run(run_policy(cfg, name, items))
                        print(rollout_policy, budget, context, json.dumps(measured), flush=True)
    # The README's table shows each benchmark name's newest run: a variant (chain length, budget sweep) is a name of its own.
    length = "" if hops == 6 else f", {hops} hops"
    labels = [(p, label) for p, label in (("expert", "expert"), ("model", f"tiny {model_dir.name}")) if p in who]
    if len(budgets) == 1:
        emit(budget_rows(results, labels, budgets[0], f"context_policies{length}"))
    else:
        emit(sweep_rows(results, labels, budgets, f"context_budgets, {hops} hops"))


def sweep_rows(results: dict, labels: list[tuple[str, str]], budgets: list[int], bench: str) -> list[Row]:
    """Several budgets (BENCH_CONTEXT_TOKENS=a,b,...): per budget and policy, Pass@1 and the mean prompt against blank_old's
    at that budget (where blank_old blanks nothing, against the whole ReAct context)."""
    rows = []
    for rollout_policy, label in labels:
        for budget in budgets:
            base = results[(rollout_policy, budget, "blank_old")]
            for context in POLICIES[1:]:
                r = results[(rollout_policy, budget, context)]
                who = f"{label}, budget {budget}, {context}"
                ratio = r["mean_prompt"] / base["mean_prompt"]
                rows += [Row(bench, f"Pass@1, {who}", r["pass_at_1"], "", r["pass_at_1"] - base["pass_at_1"], "minus blank_old's",
                             ">= blank_old", r["pass_at_1"] >= base["pass_at_1"]),
                         Row(bench, f"mean prompt tokens/turn, {who}", r["mean_prompt"], "tokens", ratio,
                             f"of blank_old's ({r['segments']:.1f} segments)", "<= 0.7", ratio <= 0.7)]
    return rows


def budget_rows(results: dict, labels: list[tuple[str, str]], budget: int, bench: str) -> list[Row]:
    rows = []
    for rollout_policy, label in labels:
        base = results[(rollout_policy, budget, "blank_old")]
        for context in POLICIES:
            r = results[(rollout_policy, budget, context)]
            mean_ratio = r["mean_prompt"] / base["mean_prompt"]
            who = f"{label}, {context}"
            rows += [
                Row(bench, f"Pass@1, {who}", r["pass_at_1"], "", r["pass_at_1"] - base["pass_at_1"], "minus blank_old's",
                    ">= blank_old" if context != "blank_old" else "report", context == "blank_old" or r["pass_at_1"] >= base["pass_at_1"]),
                Row(bench, f"context_overflow, {who}", r["overflow"] * 100, "%", base["overflow"] * 100, "blank_old's %",
                    "0 where blank_old > 10 %" if context != "blank_old" else "report",
                    context == "blank_old" or base["overflow"] <= 0.10 or r["overflow"] == 0),
                Row(bench, f"mean prompt tokens/turn, {who}", r["mean_prompt"], "tokens", mean_ratio, "of blank_old's",
                    "<= 0.7" if context != "blank_old" else "report", context == "blank_old" or mean_ratio <= 0.7),
                Row(bench, f"peak prompt tokens/turn, {who}", r["peak_prompt"], "tokens", r["peak_prompt"] / budget,
                    "of agent.max_context_tokens", "report", True),
                Row(bench, f"model tokens/answered, {who}", r["model_tokens_per_answered"], "tokens",
                    r["segments"], "segments per rollout", "report", True),
                Row(bench, f"wall time, {who}", r["wall_s"], "s", r["wall_s"] / base["wall_s"], "of blank_old's", "report", True),
            ]
    return rows


if __name__ == "__main__":
    main()
