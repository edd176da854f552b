import json

import pytest

from webdancer.records import ToolCall
from webdancer.wire import (
    initial_messages,
    parse_assistant,
    render_assistant,
    render_tool_call,
    render_tool_response,
    unwrap_tool_response,
)

STR_LIST = {"type": "array", "items": {"type": "string"}}
TOOLS = {
    "search": {"type": "object", "properties": {"query": STR_LIST}, "required": ["query"]},
    "visit": {"type": "object", "properties": {"url": STR_LIST, "goal": {"type": "string"}}, "required": ["url", "goal"]},
}


def call_text(payload, think="need facts"):
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return f"<think>{think}</think>\n<tool_call>\n{body}\n</tool_call>"


def test_well_formed_tool_call():
    turn = parse_assistant(call_text({"name": "search", "arguments": {"query": ["a", "b"]}}), TOOLS)
    assert turn.error is None
    assert turn.tool_call == ToolCall("search", {"query": ["a", "b"]})
    assert turn.thought == "need facts"
    assert turn.answer is None


def test_well_formed_answer():
    turn = parse_assistant("<think>\nsettled\n</think>\n<answer>\nEpsom Derby\n</answer>", TOOLS)
    assert (turn.error, turn.answer, turn.thought) == (None, "Epsom Derby", "settled")


def test_short_cot_thought_without_think_tags():
    turn = parse_assistant('I should search.\n<tool_call>{"name": "search", "arguments": {"query": ["x"]}}</tool_call>', TOOLS)
    assert turn.error is None and turn.thought == "I should search."


def test_reasoning_model_close_tag_only():
    turn = parse_assistant("long reasoning here</think><answer>42</answer>", TOOLS)
    assert turn.answer == "42" and turn.thought == "long reasoning here"


def test_double_encoded_arguments_are_accepted():
    args = json.dumps({"query": ["x"]})
    turn = parse_assistant(call_text({"name": "search", "arguments": args}), TOOLS)
    assert turn.error is None and turn.tool_call.arguments == {"query": ["x"]}


def test_own_tool_response_is_cut_and_flagged():
    text = call_text({"name": "search", "arguments": {"query": ["x"]}}) + "\n<tool_response>\ninvented\n</tool_response>"
    turn = parse_assistant(text, TOOLS)
    assert turn.wrote_tool_response
    assert "invented" not in turn.text
    assert turn.tool_call is not None


MALFORMED = [
    ("empty", "", "empty"),
    ("whitespace", "   \n ", "empty"),
    ("no call no answer", "<think>hmm</think> I think so.", "No tool call and no answer"),
    ("bad json", call_text('{"name": "search", "arguments": {"query": ["x"]'), "not valid JSON"),
    ("json not object", call_text('["search"]'), "must be a JSON object"),
    ("missing name", call_text({"arguments": {"query": ["x"]}}), "no \"name\""),
    ("name not string", call_text({"name": 3, "arguments": {}}), "no \"name\""),
    ("unknown tool", call_text({"name": "browse", "arguments": {"url": "x"}}), "no tool named 'browse'"),
    ("missing arguments", call_text({"name": "search"}), "has no \"arguments\""),
    ("arguments not object", call_text({"name": "search", "arguments": ["x"]}), "must be a JSON object"),
    ("missing required", call_text({"name": "visit", "arguments": {"url": ["http://a"]}}), "missing required argument 'goal'"),
    ("wrong type", call_text({"name": "search", "arguments": {"query": "just a string"}}), "must be array of string"),
    ("wrong item type", call_text({"name": "search", "arguments": {"query": [1, 2]}}), "must be array of string"),
    ("unknown argument", call_text({"name": "search", "arguments": {"query": ["x"], "k": 5}}), "unknown argument 'k'"),
    ("extra keys", call_text({"name": "search", "arguments": {"query": ["x"]}, "id": 1}), "Unexpected keys"),
    ("unclosed call", '<think>x</think><tool_call>{"name": "search", "arguments": {"query": ["x"]}}', "not closed"),
    ("unclosed answer", "<think>x</think><answer>Paris", "not closed"),
    ("empty answer", "<think>x</think><answer>  </answer>", "empty"),
    ("two answers", "<think>x</think><answer>a</answer><answer>b</answer>", "exactly one <answer>"),
    ("call and answer", call_text({"name": "search", "arguments": {"query": ["x"]}}) + "<answer>a</answer>", "not both"),
    ("two calls", call_text({"name": "search", "arguments": {"query": ["x"]}}) + '<tool_call>{"name": "search", "arguments": {"query": ["y"]}}</tool_call>', "one tool per turn"),
    ("unclosed think", "<think>still thinking <answer>a</answer>", "not closed with </think>"),
    ("two thinks", "<think>a</think><think>b</think><answer>c</answer>", "one <think>"),
]


@pytest.mark.parametrize("label,text,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_turns_become_error_messages(label, text, message):
    turn = parse_assistant(text, TOOLS)
    assert turn.error is not None, label
    assert message in turn.error
    assert turn.tool_call is None and turn.answer is None


def test_render_parse_round_trip():
    call = ToolCall("visit", {"url": ["http://127.0.0.1/x"], "goal": "find the year"})
    text = render_assistant("I will read it", tool_call=call)
    turn = parse_assistant(text, TOOLS)
    assert turn.tool_call == call and turn.thought == "I will read it"
    assert render_tool_call(call) in text
    answer = parse_assistant(render_assistant("done", answer="1964"), TOOLS)
    assert answer.answer == "1964"
    assert unwrap_tool_response(render_tool_response("obs\nline")) == "obs\nline"
    with pytest.raises(ValueError):
        render_assistant("x")


def test_initial_messages_embed_tools_and_question():
    schemas = [{"name": n, "description": "d", "parameters": p} for n, p in TOOLS.items()]
    system, user = initial_messages("Who won?", schemas, "2026-11-24")
    assert system.role == "system" and "2026-11-24" in system.content
    assert user.content.endswith("User: Who won?")
    block = user.content.split("<tools>")[1].split("</tools>")[0]
    assert json.loads("[" + block + "]") == schemas


def test_tools_block_is_rendered_once_per_distinct_schema_set():
    """The block is cached by the schemas' content, not by the list: a schema changed in place renders anew."""
    from webdancer.wire import _tools_block, render_tools_block

    schemas = [{"name": n, "description": "d — é", "parameters": p} for n, p in TOOLS.items()]
    plain = ",\n".join(json.dumps(s, ensure_ascii=False, indent=2) for s in schemas)
    hits = _tools_block.cache_info().hits
    assert render_tools_block(schemas) == plain and render_tools_block(list(schemas)) == plain
    assert _tools_block.cache_info().hits == hits + 1
    schemas[0]["description"] = "changed"
    assert "changed" in render_tools_block(schemas) and render_tools_block(schemas) != plain


def test_every_reference_assistant_turn_parses(reference_dir):
    """The reference release's own trajectories are ground truth for the parser."""
    tools = dict(TOOLS)
    turns = answers = 0
    with open(reference_dir / "sample_traj.jsonl") as fh:
        for line in fh:
            rec = json.loads(line)
            for msg in rec["messages"]:
                if msg["role"] != "assistant":
                    continue
                turn = parse_assistant(msg["content"], tools)
                assert turn.error is None, (turn.error, msg["content"][-300:])
                assert turn.thought
                turns += 1
                answers += turn.answer is not None
    assert turns >= 300 and answers == 150


def test_user_system_prompt_fills_date_and_keeps_doubled_braces(tmp_path):
    prompt = tmp_path / "system.txt"
    prompt.write_text('You research on {date}. Reply as {{"answer": "..."}}.\n', encoding="utf-8")
    system, _ = initial_messages("q?", [], "2026-11-25", str(prompt))
    assert system.content == 'You research on 2026-11-25. Reply as {"answer": "..."}.'


@pytest.mark.parametrize(
    "text, expected",
    [
        ('Reply as {"answer": "..."} on {date}', r'system\.txt uses \{"answer"\}.*placeholders are \{date\}.*\{\{'),
        ("Today is {date", r"system\.txt: .*write a literal brace as \{\{"),
        ("Today is {when}", r"system\.txt uses \{when\}"),
    ],
)
def test_broken_prompt_file_is_a_config_error_naming_it(tmp_path, text, expected):
    from webdancer.errors import ConfigError

    prompt = tmp_path / "system.txt"
    prompt.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected):
        initial_messages("q?", [], "2026-11-25", str(prompt))


def test_judge_prompt_without_the_answer_is_refused(tmp_path):
    from webdancer_rewards import JudgeReward, JudgeRewardConfig

    from webdancer.errors import ConfigError

    prompt = tmp_path / "judge.txt"
    prompt.write_text("Is {reference} the answer to {question}?", encoding="utf-8")
    cfg = JudgeRewardConfig(model={"base_url": "http://127.0.0.1:9", "model": "judge"}, prompt_file=str(prompt))
    with pytest.raises(ConfigError, match=r"judge\.txt lacks \{answer\}"):
        JudgeReward(cfg)
    missing = JudgeRewardConfig(model=cfg.model, prompt_file=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match=r"nope\.txt not found"):
        JudgeReward(missing)
