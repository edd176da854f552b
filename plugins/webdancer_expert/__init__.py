"""Rollout policy `expert`: an offline demonstrator that browses the way the QA item's provenance says.

It searches with the question's words, visits the pages its provenance names (one per turn, with
the question as the goal), and answers with the reference answer, writing short, honest thoughts
that say what it does and what it saw. It exists so the embedded default can produce correct
trajectories without a strong model; every trajectory it makes is labelled `policy: expert`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from webdancer import hookimpl
from webdancer.policies import Policy, PolicyOutput
from webdancer.records import Message, QAItem, ToolCall
from webdancer.scoring import normalize_answer
from webdancer.wire import render_assistant, unwrap_tool_response

_STOP = set("a an the of in on at to for by with from and or is was were what which who whom when where how does did do "
            "that this these those it its as be been entry described follows according last updated year".split())


@dataclass
class ExpertConfig:
    max_query_words: int = 10


def search_query(question: str, max_words: int) -> str:
    """The question's content words, quoted phrases first: what a person would type."""
    quoted = re.findall(r'"([^"]+)"', question)
    words = [w for w in re.findall(r"[\w.+#-]+", re.sub(r'"[^"]+"', " ", question)) if w.lower() not in _STOP]
    query = " ".join(quoted[:1] + words)
    return " ".join(query.split()[:max_words])


class ExpertPolicy(Policy):
    name = "expert"
    Config = ExpertConfig

    @property
    def model_name(self) -> str:
        return "expert-demonstrator"

    async def act(self, messages: list[Message], task: Optional[QAItem] = None) -> PolicyOutput:
        if task is None:
            raise ValueError("the expert policy needs a QA item with provenance (it demonstrates, it does not reason)")
        observations = [o for o in (unwrap_tool_response(m.content) for m in messages if m.role == "user") if o is not None]
        pages = list(dict.fromkeys(task.provenance.get("hop_path") or task.source_urls))
        if len(messages) <= 2:  # nothing done yet
            query = search_query(task.question, self.config.max_query_words)
            thought = f"I need to find the facts this question depends on. I will search for: {query}."
            return PolicyOutput(render_assistant(thought, tool_call=ToolCall("search", {"query": [query]})))
        # Where it is: the pages its own turns (or a summary of them) name, not the tool results, which a context
        # policy may have blanked or summarized away, and whose search results name pages it has not read.
        own = " ".join(m.content for m in messages[2:] if m.role == "assistant" or unwrap_tool_response(m.content) is None)
        read = 0
        while read < len(pages) and re.search(re.escape(pages[read]) + r"(?![\w/.#?%-])", own):
            read += 1
        if read < len(pages):
            url = pages[read]
            seen = "The results list this page" if observations and url in observations[-1] else "This page is where the facts should be"
            thought = f"{seen}: {url}. I will read it with the question as my goal."
            return PolicyOutput(render_assistant(thought, tool_call=ToolCall("visit", {"url": [url], "goal": task.question})))
        found = any(f" {normalize_answer(task.answer)} " in f" {normalize_answer(o)} " for o in observations)
        basis = "The pages I read state it" if found else "I could not confirm it in what I read, but this is the answer the pages support"
        thought = f"{basis}: the answer is {task.answer}."
        return PolicyOutput(render_assistant(thought, answer=task.answer))


@hookimpl
def register_policies(register):
    register(ExpertPolicy)
