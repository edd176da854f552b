"""Synthesizer `e2hqa`: make easy questions hard by replacing named entities with descriptions found by search."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from webdancer.errors import ConfigError
from webdancer.jsonl import read_records
from webdancer.prompt_template import PromptTemplate
from webdancer.records import QAItem, stable_id
from webdancer.synth import Synthesizer
from webdancer_synth.checks import QualityGate, leaks_answer
from webdancer_synth.llm import ask_json, make_client
from webdancer_synth.pages import mask, page_name

_QUOTED = re.compile(r'"([^"]{3,80})"')
_CAPITALIZED = re.compile(r"\b([A-Z][\w.+#-]*(?:\s+(?:of|the|de|van|von|and|&)?\s*[A-Z][\w.+#-]*)*)")
_QUESTION_WORDS = {"Which", "What", "Who", "When", "Where", "How", "In", "On", "According", "The", "A", "An", "This", "That"}


@dataclass
class E2HQAConfig:
    seed_file: str = ""
    rounds: int = 2
    # Options of the search tool used to look entities up (default: the local web's index).
    search: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)
    prompt_file: str = "configs/prompts/e2hqa.txt"
    limit: int = 0  # 0 = every seed item


def _unquoted(question: str) -> str:
    return _QUOTED.sub(" ", question)


def candidate_entities(question: str, answer: str) -> list[str]:
    """Short quoted names, then capitalized phrases outside quotes, longest first; never the answer.

    Text inside longer quotes is a description from an earlier round and is left alone.
    """
    found = [m.group(1) for m in _QUOTED.finditer(question) if len(m.group(1).split()) <= 5]
    for m in _CAPITALIZED.finditer(_unquoted(question)):
        words = m.group(1).strip().split()
        while words and words[0] in _QUESTION_WORDS:
            words = words[1:]
        phrase = " ".join(words).rstrip(".")
        if len(phrase) >= 3 and phrase not in found:
            found.append(phrase)
    ans = answer.lower()
    return [e for e in sorted(found, key=len, reverse=True) if e.lower() != ans and ans not in e.lower()]


def clean_description(snippet: str, entity: str) -> tuple[str, str]:
    """(category, first defining sentence with the entity masked) from a search snippet."""
    text = " ".join(snippet.split())
    if text.lower().startswith(entity.lower()):
        text = text[len(entity) :].strip()
    category = ""
    tag = re.search(r"<([a-z][\w ,/-]*)>\s*", text[:160])  # FOLDOC: synonyms, then <category>, then the definition
    if tag:
        category, text = tag.group(1), text[tag.end() :]
    text = re.sub(r"^(?:/[^/]{1,40}/\s*)", "", text)  # pronunciation
    text = re.sub(r"^\([^()]{0,80}\)\s*", "", text)  # a leading aside
    sentence = re.split(r"(?<=[.!?])\s+", text)[0]
    return category, mask(sentence, entity).rstrip(". ")


class E2HQA(Synthesizer):
    name = "e2hqa"
    Config = E2HQAConfig

    def __init__(self, config: Optional[E2HQAConfig] = None):
        super().__init__(config)
        self.gate = QualityGate()

    async def generate(self) -> AsyncIterator[QAItem]:
        from webdancer.plugins import get_plugins

        cfg = self.config
        if not cfg.seed_file:
            raise ConfigError("synth.e2hqa.seed_file is empty: give a QA JSONL file (reference sample_qa.jsonl schema or crawlqa output)")
        if not Path(cfg.seed_file).is_file():
            raise ConfigError(f"seed file {cfg.seed_file} not found")
        seeds = list(read_records(cfg.seed_file, QAItem))
        if cfg.limit:
            seeds = seeds[: cfg.limit]
        # The registered `search` tool, as the agent gets it; its backend answers with structured hits.
        tool = get_plugins().build("tools", "search", cfg.search, "synth.e2hqa.search")
        client = make_client(cfg.llm, "synth.e2hqa.llm")
        template = PromptTemplate.from_file(cfg.prompt_file, fields=("entity", "question", "evidence"), optional=("answer",)) if client else None
        try:
            for seed in seeds:
                question, used, parent = seed.question, set(), seed.id
                for round_no in range(1, cfg.rounds + 1):
                    step = await self._rewrite(tool, client, template, question, seed.answer, used)
                    if step is None:
                        break
                    new_q, entity, evidence = step
                    used.add(entity.lower())
                    item = QAItem(
                        question=new_q,
                        answer=seed.answer,
                        id=stable_id("e2hqa", seed.id, str(round_no), new_q),
                        tag="e2hqa",
                        hops=seed.hops + round_no,
                        source_urls=list(dict.fromkeys(seed.source_urls + [evidence["url"]])),
                        provenance={
                            "round": round_no,
                            "difficulty": round_no,
                            "seed_id": seed.id,
                            "parent_id": parent,
                            "replaced_entity": entity,
                            "evidence": evidence,
                            "generator": "llm" if client else "structural",
                        },
                    )
                    parent, question = item.id, new_q
                    yield item
        finally:
            await tool.aclose()
            if client is not None:
                await client.aclose()

    async def _rewrite(self, tool, client, template, question, answer, used):
        for entity in candidate_entities(question, answer):
            if entity.lower() in used:
                continue
            hits = await tool.backend.search(entity, 5)
            hit = next((h for h in hits if page_name(h.title).lower() == entity.lower()), None)
            if hit is None:
                self.gate.dropped["entity_not_found"] += 1
                continue
            category, description = clean_description(hit.snippet, entity)
            usable = len(description.split()) >= 6 and '"' not in description and "this subject" not in description
            if not usable:
                self.gate.dropped["no_usable_description"] += 1
                continue
            evidence = {"url": hit.url, "title": hit.title, "snippet": hit.snippet, "query": entity}
            if client is not None:
                data = await ask_json(client, template.fill(entity=entity, question=question, answer=answer, evidence=hit.snippet))
                new_q = (data or {}).get("question")
                if not isinstance(new_q, str) or not new_q.strip():
                    self.gate.dropped["llm_unparseable"] += 1
                    continue
                new_q = new_q.strip()
            else:
                thing = (category.split(",")[0].strip() or "subject") if category else "subject"
                replacement = f'the {thing} described as "{description}"'
                if f'"{entity}"' in question:
                    new_q = question.replace(f'"{entity}"', replacement, 1)
                else:
                    new_q = _replace_outside_quotes(question, entity, replacement)
            if new_q == question or entity.lower() in _unquoted(new_q).lower():
                self.gate.dropped["entity_still_named"] += 1
                continue
            if leaks_answer(new_q, answer):
                self.gate.dropped["answer_in_question"] += 1
                continue
            return new_q, entity, evidence
        return None


def _replace_outside_quotes(question: str, entity: str, replacement: str) -> str:
    parts = re.split(r'("[^"]*")', question)
    for i, part in enumerate(parts):
        if i % 2 == 0 and entity in part:
            parts[i] = part.replace(entity, replacement, 1)
            break
    return "".join(parts)
