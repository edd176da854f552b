"""The TRL engine's rollout turns from TRL's own colocated vLLM (`rl.trl_rollouts=vllm`).

TRL builds the engine (`use_vllm`, `vllm_mode=colocate`) and syncs the policy's weights into it before each
generated batch; this generates each turn of our multi-turn rollouts with it, with TRL's sampling settings, and
returns the sampled tokens' log-probs, which TRL's importance-sampling correction compares with the policy's. On
the CPU the sync and the dtype need third_party_patches/trl (applied by scripts/setup_vllm.sh).

`LLM.generate` runs a list of requests to their ends: the rollouts take their turns together (`lockstep`); vLLM
still runs each request to its own end and keeps earlier turns' KV blocks for the next turn's prompt.
"""

from __future__ import annotations

from typing import Any

from webdancer_rl.rollout import Generate, Sampled


def vllm_turns(trainer: Any, eos: list[int]) -> Generate:
    """A `Generate` over `trainer.vllm_generation.llm`, sampling as TRL's own vLLM generation does."""
    from vllm import SamplingParams

    vllm = trainer.vllm_generation
    sampling = {"temperature": vllm.temperature, "top_p": vllm.top_p, "top_k": vllm.top_k, "min_p": vllm.min_p or 0.0,
                "repetition_penalty": vllm.repetition_penalty, **vllm.generation_kwargs}

    async def generate(sequences: list[list[int]], budgets: list[int]) -> list[list[int]]:
        params = [SamplingParams(**sampling, max_tokens=budget, stop_token_ids=eos, logprobs=0) for budget in budgets]
        outputs = vllm.llm.generate([{"prompt_token_ids": ids} for ids in sequences], sampling_params=params, use_tqdm=False)
        return [sampled(output.outputs[0]) for output in outputs]

    return generate


def sampled(completion: Any) -> Sampled:
    """A vLLM CompletionOutput's tokens with the log-prob of each (logprobs=0: the sampled token's only)."""
    logprobs = [entry[token].logprob for token, entry in zip(completion.token_ids, completion.logprobs)]
    return Sampled(list(completion.token_ids), logprobs)
