"""Our browsing environment in plain TRL (`GRPOTrainer(environment_factory=...)`, no webdancer engine): the tools
as TRL renders and calls them, the rewards as verl scores them, and one real GRPO step of the tiny model on the
offline web through TRL's own tool loop."""

import os

import pytest
from transformers.utils import get_json_schema
from webdancer_env.trl import TRLEnvironment

from webdancer.config_loader import load_config
from webdancer.records import QAItem, ToolCall
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant, render_tool_response

QA = [QAItem("Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby", id="q1"),
      QAItem("In which year did Guido van Rossum start Python?", "1989", id="q2")]


def environment(local_web, tmp_path, *extra):
    web, _, _ = local_web
    return TRLEnvironment(load_config(None, [f"run.root={tmp_path}", f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null",
                                             "agent.current_date=2026-11-24", "agent.max_turns=3", "tools.search.top_k=2", *extra]))


def test_each_tool_is_a_method_whose_schema_is_the_tools_and_the_prompt_is_the_agents(local_web, tiny_model, tmp_path):
    env = environment(local_web, tmp_path)
    instance = env.environment_factory()
    assert instance.reset(**{"question": QA[0].question, "answer": QA[0].answer}) is None  # the prompt already holds all
    for schema in env.schemas:  # what TRL renders for the chat template, read back by transformers
        rendered = get_json_schema(getattr(instance, schema["name"]))["function"]
        ours = schema["parameters"]
        assert rendered["name"] == schema["name"] and set(rendered["parameters"]["required"]) == set(ours.get("required", []))
        for key, spec in ours["properties"].items():
            assert rendered["parameters"]["properties"][key]["type"] == spec["type"]
            assert rendered["parameters"]["properties"][key].get("items", {}).get("type") == spec.get("items", {}).get("type")
    tokenizer = env.tokenizer(tiny_model)
    [row] = env.dataset(QA[:1])
    tools = [getattr(instance, s["name"]) for s in env.schemas]
    with_tools = tokenizer.apply_chat_template(row["prompt"], tools=tools, tokenize=False, add_generation_prompt=True)
    assert with_tools == tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    assert row["prompt"][0]["role"] == "system" and QA[0].question in row["prompt"][1]["content"] and '"name": "search"' in with_tools
    assert env.max_tool_calling_iterations == 2  # agent.max_turns=3: the first turn, then two rounds of tool calls


async def test_a_call_trl_parses_runs_our_tool_and_bad_arguments_get_our_format_error(local_web, tiny_model, tmp_path):
    from trl.chat_template_utils import parse_response

    env = environment(local_web, tmp_path)
    tokenizer = env.tokenizer(tiny_model)
    prefix = tokenizer.apply_chat_template([{"role": "user", "content": "q"}], add_generation_prompt=True, tokenize=True, return_dict=False)
    call = ToolCall("search", {"query": ["integrated circuit"]})
    turn = tokenizer(render_assistant("I should search", tool_call=call) + "<|im_end|>", add_special_tokens=False)["input_ids"]
    [parsed] = parse_response(tokenizer, turn, prefix=prefix)["tool_calls"]
    instance = env.environment_factory()
    observation = await getattr(instance, parsed["function"]["name"])(**parsed["function"]["arguments"])
    async with ToolBox.for_run(env.cfg) as toolbox:  # what the agent would have been shown
        assert observation == (await toolbox.run(call)).content and "http://127.0.0.1" in observation
    bad = await instance.search(query="not a list", page=3)
    assert bad.startswith("[format error] Bad call to 'search'")
    # TRL wraps the observation as a `tool` message: our chat template renders it as the agent's observation turn.
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "tool", "name": "search", "content": observation}],
                                             tokenize=False)
    assert render_tool_response(observation) in rendered


async def test_rewards_score_a_rollout_as_verls_compute_score_does(local_web, tiny_model, tmp_path):
    from webdancer_rl.reward import compute_score

    env = environment(local_web, tmp_path)
    tokenizer = env.tokenizer(tiny_model)
    funcs = env.reward_funcs(tokenizer)
    assert [f.__name__ for f in funcs] == ["format", "answer"]  # the paper's weights, one column each in TRL's logs
    rollout = (render_assistant("search", tool_call=ToolCall("search", {"query": ["ic"]})) + "<|im_end|>\n<|im_start|>user\n"
               + render_tool_response("Jack Kilby built it") + "<|im_end|>\n<|im_start|>assistant\n" + render_assistant("found", answer="Jack Kilby")
               + "<|im_end|>")
    ids = tokenizer(rollout, add_special_tokens=False)["input_ids"]
    kwargs = {"prompts": [[]], "completions": [[]], "completion_ids": [ids], "question": [QA[0].question], "answer": [QA[0].answer]}
    scored = []
    score = env.reward_set().score

    async def counted(sample):
        scored.append(sample.response)
        return await score(sample)

    env.reward_set().score = counted
    parts = [(await f(**kwargs))[0] for f in funcs]
    assert len(scored) == 1  # one score of the rollout serves every reward function (a judge is asked once)
    verl = await compute_score("webdancer/qa", tokenizer.decode(ids, skip_special_tokens=True), QA[0].answer, {"question": QA[0].question})
    assert parts == [pytest.approx(0.1 * verl["format"]), pytest.approx(0.9 * verl["answer"])] and sum(parts) == pytest.approx(verl["score"]) == 1.0


@pytest.mark.slow
def test_plain_grpo_trainer_runs_a_step_whose_rollouts_call_our_tools_on_the_offline_web(local_web, tiny_model, tmp_path, monkeypatch):
    """TRL's own tool loop: the first turn of each rollout is a scripted search (the untrained model never writes a
    call), everything after it is TRL's: parsing, calling the environment, the observation tokens, the model's next
    turn, the rewards, the update."""
    from trl import GRPOConfig, GRPOTrainer

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    env = environment(local_web, tmp_path)
    tokenizer = env.tokenizer(tiny_model)
    scripted = tokenizer(render_assistant("I should search", tool_call=ToolCall("search", {"query": ["integrated circuit"]})) + "<|im_end|>",
                         add_special_tokens=False)["input_ids"]

    class FirstTurnScripted(GRPOTrainer):
        first_turns = 0

        def _generate_single_turn(self, prompt_ids, *args, **kwargs):
            if self.first_turns == 0:
                self.first_turns += 1
                return [list(scripted) for _ in prompt_ids], None
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)

    seen = []
    rewards = env.reward_funcs(tokenizer)
    first = rewards[0]

    async def recording(completion_ids, **kwargs):
        seen.extend(tokenizer.decode(ids, skip_special_tokens=False) for ids in completion_ids)
        return await first(completion_ids=completion_ids, **kwargs)

    recording.__name__ = first.__name__
    args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=2, num_generations=2, max_completion_length=320, gradient_checkpointing=False,
                      max_tool_calling_iterations=env.max_tool_calling_iterations, learning_rate=1e-4, report_to=[], use_cpu=True,
                      logging_steps=1, save_strategy="no", bf16=False, temperature=1.0,
                      generation_kwargs={"max_new_tokens": 24})  # a turn: 24 tokens at most (each decode step is ~0.1 s here)
    trainer = FirstTurnScripted(model=str(tiny_model), processing_class=tokenizer, reward_funcs=[recording, *rewards[1:]],
                                train_dataset=env.dataset(QA), environment_factory=env.environment_factory, args=args)
    trainer.train()
    [logged, _] = trainer.state.log_history
    assert logged["tools/call_frequency"] > 0 and logged["tools/failure_frequency"] == 0
    assert "rewards/format/mean" in logged and "rewards/answer/mean" in logged
    assert len(seen) == 2 and all(text.startswith("<think>\nI should search") for text in seen)
    # The observation TRL put in the context is our tool's, on the offline web, as the agent's observation turn.
    assert all("<|im_start|>user\n<tool_response>\n" in text and "http://127.0.0.1" in text for text in seen)
    assert os.path.isdir(tmp_path / "out")


def test_env_trl_shows_the_methods_rewards_and_the_code_to_train(local_web, tmp_path):
    from click.testing import CliRunner

    from webdancer.cli import cli
    from webdancer.plugins import get_plugins

    get_plugins().add_commands(cli)  # as `webdancer` (main) does
    web, _, _ = local_web
    result = CliRunner().invoke(cli, ["env", "trl", f"run.root={tmp_path}", f"web.root={web.root}", f"web.port={web.port}", "agent.max_turns=4"])
    assert result.exit_code == 0, result.output
    assert "search(*, query: list[str]) -> str" in result.output and "format x0.1, answer x0.9" in result.output
    assert "max_tool_calling_iterations: 3" in result.output and "environment_factory=env.environment_factory" in result.output


def test_a_tool_or_reward_that_is_not_installed_fails_at_start_by_name(local_web, tmp_path):
    from webdancer.errors import WebdancerError

    with pytest.raises(WebdancerError, match="browse"):
        environment(local_web, tmp_path, "agent.tools=[search, browse]")
    with pytest.raises(WebdancerError, match="karma"):
        environment(local_web, tmp_path, "rewards={karma: {weight: 1.0}}")
