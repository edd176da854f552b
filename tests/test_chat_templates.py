"""One text for SFT, RL and inference, for the GPU recipes' model families too (Qwen2.5-Instruct, QwQ-32B, Qwen3).

For one exported trajectory: the text LLaMA-Factory's `qwen` template trains on, the token stream the
RL rollouts build (the layout verl's agent loop builds: tests/verl_side checks the two are the same
tokens) and what the served model sees at every turn must be one text. The published templates come
from scripts/fetch_chat_templates.sh; the tokenizer is the tiny model's (its ChatML special tokens are
the Qwen ones), so no weights are needed.
"""

import json
import shutil

import pytest
from conftest import ROOT
from webdancer_models.chat_template import WIRE_CHATML_TEMPLATE, generation_prefix, renders_verbatim, wire_template_for
from webdancer_models.export import install_wire_template
from webdancer_rl.rollout import ChatTokens
from webdancer_sft.config import SftConfig
from webdancer_sft.export import export_sft
from webdancer_sft.train import inspect_dataset

from webdancer.jsonl import read_records
from webdancer.records import Trajectory

TEMPLATES = ROOT / ".cache" / "chat_templates"
FAMILIES = {"qwen2.5": "Qwen-Qwen2.5-7B-Instruct", "qwq": "Qwen-QwQ-32B", "qwen3": "Qwen-Qwen3-0.6B"}


@pytest.fixture(scope="module")
def published():
    missing = [f for f in FAMILIES.values() if not (TEMPLATES / f"{f}.jinja").is_file()]
    if missing:
        pytest.fail(f"{TEMPLATES} lacks {missing}: run `bash scripts/fetch_chat_templates.sh` (scripts/test.sh does)")
    return {family: (TEMPLATES / f"{name}.jinja").read_text() for family, name in FAMILIES.items()}


def with_template(tiny_model, folder, template):
    """The tiny model's tokenizer files with another chat template (what a Qwen checkpoint's folder holds)."""
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json"):
        if (tiny_model / name).is_file():
            shutil.copy(tiny_model / name, folder / name)
    (folder / "chat_template.jinja").write_text(template)
    return AutoTokenizer.from_pretrained(str(folder))


def test_which_published_templates_render_agent_conversations_verbatim(published, tiny_model, tmp_path):
    tok = with_template(tiny_model, tmp_path / "m", WIRE_CHATML_TEMPLATE)
    assert renders_verbatim(tok) and generation_prefix(tok) == ""
    assert renders_verbatim(tok, published["qwen2.5"]) and generation_prefix(tok, published["qwen2.5"]) == ""
    # QwQ opens every turn with "<think>\n" and drops the thoughts of earlier turns; Qwen3 rewrites "</think>\n" as "</think>\n\n".
    assert not renders_verbatim(tok, published["qwq"]) and generation_prefix(tok, published["qwq"]) == "<think>\n"
    assert not renders_verbatim(tok, published["qwen3"]) and generation_prefix(tok, published["qwen3"]) == ""


@pytest.mark.parametrize("family", list(FAMILIES))
def test_sft_rl_and_inference_see_one_text(family, published, tiny_model, expert_trajectories, sft_venv, tmp_path):
    folder = tmp_path / family
    tok = with_template(tiny_model, folder, published[family])
    changed = install_wire_template(folder)  # what `webdancer sft train` does to the checkpoint it writes
    assert (changed is None) == (family == "qwen2.5")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    assert renders_verbatim(tok)
    prefix = generation_prefix(tok)
    traj = next(t for t in read_records(expert_trajectories, Trajectory) if len(t.steps) >= 2)
    messages = [{"role": m.role, "content": m.content} for m in traj.messages]

    # Inference: at each turn the server renders the conversation so far; each is a prefix of the whole.
    served = tok.apply_chat_template(messages, tokenize=False)
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            seen = tok.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            assert served.startswith(seen) and served[len(seen):].startswith(m["content"][len(prefix):] if m["content"].startswith(prefix) else m["content"])

    # RL: the prompt, then what the model generates each turn (after the template's prefix) and the observations.
    chat = ChatTokens(tok)
    ids = chat.prompt(messages[:2])
    for m in messages[2:]:
        if m["role"] == "assistant":
            text = m["content"][len(prefix):] if m["content"].startswith(prefix) else m["content"]
            ids += tok(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        else:
            ids += chat.observation(m["content"][len("<tool_response>\n"):-len("\n</tool_response>")])
    assert tok.decode(ids) + "\n" == served

    # SFT: LLaMA-Factory's own loader with the `qwen` template.
    data = tmp_path / "data"
    (tmp_path / "one.jsonl").write_text(next(line for line in expert_trajectories.read_text().splitlines()
                                               if json.loads(line)["id"] == traj.id) + "\n")
    export_sft(tmp_path / "one.jsonl", data)
    [example] = inspect_dataset(SftConfig(model_path=str(folder), venv=str(sft_venv), template="qwen", cutoff_len=8192), data)["examples"]
    assert example["text"] == served
    if family != "qwen2.5":  # what serving with the published template would have shown the model
        assert tok.apply_chat_template(messages, tokenize=False, chat_template=published[family]) != served


def test_wire_template_keeps_the_generation_prefix_for_history_turns(published, tiny_model, tmp_path):
    tok = with_template(tiny_model, tmp_path / "m", published["qwq"])
    template = wire_template_for(tok)
    turn = "thought\n</think>\n<answer>\nX\n</answer>"  # what QwQ generates after its prefix
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": turn}]
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=template)
    assert text.endswith("<|im_start|>assistant\n<think>\n" + turn + "<|im_end|>\n")
    # a turn stored with its prefix renders the same
    same = messages[:2] + [{"role": "assistant", "content": "<think>\n" + turn}]
    assert tok.apply_chat_template(same, tokenize=False, chat_template=template) == text


def test_rl_refuses_a_model_whose_template_rewrites_history_and_the_cli_fixes_it(published, tiny_model, tmp_path):
    from click.testing import CliRunner
    from webdancer_rl.train import check_chat_template

    from webdancer.cli import cli
    from webdancer.errors import ConfigError
    from webdancer.plugins import get_plugins

    get_plugins().add_commands(cli)
    folder = tmp_path / "qwq"
    with_template(tiny_model, folder, published["qwq"])
    with pytest.raises(ConfigError, match="re-renders earlier turns"):
        check_chat_template(str(folder))
    check = CliRunner().invoke(cli, ["model", "template", str(folder)])
    assert check.exit_code == 1 and "--install" in check.output
    fixed = CliRunner().invoke(cli, ["model", "template", str(folder), "--install"])
    assert fixed.exit_code == 0 and "'<think>\\n'" in fixed.output
    check_chat_template(str(folder))  # now accepted
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
