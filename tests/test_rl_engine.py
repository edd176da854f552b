"""The one-machine RL engine: rollout rules on real tokens, TRL's GRPOTrainer running real steps, bad input."""

import asyncio
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from webdancer.agent import Agent
from webdancer.cli import cli
from webdancer.config import AgentConfig, ModelConfig
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError
from webdancer.plugins import get_plugins
from webdancer.policies import build_policy
from webdancer.records import QAItem, ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import initial_messages, render_assistant

get_plugins().add_commands(cli)
END = "<|im_end|>"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


class ScriptedModel:
    """Stands in for the policy's sampling (the real sampling runs in the GRPO tests below): each
    prompt gets its scripted turns, each turn's tokens ending in the end-of-turn token."""

    def __init__(self, tokenizer, turns, end=END):
        self.tokenizer, self.turns, self.end, self.calls = tokenizer, [list(t) for t in turns], end, []

    async def __call__(self, sequences, budgets):
        self.calls.append((len(sequences), list(budgets)))
        return [self.tokens(self.turns[self.rollout_of(seq)].pop(0), budget) for seq, budget in zip(sequences, budgets)]

    def rollout_of(self, sequence):
        """The rollout whose prompt `sequence` starts with (and which has turns left)."""
        return next(i for i, t in enumerate(self.turns) if t and sequence[: len(self.prompts[i])] == self.prompts[i])

    def tokens(self, text, budget):
        return self.tokenizer(text + self.end)["input_ids"][:budget]


def limits(**kw):
    from webdancer_rl.rollout import RolloutLimits

    return RolloutLimits(**{"max_turns": 4, "max_prompt_length": 4096, "max_response_length": 4096, **kw})


def rollout(plugins, tokenizer, questions, turns, model_class=ScriptedModel, lockstep=True, times=None, tools=("lookup",),
            context=None, context_tokens=10**6, **kw):
    """Scripted rollouts; `context`: a context policy each rollout applies within `context_tokens`."""
    from webdancer_rl.rollout import ChatTokens, RolloutContext, run_rollouts

    chat = ChatTokens(tokenizer)
    toolbox = ToolBox.from_config(list(tools), {}, 5, plugins)
    messages = [[{"role": m.role, "content": m.content} for m in initial_messages(q, toolbox.schemas(), "2026-11-24")] for q in questions]
    model = model_class(tokenizer, turns)
    model.prompts = [chat.prompt(m) for m in messages]
    contexts = [RolloutContext(context, m, context_tokens, chat.count) for m in messages] if context else None
    return asyncio.run(run_rollouts(model.prompts, model, toolbox, chat, limits(**kw), times, lockstep, contexts)), model, messages


def test_rollout_text_is_the_agents_conversation_as_the_chat_template_renders_it(plugins, tokenizer):
    """Same replies through the agent (sampling/eval) and the RL rollout: same observations, same text, to the token."""
    replies = ["<think>x</think><tool_call>{bad json</tool_call>",
               render_assistant("look it up", tool_call=ToolCall("lookup", {"query": ["who won 1964 derby"]})),
               render_assistant("found it", answer="Santa Claus")]
    with FakeOpenAIServer(list(replies)) as srv:
        model = ModelConfig(base_url=srv.base_url, model="fake", backoff_s=0.01, max_retries=1)
        agent = Agent(build_policy("openai", {}, model, plugins), ToolBox.from_config(["lookup"], {}, 5, plugins),
                      AgentConfig(current_date="2026-11-24"))
        traj = asyncio.run(agent.run("Who won?"))
    [r], scripted, _ = rollout(plugins, tokenizer, ["Who won?"], [replies])
    conversation = [{"role": m.role, "content": m.content} for m in traj.messages]
    expected = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    assert r.prompt_ids + r.completion_ids == expected[: len(r.prompt_ids) + len(r.completion_ids)]
    assert tokenizer.decode(expected[len(r.prompt_ids) + len(r.completion_ids):]) == "\n"  # the template's newline after the last turn
    assert (r.end, r.turns, r.format_errors, r.tool_calls, r.well_formed_turns) == ("answer", 3, 1, 1, 2)
    trained = tokenizer.decode([t for t, m in zip(r.completion_ids, r.env_mask) if m])
    assert trained == END.join(replies) + END  # exactly the model's own tokens carry loss
    observed = tokenizer.decode([t for t, m in zip(r.completion_ids, r.env_mask) if not m])
    assert "[format error] The tool call is not valid JSON" in observed and "results for: who won 1964 derby" in observed
    assert "<tool_response>" in observed and "Santa Claus" not in observed


def test_rollout_limits_end_rollouts_as_verl_does(plugins, tokenizer):
    call = render_assistant("again", tool_call=ToolCall("lookup", {"query": ["x"]}))
    rollouts, model, _ = rollout(plugins, tokenizer, ["q1?", "q2?", "q3?"], [[call] * 5, [call] * 5, [call] * 5], max_turns=2)
    assert [r.end for r in rollouts] == ["max_turns"] * 3 and all(r.turns == 2 and r.tool_calls == 1 for r in rollouts)
    assert [n for n, _ in model.calls] == [3, 3]  # one batched generation per turn for all rollouts
    # A turn cut by the per-turn budget ends the rollout (it has no end-of-turn token).
    [cut], model, _ = rollout(plugins, tokenizer, ["q?"], [[call]], max_turn_tokens=5)
    assert cut.end == "cut" and len(cut.completion_ids) == 5 and model.calls == [(1, [5])]
    # The response budget counts observations too; what is over it is cut off and the rollout ends.
    [long], _, _ = rollout(plugins, tokenizer, ["q?"], [[call] * 5], max_response_length=80)
    assert long.end == "length" and len(long.completion_ids) <= 80 and long.turns == 2
    # A turn that writes its own observation ends the rollout: the model is never shown a real one after it.
    faked = call + "\n<tool_response>\nmade up\n</tool_response>"
    [fake], _, _ = rollout(plugins, tokenizer, ["q?"], [[faked, call]])
    assert fake.end == "wrote_tool_response" and fake.turns == 1 and fake.tool_calls == 0


class RecordingModel(ScriptedModel):
    """Also keeps every sequence it was asked to continue."""

    def __init__(self, tokenizer, turns):
        super().__init__(tokenizer, turns)
        self.sequences = []

    async def __call__(self, sequences, budgets):
        self.sequences += [list(s) for s in sequences]
        return await super().__call__(sequences, budgets)


def test_the_context_policy_restarts_a_rollout_where_the_agent_rewrites_its_prompt(plugins, tokenizer):
    """keep_last_k (k=1) through the agent (sampling/eval) and through the RL rollout: each turn's prompt is the same
    tokens; where the policy blanks an earlier observation the RL rollout starts a new segment from that prompt, the
    segments' model tokens are exactly the replies, and the rollout is scored by its last segment."""
    from webdancer_rl.rollout import ChatTokens

    from webdancer.context import KeepLastK, KeepLastKConfig

    calls = [render_assistant(f"step {i}", tool_call=ToolCall("lookup", {"query": [f"fact {i}"]})) for i in range(3)]
    replies = [*calls, render_assistant("done", answer="Santa Claus")]
    with FakeOpenAIServer(list(replies)) as srv:
        model = ModelConfig(base_url=srv.base_url, model="fake", backoff_s=0.01, max_retries=1)
        agent = Agent(build_policy("openai", {}, model, plugins), ToolBox.from_config(["lookup"], {}, 5, plugins),
                      AgentConfig(current_date="2026-11-24"), KeepLastK(KeepLastKConfig(k=1)))
        traj = asyncio.run(agent.run("Who won?"))
        sent = [request["messages"] for request in srv.state.requests]
    assert traj.termination == "answered" and len(sent) == 4
    [r], scripted, _ = rollout(plugins, tokenizer, ["Who won?"], [replies], model_class=RecordingModel, max_turns=6,
                               context=KeepLastK(KeepLastKConfig(k=1)))
    chat = ChatTokens(tokenizer)
    assert scripted.sequences == [chat.prompt(messages) for messages in sent]  # the same prompt at every turn, to the token
    assert r.end == "answer" and r.turns == 4 and len(r.restarts) == 2  # turns 3 and 4 each blank one more observation
    segments = r.segments()
    assert [prompt for prompt, _, _ in segments] == [scripted.sequences[0], scripted.sequences[2], scripted.sequences[3]]
    trained = tokenizer.decode([t for t, m in zip(r.completion_ids, r.env_mask) if m])
    assert trained == END.join(replies) + END  # the model's own tokens only: no restart prompt carries loss
    assert tokenizer.decode(r.last_response_ids()) == replies[-1] + END
    assert r.restart_prompts[-1][-1]["role"] == "tool" and "removed to fit" in r.restart_prompts[-1][3]["content"]


def test_the_context_policy_ends_rl_rollouts_as_it_ends_sampled_ones(plugins, tokenizer):
    from webdancer.context import BlankOld, ContextPolicy

    call = render_assistant("again", tool_call=ToolCall("lookup", {"query": ["x"]}))
    # blank_old with a budget far above the limits leaves the rollout as it was without a policy
    [plain], _, _ = rollout(plugins, tokenizer, ["q?"], [[call] * 3], max_turns=3)
    [same], _, _ = rollout(plugins, tokenizer, ["q?"], [[call] * 3], max_turns=3, context=BlankOld())
    assert (same.prompt_ids, same.completion_ids, same.env_mask, same.restarts) == (plain.prompt_ids, plain.completion_ids, plain.env_mask, [])
    # a budget the question alone overflows: no turn
    [over], model, _ = rollout(plugins, tokenizer, ["q?"], [[call]], context=BlankOld(), context_tokens=10)
    assert over.end == "context_overflow" and over.turns == 0 and not model.calls

    class DropsTheQuestion(ContextPolicy):
        name = "drops_the_question"

        async def fit(self, messages, view):
            return messages[:1] + messages[2:] if len(messages) > 2 else messages

    [broken], _, _ = rollout(plugins, tokenizer, ["q?"], [[call] * 3], context=DropsTheQuestion())
    assert broken.end == "policy_error" and broken.turns == 1 and "dropped or changed the question" in broken.error


class SlowScriptedModel(ScriptedModel):
    """Serves each request on its own, as the batched engine does, taking 0.02 s per 10 characters of the reply,
    and logs when each reply is done."""

    def __init__(self, tokenizer, turns):
        super().__init__(tokenizer, turns)
        self.done = []

    async def __call__(self, sequences, budgets):
        [seq], [budget] = sequences, budgets
        index = self.rollout_of(seq)
        text = self.turns[index].pop(0)
        await asyncio.sleep(0.02 * len(text) / 10)
        self.done.append(index)
        return [self.tokens(text, budget)]


def test_rollouts_go_on_their_own_unless_the_generator_needs_them_together(plugins, tokenizer):
    """Off lockstep (the batched engine), a rollout asks for its next turn as soon as its tool returns: a rollout of
    short turns finishes while another's long first turn still decodes. The tokens are the same either way, and in
    lockstep a rollout that ends leaves the next batch to the others."""
    from webdancer_rl.rollout import RolloutTimes

    call = render_assistant("look", tool_call=ToolCall("lookup", {"query": ["x"]}))
    long_call = render_assistant("think " * 120, tool_call=ToolCall("lookup", {"query": ["y"]}))
    answer = render_assistant("done", answer="42")
    script = [[call, call, answer], [long_call, answer], [answer]]
    together, model, _ = rollout(plugins, tokenizer, ["q1?", "q2?", "q3?"], script)
    assert [n for n, _ in model.calls] == [3, 2, 1]  # the third rollout answered first, the second on its second turn
    times = RolloutTimes()
    alone, slow, _ = rollout(plugins, tokenizer, ["q1?", "q2?", "q3?"], script, model_class=SlowScriptedModel, lockstep=False, times=times)
    assert [(r.prompt_ids, r.completion_ids, r.env_mask, r.end, r.turns) for r in alone] == \
        [(r.prompt_ids, r.completion_ids, r.env_mask, r.end, r.turns) for r in together]
    assert slow.done == [2, 0, 0, 0, 1, 1]  # all of rollout 0's turns ended before rollout 1's first
    assert 0 < times.generate_s and times.generated_tokens == sum(sum(r.env_mask) for r in alone)
    # In lockstep, a rollout's wait for the others' tools is not generation time.
    naps = [[render_assistant("nap", tool_call=ToolCall("slow", {"seconds": s})), answer] for s in (0.1, 0.6)]
    times = RolloutTimes()
    rollout(plugins, tokenizer, ["q1?", "q2?"], naps, times=times, tools=("slow",))
    assert times.tools_s >= 0.55 and times.generate_s < 0.4


def test_a_failing_generation_fails_every_rollout_with_its_own_error(plugins, tokenizer, caplog):
    """An infrastructure failure is never a result: the generator's error reaches the caller, in lockstep or not,
    and only there (no rollout cancelled before it read its share leaves asyncio's "never retrieved" behind)."""
    import gc

    class Down(ScriptedModel):
        async def __call__(self, sequences, budgets):
            if self.calls:
                raise ConnectionError("engine stopped")
            return await super().__call__(sequences, budgets)

    call = render_assistant("look", tool_call=ToolCall("lookup", {"query": ["x"]}))
    for lockstep in (True, False):
        with pytest.raises(ConnectionError, match="engine stopped"):
            rollout(plugins, tokenizer, ["q1?", "q2?", "q3?", "q4?"], [[call, call]] * 4, model_class=Down, lockstep=lockstep)
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_turn_budget_and_observation_truncation_follow_verl():
    from webdancer_rl.rollout import truncate_observation, turn_budget

    assert turn_budget(limits(max_prompt_length=100, max_response_length=50), 120) == 30  # prompt + response budget left
    assert turn_budget(limits(max_prompt_length=100, max_response_length=50), 20) == 50  # never more than the response budget
    assert turn_budget(limits(max_prompt_length=100, max_response_length=50, max_turn_tokens=8), 20) == 8
    assert turn_budget(limits(max_prompt_length=100, max_response_length=50), 170) == 0
    text = "abcdefghij"
    assert truncate_observation(text, 20) == text
    assert truncate_observation(text, 4, "middle") == "ab...(truncated)...ij"
    assert truncate_observation(text, 4, "left") == "(truncated)...ghij"
    assert truncate_observation(text, 4, "right") == "abcd...(truncated)"


def test_grpo_settings_map_dapo_onto_trl(tmp_path):
    from trl import GRPOConfig
    from webdancer_rl.trl_engine import grpo_settings

    cfg = load_config("configs/rl/dapo.yaml", ["rl.train_batch_size=8", "rl.ppo_mini_batch_size=4", "rl.n_rollouts=4",
                                                "rl.total_training_steps=3", "rl.trl={gradient_checkpointing: false}"])
    settings = grpo_settings(cfg, tmp_path)
    args = GRPOConfig(**settings, use_cpu=True)  # TRL itself accepts every field
    assert (args.num_generations, args.epsilon, args.epsilon_high, args.loss_type, args.beta) == (4, 0.2, 0.28, "dapo", 0.0)
    assert args.per_device_train_batch_size == 16 and args.steps_per_generation == 2 and args.max_steps == 6
    assert args.generation_batch_size == 32  # 8 questions x 4 rollouts per generated batch, as verl's train_batch_size
    assert args.reward_weights == [0.1, 0.9, 1.0] and args.lr_scheduler_type == "constant" and not args.gradient_checkpointing
    kl = grpo_settings(load_config(None, ["rl.use_kl_loss=true", "rl.kl_loss_coef=0.01"]), tmp_path)
    assert kl["beta"] == 0.01
    # Micro-batches: the same updates, in passes of 4 rollouts with gradients accumulated.
    micro = GRPOConfig(**grpo_settings(load_config("configs/rl/dapo.yaml", ["rl.train_batch_size=8", "rl.ppo_mini_batch_size=4",
                                                                             "rl.n_rollouts=4", "rl.micro_batch_size=4"]), tmp_path), use_cpu=True)
    assert (micro.per_device_train_batch_size, micro.gradient_accumulation_steps, micro.steps_per_generation) == (4, 4, 8)
    assert micro.generation_batch_size == 32 and micro.max_steps == 2 * 5
    with pytest.raises(ConfigError, match="micro_batch_size"):
        grpo_settings(load_config(None, ["rl.micro_batch_size=5"]), tmp_path)


def test_cpu_training_defaults_bf16_only_where_native_and_no_activation_checkpointing(monkeypatch, tmp_path):
    """TRL turns bf16 autocast and activation checkpointing on by default; on a CPU that emulates bf16 the update would
    be slower than in fp32, and recomputing activations costs time a CPU run has no memory reason to spend."""
    import webdancer_models.cpu_linear as cpu_linear
    from trl import GRPOConfig
    from webdancer_rl.trl_engine import cpu_defaults, grpo_settings

    def defaults(native, settings, options=None):
        monkeypatch.setattr(cpu_linear, "bf16_supported", lambda: native)
        cpu_defaults(settings, options or {})
        return settings.get("bf16"), settings.get("activation_checkpointing")

    assert defaults(True, {"use_cpu": True}) == (True, False) and defaults(False, {"use_cpu": True}) == (False, False)
    assert defaults(True, {"use_cpu": True, "use_vllm": True}) == (False, False)  # vLLM samples in float32 on the CPU
    assert defaults(False, {"use_cpu": True, "bf16": True}, {"bf16": True}) == (True, False)  # rl.trl.bf16 decides
    assert defaults(True, {"use_cpu": True, "gradient_checkpointing": True}, {"fp16": False, "gradient_checkpointing": True}) == (None, None)
    assert defaults(False, {}) == (None, None)  # a GPU: TRL's own defaults
    settings = grpo_settings(load_config("configs/rl/dapo.yaml", ["rl.train_batch_size=2", "rl.ppo_mini_batch_size=2", "rl.n_rollouts=4"]),
                             tmp_path, cpu=True)
    defaults(False, settings := {**settings, "use_cpu": True})
    args = GRPOConfig(**settings)
    assert not args.activation_checkpointing and not args.gradient_checkpointing and not args.bf16
    # On the CPU a micro-batch is one rollout unless rl.micro_batch_size says otherwise: no padding (trl_update).
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.steps_per_generation) == (1, 8, 8)


def test_rollout_turns_follow_the_machine_and_refuse_sampling_the_engine_cannot_do(tmp_path):
    from webdancer_rl.trl_engine import grpo_settings, rollout_generation

    def mode(*overrides, gpu=False):
        cfg = load_config(None, list(overrides))
        return rollout_generation(cfg, grpo_settings(cfg, tmp_path), gpu=gpu)

    assert mode() == "batched" and mode(gpu=True) == "generate"  # auto
    assert mode("rl.trl_rollouts=generate") == "generate" and mode("rl.trl_rollouts=batched") == "batched"
    with pytest.raises(ConfigError, match="runs on the CPU only.*rl.trl_rollouts=generate"):
        mode("rl.trl_rollouts=batched", gpu=True)
    with pytest.raises(ConfigError, match=r"rl.trl.top_k=20: .*temperature and rl.top_p only.*rl.trl_rollouts=generate"):
        mode("rl.trl={top_k: 20}")
    with pytest.raises(ConfigError, match=r"rl.trl.repetition_penalty=1.1"):
        mode("rl.trl={repetition_penalty: 1.1}")
    assert mode("rl.trl={top_k: 20}", "rl.trl_rollouts=generate") == "generate"
    assert mode("rl.trl={top_k: 0, repetition_penalty: 1.0}") == "batched"  # the values that mean off


def test_batched_turns_are_the_policys_own_greedy_tokens_and_leave_the_policy_alone(tiny_model, tokenizer):
    """The batched engine on a copy of the policy: several turns at once, each with its own budget, give the tokens
    the policy's `generate` gives (the end-of-turn token included); the policy keeps its own modules and gradients."""
    from transformers import AutoModelForCausalLM
    from webdancer_models.batched_server import end_of_turn_ids
    from webdancer_rl.batched_turns import EngineSettings, batched_turns

    policy = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).train()
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    eos = end_of_turn_ids(policy, tokenizer)
    chat = [[{"role": "user", "content": q}] for q in ("What is 2+2?", "Name a color.", "Who wrote Hamlet? Answer briefly.")]
    prompts = [list(tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]) for m in chat]
    budgets = [40, 40, 5]
    with batched_turns(policy, tokenizer, eos, EngineSettings(4096, 256, 0.0, 1.0, seed=1)) as generate:
        turns = asyncio.run(generate(prompts, budgets))
    assert policy.training and all(p.requires_grad for p in policy.parameters())
    assert not any("forward" in vars(m) or getattr(m, "webdancer_fused", False) for m in policy.modules())  # no packed copies on it
    assert all(torch.equal(p, before[name]) for name, p in policy.named_parameters())
    policy.eval()
    for prompt, turn, budget in zip(prompts, turns, budgets):
        assert turn == policy.generate(torch.tensor([prompt]), max_new_tokens=budget, do_sample=False, eos_token_id=eos)[0, len(prompt):].tolist()
    assert turns[0][-1] in eos and len(turns[2]) == 5 and turns[2][-1] not in eos  # ended its turn / cut at its budget


def test_dynamic_sampling_drops_groups_without_spread(tmp_path):
    from webdancer_rl.trl_engine import WebdancerRollouts

    rollouts = WebdancerRollouts.__new__(WebdancerRollouts)
    rollouts.rl = load_config(None, ["rl.filter_groups_metric=reward"]).rl
    scores = [{"reward": r} for r in (1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5)]
    assert rollouts._kept(scores, 2) == [False, False, True, True, False, False, False, False]


def trl_run(tmp_path, web, tiny_model, qa_items, *extra):
    run = [f"run.root={tmp_path}", "run.name=r", f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null",
           "agent.current_date=2026-11-24", "rl.engine=trl", f"rl.model_path={tiny_model}", "rl.val_fraction=0",
           "rl.n_rollouts=2", "rl.train_batch_size=2", "rl.ppo_mini_batch_size=2", "rl.max_turns=2", "rl.max_turn_tokens=48",
           "rl.max_prompt_length=2048", "rl.max_response_length=160", "rl.overlong_buffer=150", "rl.filter_groups_metric=reward",
           "rl.learning_rate=1e-4", "rl.temperature=1.0", "rl.trl={gradient_checkpointing: false}", *extra]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": q.question, "answer": q.answer}) + "\n" for q in qa_items))
    return run, qa


QA = [QAItem("Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby"),
      QAItem("In which year did Guido van Rossum start Python?", "1989")]


@pytest.mark.slow
def test_one_real_grpo_step_updates_the_policy(plugins, local_web, tiny_model, tmp_path):
    """What CI runs: 2 questions x 2 rollouts, 2 turns, the tiny model against the offline web, on the CPU.

    In this process, so that a test reward plugin (registered in-process) scores it: the untrained
    model's rollouts all fail the format and answer rewards, and a group without spread teaches nothing."""
    from webdancer_rl.prepare import prepare
    from webdancer_rl.trl_engine import train

    web, _, _ = local_web
    run, _ = trl_run(tmp_path, web, tiny_model, QA, "rl.total_training_steps=1", "rl.filter_groups_metric=score", "rewards={vowels: {weight: 1.0}}")
    cfg = load_config(None, run)
    assert cfg.rewards == {"vowels": {"weight": 1.0}}  # in place of the default weights, not merged into them
    data, out = tmp_path / "data", tmp_path / "rl"
    prepare(QA, cfg, data)
    lines = []
    model = train(cfg, data, out, str(tiny_model), echo=lines.append)
    assert "rollout turns: the batched engine on a copy of the policy (rl.trl_rollouts=auto)" in lines  # the CPU's default
    before, after = load_file(tiny_model / "model.safetensors"), load_file(model / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy was updated
    [m] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # The gradient, not the logged loss: on a first, on-policy step the GRPO loss is the length-weighted mean of
    # group-normalized advantages, exactly 0 when a group's completions have the same length (all cut at the limit).
    assert m["step"] == 1 and m["filtered_groups"] == 0.0 and m["grad_norm"] > 0 and 0 < m["reward/vowels/mean"] < 1
    assert m["response_length/mean"] <= 160 and m["turns/mean"] >= 1


@pytest.mark.slow
def test_a_grpo_step_trains_every_segment_of_restarted_rollouts(plugins, local_web, tiny_model, tmp_path, monkeypatch):
    """keep_last_k with k=0 in a real TRL step: scripted turns (two searches of the offline web, then an answer) restart
    the rollout after each observation; the step trains on the segments, the metrics count them, the rollout is scored
    by its last segment, and every recorded segment renders back through the chat template (`traj check`)."""
    from webdancer_rl import trl_engine
    from webdancer_rl.prepare import prepare

    web, _, _ = local_web
    turns = [render_assistant("Search first.", tool_call=ToolCall("search", {"query": ["integrated circuit"]})),
             render_assistant("Search again.", tool_call=ToolCall("search", {"query": ["Jack Kilby"]}))]

    def scripted(trainer):
        calls = []

        async def generate(sequences, budgets):  # lockstep: every live rollout, in rollout order
            turn = len(calls)
            calls.append(len(sequences))
            texts = [turns[turn] if turn < 2 else render_assistant("Done.", answer="Jack Kilby" if i % 2 == 0 else "Nobody")
                     for i in range(len(sequences))]
            return [trainer.processing_class(t + END)["input_ids"][:b] for t, b in zip(texts, budgets)]

        return generate

    monkeypatch.setattr(trl_engine, "model_generate", scripted)
    from webdancer_rl import trl_update

    segmented, scored = [], trl_update.segmented_logps
    monkeypatch.setattr(trl_update, "segmented_logps", lambda *a: segmented.append(a[-1]) or scored(*a))
    run, _ = trl_run(tmp_path, web, tiny_model, QA[:1], "rl.total_training_steps=1", "rl.train_batch_size=1", "rl.ppo_mini_batch_size=1",
                     "rl.trl_rollouts=generate", "rl.max_turns=4", "rl.max_turn_tokens=0", "rl.max_response_length=1200",
                     "rl.overlong_buffer=0", "rl.max_tool_response_length=400", "agent.context=keep_last_k", "context.keep_last_k.k=0")
    cfg = load_config(None, run)
    data, out = tmp_path / "data", tmp_path / "rl"
    prepare(QA[:1], cfg, data)
    trl_engine.train(cfg, data, out, str(tiny_model), echo=lambda _: None)
    [m] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert m["segments/mean"] == 3.0 and m["turns/mean"] == 3.0 and m["answered_rate"] == 1.0
    assert m["filtered_groups"] == 0.0 and m["grad_norm"] > 0  # the right and the wrong answer: a group with spread, trained
    assert segmented and all(len(layout) == 2 for layouts in segmented for layout in layouts)  # each scored segment by segment
    records = [json.loads(line) for line in (out / "token_rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(len(r["restarts"]) == 2 and len(r["restart_prompts"]) == 2 for r in records)
    assert sorted(r["reward"] for r in records)[0] < sorted(r["reward"] for r in records)[1]
    result = CliRunner().invoke(cli, ["traj", "check", str(out / "token_rollouts.jsonl"), "--model", str(tiny_model), "--strict"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("6 rollouts: the chat template renders")  # 2 rollouts x 3 segments, each after its own prompt


@pytest.mark.slow
def test_rl_train_with_trl_then_resume_one_more_step(local_web, tiny_model, tmp_path):
    """`webdancer rl train` with rl.engine=trl: the native launcher, metrics, checkpoints, a final model, resume; the
    held-out check on RL's validation question at each step, and alarms with thresholds every run crosses: raised at
    the resumed step against the first one (each printed once, listed in metrics.jsonl and the step line)."""
    web, _, _ = local_web
    questions = QA + [QAItem("What does FOLDOC stand for?", "Free On-line Dictionary of Computing")]
    run, qa = trl_run(tmp_path, web, tiny_model, questions, "rl.total_training_steps=1", "rl.val_fraction=0.01", "rl.eval_every=1",
                      "rl.eval_questions=4", "rl.alarm_window=1", "rl.alarm_length_growth=0.01", "rl.alarm_valid_turn_drop=-1",
                      "rl.alarm_answered_rise=-1", "rl.alarm_correct_fall=-1", "rl.alarm_heldout_gap=-1")
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa), *run]).exit_code == 0
    result = CliRunner().invoke(cli, ["rl", "train", *run])
    assert result.exit_code == 0, result.output
    assert "step 1/1  reward" in result.output  # progress streamed
    assert "rollout turns: the batched engine on a copy of the policy" in result.output
    out = tmp_path / "r" / "rl"
    assert "accelerate.commands.launch" in (out / "command.sh").read_text() and "webdancer_rl.trl_engine" in (out / "command.sh").read_text()
    [m] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for key in ("reward/mean", "reward/format/mean", "reward/answer/mean", "reward/overlong/mean", "valid_turn_rate", "tool_calls/mean",
                "response_length/mean", "seconds_per_step", "time/generate_s", "time/tools_s", "time/reward_s", "time/update_s", "loss"):
        assert key in m, key
    assert m["step"] == 1 and m["response_length/mean"] <= 160 and m["reward/overlong/mean"] < 0
    [sample] = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()][:1]
    assert sample["step"] == 1 and sample["reference"] in [q.answer for q in questions] and sample["text"]
    assert (out / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "model")  # loads as a plain model (what serve and eval do)
    assert AutoTokenizer.from_pretrained(out / "model").chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    # Finished: a rerun changes nothing. Asked for one step more (final model moved away), it resumes from checkpoint-1.
    again = CliRunner().invoke(cli, ["rl", "train", *run])
    assert again.exit_code == 0 and "already trained" in again.output
    (out / "model").rename(out / "model-step1")
    # (the other turn generator, the policy's own generate, for the step it adds)
    more = CliRunner().invoke(cli, ["rl", "train", *run, "rl.total_training_steps=2", "rl.trl_rollouts=generate"])
    assert more.exit_code == 0, more.output
    assert "rollout turns: model.generate (rl.trl_rollouts=generate)" in more.output
    assert "resuming from" in more.output and "checkpoint-1" in more.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert (out / "model" / "model.safetensors").is_file()
    expected = ["valid_turns", "answer_sooner", "length", "heldout_gap"]
    assert [r["alarms"] for r in rows] == [[], expected]
    for name in expected:
        assert more.output.count(f"alarm {name}: ") == 1, more.output
    assert f"ALARM {', '.join(expected)}" in more.output
    for r in rows:  # one held-out question (the validation split), rolled out with the training rules and rewards
        assert -1 <= r["heldout/reward/mean"] <= 1 and "heldout/reward/answer/mean" in r and "heldout/tool_calls/mean" in r
    assert rows[1]["heldout/gap"] == pytest.approx(rows[1]["reward/mean"] - rows[1]["heldout/reward/mean"])
    # Every rollout as it was trained (rl.record_tokens), once per step across the resume, and the chat template gives
    # each back token for token.
    records = [json.loads(line) for line in (out / "token_rollouts.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in records}) == [1, 2] and len(records) == 2 * 4  # 2 questions x 2 rollouts per step
    for r in records:
        assert len(r["loss_mask"]) == len(r["model_mask"]) == len(r["completion_ids"]) and r["engine"] == "trl"
        assert set(r["loss_mask"]) <= {0, 1} and r["prompt"][0]["role"] == "system" and r["id"].startswith(r["question_id"])
    checked = CliRunner().invoke(cli, ["traj", "check", str(out / "token_rollouts.jsonl"), "--model", str(tiny_model)])
    assert checked.exit_code == 0 and "8 rollouts: the chat template renders every turn's text as it was sampled" in checked.output, checked.output


def test_bad_input_is_refused_before_training(local_web, tiny_model, tmp_path):
    web, _, _ = local_web
    run, qa = trl_run(tmp_path, web, tiny_model, QA, "rl.total_training_steps=1")
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa), *run]).exit_code == 0

    def train(*extra):
        return CliRunner().invoke(cli, ["rl", "train", *run, *extra])

    bad = train("rl.engine=deepspeed")
    assert bad.exit_code == 2 and "rl.engine" in bad.output and "verl, trl" in bad.output
    bad = train("rl.trl={num_generationz: 4}")
    assert bad.exit_code == 2 and "rl.trl.num_generationz" in bad.output and "num_generations" in bad.output
    bad = train("rl.trl={use_vllm: true}")
    assert bad.exit_code == 2 and "use_vllm" in bad.output
    bad = train("rl.trl={top_k: 20}")
    assert bad.exit_code == 2 and "rl.trl.top_k=20" in bad.output and "rl.trl_rollouts=generate" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    bad = train(f"rl.model_path={empty}")
    assert bad.exit_code == 1 and "has no weights" in bad.output and str(empty) in bad.output
    bad = train("rewards={format: {weight: 0.1}, bleu: {weight: 0.9}}")
    assert bad.exit_code != 0 and "bleu" in bad.output
    bad = train("rl.train_batch_size=4", "rl.ppo_mini_batch_size=4")
    assert bad.exit_code == 2 and "has 2 questions" in bad.output and "train_batch_size is 4" in bad.output
    bad = train("rl.filter_groups_metric=acc")
    assert bad.exit_code == 2 and "filter_groups_metric='acc'" in bad.output
    bad = train("agent.tools=[search]")
    assert bad.exit_code == 1 and "prepared for tools ['search', 'visit']" in bad.output
    bad = train("rl.max_turn_tokens=99")
    assert bad.exit_code == 1 and "rl.max_turn_tokens=48" in bad.output
    bad = train("agent.context=keep_last_k")  # verl's agent loop reads the policy from the prepared data
    assert bad.exit_code == 1 and "context policy" in bad.output and "keep_last_k" in bad.output and "rl prepare" in bad.output
    bad = CliRunner().invoke(cli, ["rl", "prepare", str(qa), *run, "agent.context=summarize"])
    assert bad.exit_code != 0 and "context.summarize.model.base_url" in bad.output  # in RL no rollout model has an endpoint
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "r" / "rl_data" / "train.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))}), data)
    bad = train()
    assert bad.exit_code == 1 and "has no rows" in bad.output and str(data) in bad.output
    assert not (tmp_path / "r" / "rl" / "metrics.jsonl").exists()  # nothing started


def test_unfinished_checkpoints_are_set_aside_and_never_resumed_from(tmp_path):
    from webdancer_rl.trl_engine import complete_checkpoints, set_aside_unfinished

    for step, done in ((1, True), (2, True), (10, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if done:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    [aside] = set_aside_unfinished(tmp_path)
    assert aside.name.startswith("checkpoint-10.partial-") and aside.is_dir()  # kept, not deleted
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2"]


def test_the_rollout_engines_cache_holds_one_steps_rollouts_and_always_one_rollout():
    """The cache is allocated whole: sized to what a step can fill (rollouts x the longest rollout), never above
    serve.kv_cache_tokens, never below one rollout."""
    from webdancer_rl.batched_turns import EngineSettings
    from webdancer_rl.rollout import RolloutLimits


    def cache(*overrides):
        cfg = load_config(None, ["rl.train_batch_size=2", "rl.n_rollouts=2", "rl.max_prompt_length=2048", "rl.max_response_length=1536", *overrides])
        return EngineSettings.of(cfg, RolloutLimits.from_config(cfg.rl), seed=1).kv_cache_tokens

    assert cache() == 4 * 3584  # under serve's 32k default
    assert cache("serve.kv_cache_tokens=8192") == 8192  # serve's cap holds
    assert cache("serve.kv_cache_tokens=1000") == 3584  # one rollout always fits
    assert cache("rl.train_batch_size=32", "rl.n_rollouts=8") == 32768
