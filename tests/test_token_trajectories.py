"""Token-exact rollouts: `webdancer traj check` re-renders what was trained with the chat template and finds the
turn where a template gives other tokens back."""

import json

from click.testing import CliRunner
from webdancer_models.chat_template import wire_chat_template
from webdancer_rl.rollout import ChatTokens

from webdancer.cli import cli
from webdancer.config import AgentConfig
from webdancer.environment import Episode
from webdancer.records import Sampled, ToolCall
from webdancer.token_trajectories import Drift, TokenRollout, check, conversation, rollouts_of, segments
from webdancer.tools import ToolBox
from webdancer.typed import to_dict
from webdancer.wire import initial_messages, render_assistant


def rollout(tokenizer, end_on_observation=False):
    """Built as the TRL engine builds one: the prompt rendered, each model turn's sampled ids closed by EOS, each
    observation the tokens the chat template puts after a model turn."""
    chat = ChatTokens(tokenizer)
    prompt = [{"role": m.role, "content": m.content} for m in initial_messages("Who built the first IC?", [], "2026-12-07")]
    turns = [render_assistant("I should search", tool_call=ToolCall("search", {"query": ["first integrated circuit"]})),
             render_assistant("found it", answer="Jack Kilby")]
    observation = "1. Jack Kilby built the first integrated circuit at Texas Instruments in 1958."
    completion, model = [], []
    for i, text in enumerate(turns[:1] if end_on_observation else turns):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        completion += ids
        model += [1] * len(ids)
        if i == 0:
            obs = chat.observation(observation)
            completion += obs
            model += [0] * len(obs)
    return TokenRollout(id="q1:0", step=1, engine="trl", prompt=prompt, prompt_ids=chat.prompt(prompt), completion_ids=completion,
                        loss_mask=list(model), model_mask=model, reward=1.0, end="answer")


def thoughts_dropped(template):
    """A template that leaves out the thoughts of earlier assistant turns (as QwQ-32B's published one does)."""
    assert template.count("{{- text }}") == 1
    return template.replace("{{- text }}", "{%- if loop.last %}{{- text }}{%- else %}{{- text.split('</think>')[-1] | trim }}{%- endif %}")


def test_the_wire_template_renders_a_rollout_back_to_its_tokens(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    for record in (rollout(tokenizer), rollout(tokenizer, end_on_observation=True)):
        assert [value for _, _, value in segments(record.model_mask)] == ([1, 0, 1] if record.model_mask[-1] else [1, 0])
        messages = conversation(record, tokenizer)
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"] + (["assistant"] if record.model_mask[-1] else [])
        assert messages[3]["content"].startswith("1. Jack Kilby") and messages[2]["content"].startswith("<think>")
        assert check(record, tokenizer) is None


def test_a_template_that_drops_earlier_thoughts_is_caught_at_the_first_model_turn(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    record = rollout(tokenizer)
    tokenizer.chat_template = thoughts_dropped(wire_chat_template())
    drift = check(record, tokenizer)
    assert drift is not None and drift.kind == "model" and drift.turn == 0
    assert len(record.prompt_ids) <= drift.position < len(record.prompt_ids) + 3  # the turn's first tokens: "<think>" is gone
    assert "think>\nI should search" in drift.sampled and "I should search" not in drift.rendered and drift.cause == "template"


def test_traj_check_passes_on_good_rollouts_and_fails_naming_the_turn_on_a_broken_template(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    path = tmp_path / "token_rollouts.jsonl"
    path.write_text("".join(json.dumps(to_dict(r)) + "\n" for r in (rollout(tokenizer), rollout(tokenizer, end_on_observation=True))))
    good = CliRunner().invoke(cli, ["traj", "check", str(path), "--model", str(tiny_model)])
    assert good.exit_code == 0, good.output
    assert good.output.startswith("2 rollouts: the chat template renders every turn's text as it was sampled\n")
    broken = tmp_path / "broken.jinja"
    broken.write_text(thoughts_dropped(wire_chat_template()))
    bad = CliRunner().invoke(cli, ["traj", "check", str(path), "--model", str(tiny_model), "--chat-template", str(broken)])
    assert bad.exit_code == 1 and "q1:0: turn 0 (model) differs" in bad.output and "(template)" in bad.output
    assert "2 of 2 rollouts drift in their text (model turns)" in bad.output
    path.write_text('{"id": "q1:0", "step": "one"}\n')
    wrong = CliRunner().invoke(cli, ["traj", "check", str(path), "--model", str(tiny_model)])
    assert wrong.exit_code != 0 and "token_rollouts.jsonl:1" in wrong.output and "step" in wrong.output


def test_a_tokenization_the_text_does_not_give_back_is_told_apart_from_template_drift(tiny_model, tmp_path):
    """The model may sample a text in tokens that encoding the text would not give (" Kil" "by" for " Kilby"), or be cut
    mid-word: the text a template renders is right, the tokens are not the sampled ones."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    record = rollout(tokenizer)
    first_turn = segments(record.model_mask)[0]
    text = tokenizer.decode(record.completion_ids[first_turn[0]:first_turn[1] - 1])
    spelled = [tid for ch in text for tid in tokenizer(ch, add_special_tokens=False)["input_ids"]]  # character by character
    assert tokenizer.decode(spelled) == text and len(spelled) > first_turn[1] - 1
    ids = spelled + [tokenizer.eos_token_id]
    record.completion_ids = ids + record.completion_ids[first_turn[1]:]
    record.model_mask = record.loss_mask = [1] * len(ids) + record.model_mask[first_turn[1]:]
    drift = check(record, tokenizer)
    assert drift is not None and drift.cause == "tokenization" and drift.kind == "model" and drift.turn == 0
    cut = rollout(tokenizer, end_on_observation=True)
    cut.completion_ids, cut.model_mask, cut.loss_mask = cut.completion_ids[:7], [1] * 7, [1] * 7  # a turn cut by the length limit
    assert check(cut, tokenizer) is None  # rendered open, as it was cut
    path = tmp_path / "token_rollouts.jsonl"
    path.write_text(json.dumps(to_dict(record)) + "\n" + json.dumps(to_dict(cut)) + "\n")
    lenient = CliRunner().invoke(cli, ["traj", "check", str(path), "--model", str(tiny_model)])
    assert lenient.exit_code == 0 and "1 sampled a tokenization that re-encoding their text does not give back" in lenient.output
    strict = CliRunner().invoke(cli, ["traj", "check", str(path), "--model", str(tiny_model), "--strict"])
    assert strict.exit_code == 1


async def sampled_trajectory(tokenizer, server_tokenizer, cut: str = "", prompt_of=None):
    """A trajectory as a server asked for token ids gives it: each turn's prompt rendered by the server's template from
    the prompt messages (`prompt_of(messages, episode)`, default the conversation so far), the completion's ids (`cut`:
    what the model wrote past a stop string, in the ids only)."""
    chat = ChatTokens(server_tokenizer)
    async with ToolBox.from_config([], {}, 30) as toolbox:
        episode = Episode(toolbox, AgentConfig(current_date="2026-12-07"), "Who built the first IC?")
        turns = ["<think>\nI recall it\n</think>\nno call here", "<think>\nstill thinking\n</think>\nnor here",
                 render_assistant("found it", answer="Jack Kilby")]
        for text in turns:
            messages = list(episode.trajectory.messages)
            messages = prompt_of(messages, episode) if prompt_of else messages
            prompt = chat.prompt([{"role": m.role, "content": m.content} for m in messages])
            completion = tokenizer(text + cut, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            await episode.step(text, sampled=Sampled(prompt, completion, [-0.5] * len(completion)))
    return episode.trajectory


async def test_a_sampled_trajectory_keeps_each_turns_new_tokens_and_checks_as_one_rollout(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    traj = await sampled_trajectory(tokenizer, tokenizer)
    first, second, _ = (s.tokens for s in traj.steps)
    assert first.reused == 0 and second.reused == len(first.prompt_ids) + len(first.completion_ids)  # stored once
    assert tokenizer.decode(second.prompt_ids).lstrip().startswith("<|im_start|>user\n<tool_response>\n[format error]")
    [record] = rollouts_of(traj, tokenizer)
    assert isinstance(record, TokenRollout) and [v for _, _, v in segments(record.model_mask)] == [1, 0, 1, 0, 1]
    assert record.logprobs[: len(first.completion_ids)] == [-0.5] * len(first.completion_ids) and 0.0 in record.logprobs
    assert check(record, tokenizer) is None
    dropping = AutoTokenizer.from_pretrained(tiny_model)
    dropping.chat_template = thoughts_dropped(wire_chat_template())
    assert check(record, dropping).cause == "template"  # rendered by another template, the same record drifts
    # A server whose template re-renders the earlier turn otherwise: the trajectory drifts where its prompt did.
    [served] = rollouts_of(await sampled_trajectory(tokenizer, dropping), tokenizer)
    assert isinstance(served, Drift) and (served.turn, served.kind, served.cause) == (0, "model", "template")
    [cut] = rollouts_of(await sampled_trajectory(tokenizer, tokenizer, cut="<tool_response>made up"), tokenizer)
    assert isinstance(cut, Drift) and cut.cause == "cut" and cut.turn == 0 and "made up" in cut.sampled


async def test_a_context_policys_rewrites_and_restarts_are_told_apart_from_drift(tiny_model):
    from transformers import AutoTokenizer
    from webdancer_context.summarize import summary_message

    from webdancer.context import TRUNCATED
    from webdancer.records import Message, Segment
    from webdancer.wire import render_tool_response

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)

    def blanked(messages, episode):  # blank_old blanked the first observation before the third turn
        return [Message("user", render_tool_response(TRUNCATED)) if i == 3 and len(messages) > 5 else m for i, m in enumerate(messages)]

    [rewritten] = rollouts_of(await sampled_trajectory(tokenizer, tokenizer, prompt_of=blanked), tokenizer)
    assert isinstance(rewritten, Drift) and (rewritten.turn, rewritten.kind, rewritten.cause) == (1, "observation", "context")

    def restarted(messages, episode):  # a summary before the third turn: its prompt is the system prompt, the question, the summary
        if len(messages) > 5 and not episode.trajectory.segments:
            episode.trajectory.segments.append(Segment(step=2, start=len(messages), prompt=messages[:2] + [summary_message("Kilby, 1958")],
                                                       summary="Kilby, 1958", prompt_tokens=0))
        segment = episode.trajectory.segments[-1] if episode.trajectory.segments else None
        return segment.prompt + messages[segment.start:] if segment else messages

    records = rollouts_of(await sampled_trajectory(tokenizer, tokenizer, prompt_of=restarted), tokenizer)
    assert [type(r) for r in records] == [TokenRollout, TokenRollout] and records[1].id.endswith("#1")
    assert records[1].prompt[2]["content"].endswith("Kilby, 1958") and [v for _, _, v in segments(records[1].model_mask)] == [1]
    assert all(check(r, tokenizer) is None for r in records)
