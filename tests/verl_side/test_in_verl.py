"""webdancer inside verl 0.9.1, on the CPU: run in .venvs/rl (scripts/test.sh does).

The tool adapter through verl's tool loader and BaseTool interface, compute_score through verl's
reward-function loader and its DAPO reward manager, the prepared parquet through RLHFDataset, our
agent loop on real tokens (masking), and our DAPO overrides composed with verl's own config.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from webdancer.config_loader import load_config
from webdancer.records import QAItem, ToolCall
from webdancer.wire import render_assistant

QUESTIONS = [
    QAItem("Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby", tag="crawlqa"),
    QAItem("Which company founded in San Jose in 1984 invented the field-programmable gate array?", "Xilinx", tag="crawlqa"),
    QAItem("In which year did Guido van Rossum invent Python?", "1991", tag="e2hqa"),
]


@pytest.fixture(scope="module")
def prepared(local_web, tmp_path_factory):
    from webdancer_rl.prepare import prepare

    web, _, _ = local_web
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null", "rl.val_fraction=0.34",
                             "agent.current_date=2026-11-24"])
    out = tmp_path_factory.mktemp("rl_data")
    return cfg, prepare(QUESTIONS, cfg, out)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model))


async def test_tool_adapter_runs_webdancer_tools_through_verls_interface(prepared):
    from verl.tools.base_tool import BaseTool
    from verl.tools.tool_registry import initialize_tools_from_config

    _, data = prepared
    tools = {t.name: t for t in initialize_tools_from_config(str(data.tool_config))}
    assert set(tools) == {"search", "visit"} and all(isinstance(t, BaseTool) for t in tools.values())
    search = tools["search"]
    instance, _ = await search.create()
    response, reward, metrics = await search.execute(instance, {"query": ["integrated circuit Kilby"]})
    assert "kilby" in response.text.lower() and "http://127.0.0.1:" in response.text and metrics["error"] == 0 and reward == 0.0
    bad, _, bad_metrics = await search.execute(instance, {"query": "not a list"})
    assert "invalid arguments" in bad.text and bad_metrics["error"] == 1
    await search.release(instance)
    visit = tools["visit"]
    url = next(line.split("](")[1].rstrip(")") for line in response.text.splitlines() if "](" in line)
    page, _, _ = await visit.execute("v1", {"url": [url], "goal": "who invented the integrated circuit"})
    assert "kilby" in page.text.lower()
    # the schema verl hands the chat template is the tool's own
    assert search.tool_schema.function.name == "search" and "query" in search.tool_schema.function.parameters.properties


async def test_a_search_backend_outage_raises_out_of_verls_tool_interface_not_an_observation(monkeypatch):
    """A tool whose backend is down (Serper unreachable after its retries) stops verl's rollout worker with the
    outage, as in sampling and eval; the model never reads it as a tool answer."""
    import socket

    from webdancer_rl.verl_tool import WebdancerTool

    from webdancer.errors import OutageError

    monkeypatch.setenv("SERPER_API_KEY", "serper-test-key")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    tool = WebdancerTool({"type": "native", "tool": "search",
                          "options": {"backend": "serper", "serper_url": f"http://127.0.0.1:{port}/search", "max_retries": 1, "backoff_s": 0.01}})
    instance, _ = await tool.create()
    with pytest.raises(OutageError, match="serper search failed after 2 tries"):
        await tool.execute(instance, {"query": ["integrated circuit"]})
    await tool.release(instance)


async def test_an_mcp_servers_tool_runs_through_verls_tool_interface(local_web, tmp_path):
    """`rl prepare` writes an MCP server's tools into verl's tool YAML (the set and the member); verl's loader builds
    them and the first call opens the server in the worker's event loop."""
    import sys

    from verl.tools.tool_registry import initialize_tools_from_config
    from webdancer_rl.prepare import prepare
    from webdancer_rl.verl_tool import close_tool_sets

    stub = Path(__file__).resolve().parents[1] / "fixtures" / "mcp" / "stub_server.py"
    web, _, _ = local_web
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "agent.tools=[mcp]", "rl.val_fraction=0.0",
                             f"tools.mcp.servers=[{{name: stub, command: '{sys.executable}', args: ['{stub}']}}]"])
    data = prepare(QUESTIONS[:1], cfg, tmp_path / "rl_data")
    tools = {t.name: t for t in initialize_tools_from_config(str(data.tool_config))}
    assert set(tools) == {"stub__shout", "stub__nap", "stub__die"}
    shout = tools["stub__shout"]
    instance, _ = await shout.create()
    response, _, metrics = await shout.execute(instance, {"text": "offline web"})
    assert response.text == "OFFLINE WEB" and metrics["error"] == 0
    bad, _, bad_metrics = await shout.execute(instance, {"txt": "x"})
    assert "invalid arguments" in bad.text and bad_metrics["error"] == 1  # checked against the server's own schema
    await shout.release(instance)
    nap = tools["stub__nap"]
    instance, _ = await nap.create()
    assert (await nap.execute(instance, {"seconds": 0}))[0].text == "rested"
    servers = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).count(str(stub)) and _ppid(p) == os.getpid()]
    assert nap._box is shout._box and len(servers) == 1, servers  # one session (one server process) for the whole set
    await close_tool_sets()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def rollout_text(tokenizer, answer):
    """A whole rollout as verl's reward manager sees it: response tokens decoded without specials."""
    messages = [
        {"role": "assistant", "content": render_assistant("I will search.", tool_call=ToolCall("search", {"query": ["kilby"]}))},
        {"role": "tool", "content": "1. [Jack Kilby](http://x/kilby.html) invented the integrated circuit in 1958."},
        {"role": "assistant", "content": render_assistant("The page says Jack Kilby.", answer=answer)},
    ]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    return tokenizer.decode(ids, skip_special_tokens=True)


async def test_compute_score_through_verls_reward_loader_and_dapo_manager(prepared, tokenizer):
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from webdancer_rl import reward as reward_module

    config = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": reward_module.__file__, "name": "compute_score", "reward_kwargs": {"weights": {"format": 0.1, "answer": 0.9}}},
        "reward_kwargs": {"overlong_buffer_cfg": {"enable": True, "len": 64, "penalty_factor": 1.0, "log": True}, "max_resp_len": 4096}}})
    fn = get_custom_reward_fn(config)
    good = await fn(data_source="webdancer/crawlqa", solution_str=rollout_text(tokenizer, "Jack Kilby"), ground_truth="Jack Kilby", extra_info={})
    wrong = await fn(data_source="webdancer/crawlqa", solution_str=rollout_text(tokenizer, "Robert Noyce"), ground_truth="Jack Kilby", extra_info={})
    garbage = await fn(data_source="webdancer/crawlqa", solution_str="I think it was Kilby", ground_truth="Jack Kilby", extra_info={})
    assert good["score"] == pytest.approx(1.0) and good["format"] == 1.0 and good["answer"] == 1.0
    assert wrong["score"] == pytest.approx(0.1) and garbage["score"] == 0.0

    manager = DAPORewardManager(config, tokenizer, fn)
    prompt = tokenizer("<|im_start|>user\nq<|im_end|>\n", return_tensors="pt")["input_ids"][0]
    response = torch.tensor(tokenizer(rollout_text(tokenizer, "Jack Kilby"))["input_ids"])
    batch = {"prompts": prompt[None], "responses": response[None], "attention_mask": torch.ones(1, len(prompt) + len(response), dtype=torch.long)}
    data = DataProto.from_dict(tensors=batch, non_tensors={"data_source": ["webdancer/crawlqa"], "reward_model": [{"ground_truth": "Jack Kilby"}],
                                                         "extra_info": [{}]})
    out = await manager.run_single(data)
    assert out["reward_score"] == pytest.approx(1.0) and out["reward_extra_info"]["overlong"] is False


async def test_a_judge_outage_stops_verls_reward_manager_instead_of_scoring_zero(tokenizer):
    """verl's DAPO manager awaits compute_score unguarded: a judge that is down raises out of it (the step stops,
    a rerun resumes from the last checkpoint); it never becomes a reward of 0."""
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from webdancer_rl import reward as reward_module

    from webdancer.errors import OutageError
    from webdancer.testing.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer(default=(503, "judge down")) as judge:
        options = {"judge": {"model": {"base_url": judge.base_url, "model": "j", "max_retries": 0}}}
        config = OmegaConf.create({"reward": {"custom_reward_function": {
            "path": reward_module.__file__, "name": "compute_score", "reward_kwargs": {"weights": {"format": 0.1, "judge": 0.9}, "options": options}},
            "reward_kwargs": {"overlong_buffer_cfg": {"enable": False, "len": 64, "penalty_factor": 1.0, "log": False}, "max_resp_len": 4096}}})
        manager = DAPORewardManager(config, tokenizer, get_custom_reward_fn(config))
        prompt = tokenizer("<|im_start|>user\nq<|im_end|>\n", return_tensors="pt")["input_ids"][0]
        response = torch.tensor(tokenizer(rollout_text(tokenizer, "Jack Kilby"))["input_ids"])
        batch = {"prompts": prompt[None], "responses": response[None], "attention_mask": torch.ones(1, len(prompt) + len(response), dtype=torch.long)}
        data = DataProto.from_dict(tensors=batch, non_tensors={"data_source": ["webdancer/crawlqa"], "reward_model": [{"ground_truth": "Jack Kilby"}],
                                                             "extra_info": [{}]})
        with pytest.raises(OutageError, match="HTTP 503"):
            await manager.run_single(data)
        assert len(judge.state.requests) == 1


def test_prepared_parquet_loads_with_verls_dataset(prepared, tokenizer):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg, data = prepared
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "return_raw_chat": True, "truncation": "error",
                               "filter_overlong_prompts": True, "cache_dir": str(data.train.parent / "cache")})
    ds = RLHFDataset([str(data.train)], tokenizer, config)
    assert len(ds) == data.train_rows == 2 and data.val_rows == 1
    row = ds[0]
    assert row["agent_name"] == "webdancer_agent" and row["data_source"].startswith("webdancer/")
    raw = list(row["raw_prompt"])
    assert raw[0]["role"] == "system" and "<tool_call>" in raw[0]["content"] + raw[1]["content"]
    assert any(q.question in raw[1]["content"] for q in QUESTIONS) and row["extra_info"]["question"] in raw[1]["content"]


class ScriptedServer:
    """verl's server-manager interface, answering with the tokens of scripted turns (no GPU here)."""

    def __init__(self, tokenizer, turns):
        self.tokenizer, self.turns, self.prompts = tokenizer, list(turns), []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        text = self.turns.pop(0)
        return TokenOutput(token_ids=self.tokenizer(text + "<|im_end|>")["input_ids"], stop_reason="completed")


async def test_agent_loop_masks_tool_responses_on_real_tokens(prepared, tokenizer, tiny_model):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.tools.tool_registry import initialize_tools_from_config
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from webdancer_rl.verl_agent import WebdancerAgentLoop

    cfg, data = prepared
    rollout = {"multi_turn": {"max_user_turns": 4, "max_assistant_turns": 4, "max_parallel_calls": 1, "max_tool_response_length": 2000,
                              "tool_response_truncate_side": "right", "format": "hermes"},
               "prompt_length": 4096, "response_length": 4096, "full_determinism": False}
    trainer_config = DictConfigWrap(OmegaConf.create({"actor_rollout_ref": {"rollout": rollout}}))
    turns = [render_assistant("I will search.", tool_call=ToolCall("search", {"query": ["integrated circuit Kilby"]})),
             render_assistant("The results name Jack Kilby.", answer="Jack Kilby")]
    server = ScriptedServer(tokenizer, turns)
    tools = initialize_tools_from_config(str(data.tool_config))
    loop = WebdancerAgentLoop(trainer_config=trainer_config, server_manager=server, tokenizer=tokenizer, processor=None,
                              dataset_cls=RLHFDataset, data_config=DictConfigWrap(OmegaConf.create({})), tools=ToolListWrap(tools),
                              hf_model_type="llama")
    assert loop.tool_parser_name == "webdancer"  # ours, though multi_turn.format says hermes
    prompt = [{"role": "system", "content": "You answer questions."}, {"role": "user", "content": QUESTIONS[0].question}]
    out = await loop.run({}, raw_prompt=prompt, extra_info={})
    ids, mask = out.response_ids, out.response_mask
    assert len(ids) == len(mask) and out.num_turns == 4
    trained = tokenizer.decode([t for t, m in zip(ids, mask) if m == 1])
    masked = tokenizer.decode([t for t, m in zip(ids, mask) if m == 0])
    assert trained == turns[0] + "<|im_end|>" + turns[1] + "<|im_end|>"  # the model's own tokens, exactly
    assert masked.lstrip("\n").startswith("<|im_start|>user\n<tool_response>\n") and "kilby" in masked.lower()  # the observation: no loss
    assert masked.rstrip().endswith("</tool_response><|im_end|>\n<|im_start|>assistant")
    # What the model saw on its second turn is what our agent sends: same chat template, same wire format.
    assert "<tool_response>" in tokenizer.decode(server.prompts[1]) and len(server.prompts[1]) > len(server.prompts[0])


def verl_loop(tokenizer, data, server, context=None, **rollout):
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.tools.tool_registry import initialize_tools_from_config
    from verl.utils.dataset.rl_dataset import RLHFDataset
    from webdancer_rl.verl_agent import WebdancerAgentLoop

    multi_turn = {"max_user_turns": None, "max_assistant_turns": 4, "max_parallel_calls": 1, "max_tool_response_length": 300,
                  "tool_response_truncate_side": "middle", "format": "hermes"}
    config = {"multi_turn": multi_turn, "prompt_length": 4096, "response_length": 2048, "full_determinism": False, **rollout}
    loops = OmegaConf.load(data.agent_loops)[0]
    return WebdancerAgentLoop(trainer_config=DictConfigWrap(OmegaConf.create({"actor_rollout_ref": {"rollout": config}})),
                              server_manager=server, tokenizer=tokenizer, processor=None, dataset_cls=RLHFDataset,
                              data_config=DictConfigWrap(OmegaConf.create({})), tools=ToolListWrap(initialize_tools_from_config(str(data.tool_config))),
                              hf_model_type="llama", max_turn_tokens=loops.max_turn_tokens, context=context or loops.context)


async def test_verl_and_trl_rollouts_are_the_same_tokens(prepared, tokenizer, tmp_path, monkeypatch):
    """Same question, same model replies, same tools: verl's `webdancer_agent` loop and the TRL engine's rollout
    build the same prompt ids, the same response ids and the same loss mask (format errors answered alike); verl's
    rollout is recorded token for token (rl.record_tokens) and the chat template renders it back."""
    import pyarrow.parquet as pq
    from webdancer_rl.rollout import ChatTokens, RolloutLimits, run_rollouts

    from webdancer.tools import ToolBox

    cfg, data = prepared
    prompt = pq.read_table(data.train).to_pylist()[0]["prompt"]
    turns = ["<think>x</think><tool_call>{bad json</tool_call>",
             render_assistant("I will search.", tool_call=ToolCall("search", {"query": ["integrated circuit Kilby"]})),
             render_assistant("The results name Jack Kilby.", answer="Jack Kilby")]
    server = ScriptedServer(tokenizer, turns)
    monkeypatch.setenv("WEBDANCER_TOKEN_ROLLOUTS", str(tmp_path / "token_rollouts"))
    monkeypatch.setenv("WEBDANCER_ROLLOUT_STATS", str(tmp_path / "rollout_stats"))
    extra_info = {"question_id": "q7", "split": "train", "question": "Who invented the integrated circuit?"}
    # verl's default trainer puts the step it dispatched the prompt at beside every prompt (`global_steps`)
    verl_out = await verl_loop(tokenizer, data, server).run({}, raw_prompt=prompt, extra_info=extra_info, global_steps=3)

    script = list(turns)
    chat = ChatTokens(tokenizer)

    async def generate(sequences, budgets):
        return [tokenizer(script.pop(0) + "<|im_end|>")["input_ids"][:b] for b in budgets]

    limits = RolloutLimits(max_turns=4, max_prompt_length=4096, max_response_length=2048, max_tool_response_length=300)
    async with ToolBox.from_config(cfg.agent.tools, cfg.tools, 30) as toolbox:
        [trl_out] = await run_rollouts([chat.prompt(prompt)], generate, toolbox, chat, limits)
    assert server.prompts[0] == chat.prompt(prompt) == trl_out.prompt_ids == verl_out.prompt_ids  # the first-turn prompt
    assert trl_out.completion_ids == verl_out.response_ids and trl_out.env_mask == verl_out.response_mask
    observed = tokenizer.decode([t for t, m in zip(trl_out.completion_ids, trl_out.env_mask) if not m])
    assert "[format error] The tool call is not valid JSON" in observed and "kilby" in observed.lower()
    # and both are the conversation exactly as the chat template renders it (the newline after <|im_end|> included)
    text = tokenizer.decode(trl_out.prompt_ids + trl_out.completion_ids)
    assert "<|im_end|>\n<|im_start|>user\n<tool_response>\n[format error]" in text
    from webdancer.records import record_from_dict
    from webdancer.token_trajectories import TokenRollout, check
    from webdancer.typed import to_dict

    [recorded] = [json.loads(line) for path in (tmp_path / "token_rollouts").glob("*.jsonl") for line in path.read_text().splitlines()]
    record = record_from_dict(TokenRollout, recorded)
    assert record.engine == "verl" and record.step == 3 and record.id.startswith("q7:") and record.prompt == prompt
    assert record.prompt_ids == trl_out.prompt_ids and record.completion_ids == trl_out.completion_ids and record.loss_mask == trl_out.env_mask
    assert check(record, tokenizer) is None
    # What `rl train` makes verl's step metrics of: the rollout as the TRL engine counts it, and its reward components,
    # scored by verl's own DAPO manager on verl's own layout of the rollout and joined back to it.
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.dapo import DAPORewardManager
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from webdancer_rl import reward as reward_module
    from webdancer_rl.rollout_stats import RolloutStats, step_metrics

    [stats] = [record_from_dict(RolloutStats, json.loads(line)) for line in next((tmp_path / "rollout_stats").glob("rollouts-*")).read_text().splitlines()]
    assert (stats.step, stats.split, stats.question_id) == (3, "train", "q7")
    assert {**to_dict(stats), "step": None, "question_id": "", "key": ""} == to_dict(trl_out.stats())
    assert (stats.turns, stats.well_formed_turns, stats.tool_calls, stats.format_errors, stats.end) == (3, 2, 1, 1, "answer")
    config = OmegaConf.create({"reward": {"custom_reward_function": {"path": reward_module.__file__, "name": "compute_score",
                                                                     "reward_kwargs": {"weights": {"format": 0.1, "answer": 0.9}}},
                                          "reward_kwargs": {"overlong_buffer_cfg": {"enable": False, "len": 64, "penalty_factor": 1.0, "log": False},
                                                            "max_resp_len": 2048}}})
    response = torch.tensor(verl_out.response_ids + [tokenizer.pad_token_id or 0] * 5)  # right-padded, as verl batches it
    mask = torch.tensor([1] * (len(verl_out.prompt_ids) + len(verl_out.response_ids)) + [0] * 5)
    batch = {"prompts": torch.tensor(verl_out.prompt_ids)[None], "responses": response[None], "attention_mask": mask[None]}
    scored = await DAPORewardManager(config, tokenizer, get_custom_reward_fn(config)).run_single(DataProto.from_dict(
        tensors=batch, non_tensors={"data_source": ["webdancer/crawlqa"], "reward_model": [{"ground_truth": "Jack Kilby"}], "extra_info": [extra_info]}))
    assert scored["reward_score"] == pytest.approx(1.0)
    step = step_metrics(tmp_path / "rollout_stats")[3]
    assert step["reward/answer/mean"] == 1.0 and step["reward/format/mean"] == 1.0 and step["tool_calls/mean"] == 1.0
    assert step["answered_rate"] == 1.0 and step["valid_turn_rate"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("policy", ["keep_last_k", "summarize", "newest_exchange"])
async def test_verl_and_trl_restart_rollouts_into_the_same_segments(policy, plugins, prepared, tokenizer, tmp_path, monkeypatch):
    """ReSum-GRPO on both engines, for each kind of restart: keep_last_k (k=0: every observation blanked), summarize
    (a summary after each exchange, from a summarizer on loopback) and a third-party policy (the test package's
    newest_exchange, registered as its entry point would). verl's agent loop returns one AgentLoopOutput per segment
    (what verl's default trainer trains as rows sharing the final segment's reward and GRPO advantage) and those are,
    token for token, the TRL engine's segments for the same replies; each recorded segment renders back through the
    chat template after its own prompt."""
    import sys

    import pyarrow.parquet as pq
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
    from webdancer_rl.rollout import ChatTokens, RolloutContext, RolloutLimits, run_rollouts

    from webdancer.records import record_from_dict
    from webdancer.testing.fake_openai import FakeOpenAIServer
    from webdancer.token_trajectories import TokenRollout, check
    from webdancer.tools import ToolBox

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "webdancer-context-newest"))
    import webdancer_context_newest

    if "newest_exchange" not in plugins.registry.get("context_policies", {}):  # unless its egg-info made it an entry point already
        plugins.register(webdancer_context_newest)
    cfg, data = prepared
    prompt = pq.read_table(data.train).to_pylist()[0]["prompt"]
    turns = [render_assistant("I will search.", tool_call=ToolCall("search", {"query": ["integrated circuit Kilby"]})),
             "<think>x</think><tool_call>{bad json</tool_call>",  # a format error's observation counts as one too
             render_assistant("The results name Jack Kilby.", answer="Jack Kilby")]
    chat = ChatTokens(tokenizer)
    head = sum(chat.count(m["content"]) for m in prompt)
    with FakeOpenAIServer(default="Searched for the integrated circuit; Kilby is named.") as summarizer:
        options = {"keep_last_k": {"k": 0}, "newest_exchange": {},
                   "summarize": {"threshold": (head + 10) / (10 * head), "model": {"base_url": summarizer.base_url, "model": "s"}}}[policy]
        context = {"name": policy, "options": options, "max_tokens": 10 * head}
        monkeypatch.setenv("WEBDANCER_TOKEN_ROLLOUTS", str(tmp_path / "token_rollouts"))
        monkeypatch.setenv("WEBDANCER_ROLLOUT_STATS", str(tmp_path / "rollout_stats"))
        verl_out = await verl_loop(tokenizer, data, ScriptedServer(tokenizer, turns), context=context).run(
            {}, raw_prompt=prompt, extra_info={"question_id": "q7"})

        script = list(turns)

        async def generate(sequences, budgets):
            return [tokenizer(script.pop(0) + "<|im_end|>")["input_ids"][:b] for b in budgets]

        limits = RolloutLimits(max_turns=4, max_prompt_length=4096, max_response_length=2048, max_tool_response_length=300)
        built = plugins.build("context_policies", policy, options, f"context.{policy}")
        async with ToolBox.from_config(cfg.agent.tools, cfg.tools, 30) as toolbox:
            [trl_out] = await run_rollouts([chat.prompt(prompt)], generate, toolbox, chat, limits,
                                           contexts=[RolloutContext(built, prompt, 10 * head, chat.count)])
        await built.aclose()
        summaries = [r for r in summarizer.state.requests if r["messages"][0]["content"].startswith("You are helping")]
    restarts = 1 if policy == "newest_exchange" else 2  # it first changes the prompt when a second exchange comes
    assert isinstance(verl_out, list) and len(verl_out) == restarts + 1 and all(isinstance(o, AgentLoopOutput) for o in verl_out)
    assert [o.extra_fields["webdancer_end"] for o in verl_out] == ["restart"] * restarts + [""]
    segments = trl_out.segments()
    assert len(segments) == restarts + 1 and trl_out.end == "answer"
    for (segment_prompt, start, end), out in zip(segments, verl_out):
        assert segment_prompt == out.prompt_ids
        assert trl_out.completion_ids[start:end] == out.response_ids and trl_out.env_mask[start:end] == out.response_mask
    last_prompt = tokenizer.decode(verl_out[-1].prompt_ids)
    if policy == "summarize":
        assert len(summaries) == 4 and "Kilby is named" in last_prompt  # 2 restarts on each engine
    elif policy == "keep_last_k":
        assert "removed to fit" in last_prompt  # both earlier observations blanked
    else:
        assert "I will search." not in last_prompt and "bad json" in last_prompt  # only the newest exchange
    records = [record_from_dict(TokenRollout, json.loads(line)) for path in (tmp_path / "token_rollouts").glob("*.jsonl")
               for line in path.read_text().splitlines()]
    assert [r.id.split("#")[1:] for r in records] == [[], ["1"], ["2"]][: restarts + 1]
    assert all(check(r, tokenizer) is None for r in records)
    from webdancer_rl.rollout_stats import RolloutStats

    from webdancer.typed import to_dict

    [stats] = [record_from_dict(RolloutStats, json.loads(line)) for line in next((tmp_path / "rollout_stats").glob("rollouts-*")).read_text().splitlines()]
    assert {**to_dict(stats), "question_id": "", "key": ""} == to_dict(trl_out.stats()) and stats.segments == restarts + 1


async def test_max_turn_tokens_caps_each_verl_turn(prepared, tokenizer):
    cfg, data = prepared
    server = ScriptedServer(tokenizer, [render_assistant("done", answer="x")])
    seen = []
    generate = server.generate

    async def record(request_id, *, prompt_ids, sampling_params, **kw):
        seen.append(sampling_params.get("max_tokens"))
        return await generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kw)

    server.generate = record
    loop = verl_loop(tokenizer, data, server)
    loop.limits = type(loop.limits)(**{**loop.limits.__dict__, "max_turn_tokens": 64})
    await loop.run({}, raw_prompt=[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], extra_info={})
    assert seen == [64]


def test_parser_uses_the_wire_rules(tokenizer):
    import asyncio

    from verl.experimental.agent_loop.tool_parser import ToolParser
    from verl.tools.schemas import OpenAIFunctionToolSchema
    from webdancer_rl.verl_agent import PARSER

    parser = ToolParser.get_tool_parser(PARSER, tokenizer)
    schema = OpenAIFunctionToolSchema.model_validate({"type": "function", "function": {"name": "search", "description": "d",
                                                      "parameters": {"type": "object", "properties": {"query": {"type": "array"}}, "required": ["query"]}}})

    def parse(text, end="<|im_end|>"):
        return asyncio.run(parser.extract_tool_calls(tokenizer(text + end)["input_ids"], [schema]))

    content, calls = parse(render_assistant("look", tool_call=ToolCall("search", {"query": ["a"]})))
    assert content == "look" and calls[0].name == "search" and json.loads(calls[0].arguments) == {"query": ["a"]}
    two = render_assistant("x", tool_call=ToolCall("search", {"query": ["a"]})) + "\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": [\"b\"]}}\n</tool_call>"
    [error] = parse(two)[1]  # hermes would run both; the wire format allows one call per turn: a format error
    assert error.name == "__webdancer_format_error__" and "Call one tool per turn" in json.loads(error.arguments)["error"]
    faked = render_assistant("x", tool_call=ToolCall("search", {"query": ["a"]})) + "\n<tool_response>made up</tool_response>"
    assert parse(faked)[1] == []  # a turn that writes its own observation gets no tool call
    assert parse(render_assistant("done", answer="Kilby"))[1] == []
    assert parse(render_assistant("look", tool_call=ToolCall("search", {"query": ["a"]})), end="")[1] == []  # cut: no end-of-turn token
    [error] = parse("<think>x</think> no call")[1]  # malformed: the agent's format-error observation, not the end
    assert error.name == "__webdancer_format_error__" and "No tool call and no answer" in json.loads(error.arguments)["error"]


def test_dapo_overrides_compose_with_verls_own_config(prepared, tmp_path):
    import verl
    from hydra import compose, initialize_config_dir
    from webdancer_rl.train import verl_overrides

    cfg, data = prepared
    cfg.rewards["answer"]["metric"] = "match"
    overrides = verl_overrides(cfg, data.train.parent, tmp_path)
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        c = compose(config_name="ppo_trainer", overrides=overrides)
    actor, rollout = c.actor_rollout_ref.actor, c.actor_rollout_ref.rollout
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode, actor.use_kl_loss) == (0.2, 0.28, "token-mean", False)
    assert c.algorithm.adv_estimator == "grpo" and c.algorithm.filter_groups.enable and c.algorithm.filter_groups.metric == "score"
    assert rollout.name == "vllm" and rollout.n == 8 and rollout.multi_turn.enable and rollout.multi_turn.format == "webdancer"
    assert rollout.agent.default_agent_loop == "webdancer_agent" and Path(rollout.multi_turn.tool_config_path) == data.tool_config
    assert c.reward.reward_manager.name == "dapo" and c.reward.custom_reward_function.reward_kwargs.weights.answer == 0.9
    assert c.reward.reward_kwargs.overlong_buffer_cfg.enable and c.reward.reward_kwargs.max_resp_len == 8192
    assert c.reward.custom_reward_function.reward_kwargs.options.answer.metric == "match"
    from verl.trainer.config import AlgoConfig
    from verl.utils.config import omega_conf_to_dataclass

    algo = omega_conf_to_dataclass(c.algorithm, AlgoConfig)  # verl's own typed check of what we set
    assert algo.filter_groups.enable and algo.filter_groups.max_num_gen_batches == 10


def test_patches_apply_to_the_pinned_verl(tmp_path):
    import subprocess
    import sys

    import verl

    root = Path(__file__).resolve().parents[2]
    script = root / "scripts" / "apply_patches.sh"
    ours = subprocess.run(["bash", str(script), "--check", "verl", sys.executable], capture_output=True, text=True, cwd=root)
    assert ours.returncode == 0, ours.stdout + ours.stderr  # every patch we keep applies to the installed verl

    # The check itself: a patch that applies is reported so, one whose context is gone fails.
    source = Path(verl.__file__).parent / "tools" / "base_tool.py"
    line = source.read_text().splitlines()[0]
    good = tmp_path / "good"
    good.mkdir()
    (good / "0001-x.patch").write_text(f"--- verl/tools/base_tool.py\n+++ verl/tools/base_tool.py\n@@ -1 +1 @@\n-{line}\n+{line} (patched)\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "0001-y.patch").write_text("--- verl/tools/base_tool.py\n+++ verl/tools/base_tool.py\n@@ -1 +1 @@\n-no such line in verl\n+x\n")
    env = {"PATH": "/usr/bin:/bin"}
    ok = subprocess.run(["bash", str(script), "--check", "verl", sys.executable], capture_output=True, text=True, cwd=root, env={**env, "PATCH_DIR": str(good)})
    assert ok.returncode == 0 and "applies:" in ok.stdout and source.read_text().splitlines()[0] == line
    fail = subprocess.run(["bash", str(script), "--check", "verl", sys.executable], capture_output=True, text=True, cwd=root, env={**env, "PATCH_DIR": str(bad)})
    assert fail.returncode == 1 and "DOES NOT APPLY" in fail.stderr
