"""The wire chat template: ChatML that renders every turn of an agent conversation exactly as it was written.

The agent sends tool calls as text in assistant turns and tool results as user turns wrapped in
<tool_response>; this template renders those unchanged, and maps `tool_calls` / role `tool` (what
verl and OpenAI clients send) onto the same text, so SFT, RL and inference see one text.

Some published templates do not render history verbatim: QwQ-32B drops the thoughts of earlier
turns, Qwen3 rewrites `</think>\\n` as `</think>\\n\\n`. A multi-turn rollout is append-only (what the
model generated stays in its context), so such a model is trained and served with this template
instead, keeping the model's own generation prefix (QwQ opens each turn with `<think>\\n`).
"""

from __future__ import annotations

from typing import Any, Optional

TURN_END = "<|im_end|>"
ASSISTANT = "<|im_start|>assistant\n"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The agent thinks: templates with a thinking switch (Qwen3, llama.cpp's copy of QwQ's) are read with it on.
THINKING = {"enable_thinking": True}


def _jinja_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def wire_chat_template(generation_prefix: str = "", default_system: str = DEFAULT_SYSTEM) -> str:
    """The template; `generation_prefix` opens every assistant turn (added to history turns that lack it)."""
    prefix = _jinja_string(generation_prefix)
    system = (
        "{%- if loop.first and messages[0]['role'] != 'system' %}"
        "{{- '<|im_start|>system\\n" + _jinja_string(default_system) + "<|im_end|>\\n' }}"
        "{%- endif %}"
    ) if default_system else ""
    return (
        "{%- for message in messages %}"
        + system +
        "{%- if message['role'] == 'tool' %}"
        "{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' }}"
        "{%- elif message['role'] == 'assistant' %}"
        "{%- set text = message['content'] or '' %}"
        "{{- '<|im_start|>assistant\\n' }}"
        "{%- if not text.startswith('" + prefix + "') %}{{- '" + prefix + "' }}{%- endif %}"
        "{{- text }}"
        "{%- for call in message.get('tool_calls') or [] %}"
        "{%- set fn = call['function'] if call.get('function') else call %}"
        "{%- set args = fn['arguments'] %}"
        "{%- if not loop.first or (text and not text.endswith('\\n')) %}{{- '\\n' }}{%- endif %}"
        "{{- '<tool_call>\\n{\"name\": ' + (fn['name'] | tojson) + ', \"arguments\": ' + (args if args is string else (args | tojson)) + '}\\n</tool_call>' }}"
        "{%- endfor %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n" + prefix + "' }}{%- endif %}"
    )


WIRE_CHATML_TEMPLATE = wire_chat_template()


def generation_prefix(tokenizer: Any, chat_template: Optional[str] = None) -> str:
    """What the template puts after `<|im_start|>assistant\\n` when asked for a generation prompt (QwQ: `<think>\\n`)."""
    probe = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    text = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True, chat_template=chat_template, **THINKING)
    return text.rsplit(ASSISTANT, 1)[1] if ASSISTANT in text else ""


def probe_conversation(prefix: str = "") -> list[dict[str, str]]:
    """An agent conversation in the wire format: two tool turns (thoughts, a call, an observation) and an answer."""
    call = '<tool_call>\n{"name": "search", "arguments": {"query": ["x"]}}\n</tool_call>'
    return [
        {"role": "system", "content": "You are a web agent."},
        {"role": "user", "content": "Question?"},
        {"role": "assistant", "content": f"{prefix or '<think>' + chr(10)}first thought\n</think>\n{call}"},
        {"role": "user", "content": "<tool_response>\n1. [page](http://x)\n</tool_response>"},
        {"role": "assistant", "content": f"{prefix or '<think>' + chr(10)}second thought\n</think>\n{call}"},
        {"role": "user", "content": "<tool_response>\nmore\n</tool_response>"},
        {"role": "assistant", "content": f"{prefix or '<think>' + chr(10)}done\n</think>\n<answer>\nX\n</answer>"},
    ]


def renders_verbatim(tokenizer: Any, chat_template: Optional[str] = None) -> bool:
    """Whether the template renders an agent conversation turn for turn as written (history included)."""
    prefix = generation_prefix(tokenizer, chat_template)
    messages = probe_conversation(prefix)
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, chat_template=chat_template, **THINKING)
    verbatim = "".join(f"<|im_start|>{m['role']}\n{m['content']}{TURN_END}\n" for m in messages)
    return rendered == verbatim


def wire_template_for(tokenizer: Any) -> Optional[str]:
    """None when the tokenizer's own template already renders agent conversations verbatim, else the wire
    template with the model's generation prefix (and its default system prompt)."""
    if renders_verbatim(tokenizer):
        return None
    return wire_chat_template(generation_prefix(tokenizer), _default_system(tokenizer))


def _default_system(tokenizer: Any) -> str:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "u"}], tokenize=False, **THINKING)
    head = "<|im_start|>system\n"
    return text[len(head):].split(TURN_END, 1)[0] if text.startswith(head) else ""
