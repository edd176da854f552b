"""One-machine RL rollouts on the batched engine: rollouts that go on their own against rollouts in lock-step.

The TRL engine's rollout phase alone (no update), on the quickstart's SFT model (else the base model) against the
offline web: 2 questions x 4 rollouts, 3 turns of up to 256 tokens, sampled at the config's temperature, each turn
from the continuous batching engine on a copy of the policy (rl.trl_rollouts=batched). Two ways to take turns,
run alternately ROUNDS times each (a new engine and seed per round, the same for both ways in a round):
`lockstep` (every turn of the batch ends before any tool runs, and the engine idles while the tools run) and
`alone` (what the engine gets now: a rollout asks for its next turn when its tool returns). Once with the offline
web's own tool latency (milliseconds), once with each tool call delayed by TOOL_LATENCY_S x U(0.5, 1.5) (a hosted
search or reader API takes seconds). Figure: model tokens per second of the rollout phase's wall time; ratio
alone / lockstep, with the spread over rounds. Needs what scripts/quickstart.sh leaves behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time

from _common import QUICKSTART_CONFIG, ROOT, Row, emit, offline_web, rl_model_and_questions

ROUNDS = int(os.environ.get("RL_ROLLOUT_ROUNDS", "3"))
TOOL_LATENCY_S = float(os.environ.get("RL_TOOL_LATENCY_S", "2"))
QUESTIONS, ROLLOUTS = 2, 4


def with_latency(toolbox, seconds: float, seed: int) -> None:
    """Every tool call of `toolbox` takes `seconds` x U(0.5, 1.5) more, as a call to a hosted API would."""
    run, draw = toolbox.run, random.Random(seed)

    async def slow(call):
        await asyncio.sleep(seconds * draw.uniform(0.5, 1.5))
        return await run(call)

    toolbox.run = slow


async def rollout_phase(policy, tokenizer, eos, prompts, cfg, seed: int, lockstep: bool, latency_s: float) -> tuple[float, int, float]:
    """Wall seconds of one batch of rollouts (engine start and stop included), model tokens, seconds generating."""
    from webdancer_rl.batched_turns import EngineSettings, batched_turns
    from webdancer_rl.rollout import ChatTokens, RolloutLimits, RolloutTimes, run_rollouts

    from webdancer.tools import ToolBox

    limits = RolloutLimits.from_config(cfg.rl)
    settings = EngineSettings.of(cfg, limits, seed)  # as the TRL engine makes it
    times = RolloutTimes()
    async with ToolBox.for_run(cfg) as toolbox:
        if latency_s:
            with_latency(toolbox, latency_s, seed)
        chat = ChatTokens(tokenizer)
        started = time.perf_counter()
        with batched_turns(policy, tokenizer, eos, settings) as generate:
            rollouts = await run_rollouts([chat.prompt(p) for p in prompts], generate, toolbox, chat, limits, times, lockstep)
        wall = time.perf_counter() - started
    return wall, sum(r.model_tokens for r in rollouts), times.generate_s


def main() -> None:
    model, questions = rl_model_and_questions()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from webdancer_models.batched_server import end_of_turn_ids
    from webdancer_rl.prepare import offered_tools, rl_row

    from webdancer.config_loader import load_config
    from webdancer.datasources import read_qa

    os.chdir(ROOT)  # the config's paths (the web's index) are relative to the project
    cfg = load_config(QUICKSTART_CONFIG, ["rl.max_turns=3", "rl.max_turn_tokens=256"])
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).train()
    tokenizer = AutoTokenizer.from_pretrained(model)
    eos = end_of_turn_ids(policy, tokenizer)
    schemas = [schema for _, schema in offered_tools(cfg)]
    prompts = [rl_row(item, i, schemas, cfg, "train")["prompt"] for i, item in enumerate(read_qa(questions)[:QUESTIONS]) for _ in range(ROLLOUTS)]
    results: dict[tuple[float, bool], list[tuple[float, int, float]]] = {}
    with offline_web():
        for latency in (0.0, TOOL_LATENCY_S):
            for round_ in range(ROUNDS):
                for lockstep in ((True, False) if round_ % 2 == 0 else (False, True)):
                    run = asyncio.run(rollout_phase(policy, tokenizer, eos, prompts, cfg, 1000 + round_, lockstep, latency))
                    results.setdefault((latency, lockstep), []).append(run)
                    wall, tokens, gen = run
                    print(f"tool latency {latency:.1f} s, round {round_} {'lockstep' if lockstep else 'alone':<8} {wall:6.1f} s  {tokens:5d} tokens"
                          f"  {tokens / wall:5.1f} tok/s  (generating {gen:5.1f} s)", flush=True)
    rows = []
    for latency in (0.0, TOOL_LATENCY_S):
        rate = {lockstep: [tokens / wall for wall, tokens, _ in results[(latency, lockstep)]] for lockstep in (True, False)}
        ratios = [a / b for a, b in zip(rate[False], rate[True])]
        alone, together = statistics.fmean(rate[False]), statistics.fmean(rate[True])
        where = "offline web" if not latency else f"tools +{latency:g} s"
        rows += [
            Row("rl_rollouts", f"{where}: alone, tok/s of wall ({min(rate[False]):.1f}-{max(rate[False]):.1f})", alone, "tok/s", alone / together,
                f"alone / lockstep; per round {min(ratios):.2f}-{max(ratios):.2f}; {ROUNDS} rounds, {QUESTIONS} q x {ROLLOUTS} rollouts",
                "report" if not latency else "> 1", bool(latency == 0 or alone > together)),
            Row("rl_rollouts", f"{where}: lockstep ({min(rate[True]):.1f}-{max(rate[True]):.1f})", together, "tok/s", 1.0, "the baseline", "report", True),
        ]
    emit(rows)


if __name__ == "__main__":
    main()
