"""Synthesizer `crawlqa`: crawl a site, walk its links, write questions whose answers sit in the walked pages."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from webdancer.prompt_template import PromptTemplate
from webdancer.records import QAItem, stable_id
from webdancer.synth import Synthesizer
from webdancer_synth.checks import QualityGate
from webdancer_synth.crawl import CrawlConfig, CrawledPage, crawl
from webdancer_synth.llm import ask_json, make_client
from webdancer_synth.pages import PageFacts, facts, page_name, year_in

KINDS = ["identify", "multi_hop", "comparison", "temporal", "counting"]
# Long-horizon: `chain_hops` entries read one after another, each naming the next (not in the default mix).
LONG_KINDS = ["chain"]
CHAIN_PAGE_CHARS = 5000  # a chain page's text must fit the visit tool's answer (visit.max_tokens x 4 = 6,000 chars) whole
CHAIN_PHRASE_WORDS = 4


@dataclass
class CrawlQAConfig(CrawlConfig):
    """The crawl's own options (root_url: default the local web's FOLDOC entry for Python, set from `web.*`),
    then what is written from the pages."""

    max_pages: int = 600
    site_name: str = "FOLDOC"
    crawl_store: str = ""  # default: runs/<run.name>/crawl.jsonl
    num_items: int = 200
    seed: int = 0
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    # An OpenAI-compatible model (ModelConfig fields) writes the questions; empty = structural generator.
    llm: dict[str, Any] = field(default_factory=dict)
    prompt_file: str = "configs/prompts/crawlqa.txt"
    max_page_chars: int = 1500
    max_llm_calls: int = 0  # 0 = five per wanted item
    chain_hops: int = 6  # kind `chain`: entries read before the answer, each found in the text of the one before


class CrawlQA(Synthesizer):
    name = "crawlqa"
    Config = CrawlQAConfig

    def __init__(self, config: Optional[CrawlQAConfig] = None):
        super().__init__(config)
        unknown = [k for k in self.config.kinds if k not in KINDS + LONG_KINDS]
        if unknown or not self.config.kinds:
            from webdancer.errors import ConfigError

            raise ConfigError(f"synth.crawlqa.kinds={self.config.kinds}: {'unknown kind(s) ' + ', '.join(unknown) if unknown else 'empty'}; "
                              f"the kinds are {', '.join(KINDS + LONG_KINDS)}")
        if self.config.chain_hops < 2:
            from webdancer.errors import ConfigError

            raise ConfigError(f"synth.crawlqa.chain_hops={self.config.chain_hops}: a chain reads at least 2 entries")
        self.gate = QualityGate()
        self.pages: list[CrawledPage] = []

    async def generate(self) -> AsyncIterator[QAItem]:
        cfg = self.config
        if not cfg.root_url:
            from webdancer.errors import ConfigError

            raise ConfigError("synth.crawlqa.root_url is empty: give the site's root URL")
        self.pages = await crawl(cfg, Path(cfg.crawl_store))
        rng = random.Random(cfg.seed)
        if cfg.llm:
            async for item in self._llm_items(rng):
                yield item
            return
        for item in self._structural_items(rng):
            yield item

    # --- deterministic: questions from page structure (names, masked first sentences, dates, senses, links) ---

    def _structural_items(self, rng: random.Random):
        cfg = self.config
        info: dict[str, PageFacts] = {}
        for page in sorted(self.pages, key=lambda p: p.url):
            f = facts(page.url, page.title, page.text)
            if f is not None:
                info[page.url] = f
        texts = {p.url: p.text for p in self.pages}
        links = {p.url: [l for l in p.links if l in info] for p in self.pages}
        # `chain` walks every crawled page (a chain may pass through pages without a usable description), by its links
        self._all_links = {p.url: p.links for p in self.pages}
        self._texts, self._names = texts, {p.url: page_name(p.title) for p in self.pages if page_name(p.title)}
        urls = sorted(info)
        if not urls:
            return
        made, attempts = 0, 0
        kinds = [k for k in KINDS + LONG_KINDS if k in cfg.kinds]
        while made < cfg.num_items and attempts < cfg.num_items * 40:
            kind = kinds[attempts % len(kinds)]
            attempts += 1
            built = getattr(self, f"_q_{kind}")(rng, urls, info, links)
            if built is None:
                continue
            question, answer, path, hops, computed_from = built
            # A computed answer (a year gap) is supported when its inputs are in the pages.
            support = [answer] if computed_from and all(y in texts[u] for y, u in zip(computed_from, path)) else [texts[u] for u in path]
            if not self.gate.admit(question, answer, support):
                continue
            made += 1
            yield QAItem(
                question=question,
                answer=answer,
                id=stable_id("crawlqa", question, answer),
                tag="crawlqa",
                hops=hops,
                source_urls=path,
                provenance={
                    "kind": kind,
                    "generator": "structural",
                    "hop_path": path,
                    "supporting_sentences": [_sentence_with(texts[u], answer) or (info[u].first_sentence if u in info else "") for u in path],
                },
            )

    def _q_identify(self, rng, urls, info, links):
        p = info[rng.choice(urls)]
        q = f'Which entry of {self.config.site_name} is described as follows: "{p.description}"?'
        return q, p.name, [p.url], 1, None

    def _q_temporal(self, rng, urls, info, links):
        p = info[rng.choice(urls)]
        year = year_in(p.first_sentence)
        if year:
            blanked = p.first_sentence.replace(year, "____", 1)
            q = f'According to {self.config.site_name}, which year fills the blank in its entry for "{p.name}": "{blanked}"?'
            return q, year, [p.url], 1, None
        if p.updated:
            q = f'In which year was the {self.config.site_name} entry described as "{p.description}" last updated?'
            return q, p.updated[:4], [p.url], 1, None
        return None

    def _q_multi_hop(self, rng, urls, info, links):
        start = rng.choice(urls)
        targets = [u for u in links.get(start, []) if info[u].updated]
        if not targets:
            return None
        a, b = info[start], info[rng.choice(targets)]
        thing = b.category or "related entry"
        q = (
            f'{self.config.site_name}\'s entry described as "{a.description}" mentions a {thing} described as '
            f'"{b.description}". In which year was the entry for that {thing} last updated?'
        )
        return q, b.updated[:4], [a.url, b.url], 2, None

    def _q_comparison(self, rng, urls, info, links):
        x, y = (info[u] for u in rng.sample(urls, 2))
        if not x.updated or not y.updated or x.updated[:4] == y.updated[:4]:
            return None
        gap = abs(int(x.updated[:4]) - int(y.updated[:4]))
        q = f'On {self.config.site_name}, how many years apart were the last updates of the entries for "{x.name}" and "{y.name}"?'
        return q, str(gap), [x.url, y.url], 2, [x.updated, y.updated]

    def _q_chain(self, rng, urls, info, links):
        """Read `chain_hops` entries in turn: each one's text names the next right after a phrase the question quotes,
        so every hop is found in what the visit tool shows (the page's text; it has no links), and the answer, the
        entry the last one names, is known only after reading all of them."""
        hops, names = self.config.chain_hops, self._names
        budget = [500]  # pages tried per question: a depth-first walk that backs out of dead ends

        def extend(chain: list[str], phrases: list[str]) -> bool:
            if len(chain) > hops:
                return True
            text = self._texts[chain[-1]]
            options = sorted((target, phrase) for target in set(self._all_links[chain[-1]]) if target not in chain and target in names
                             for phrase in [_lead_in(text, names[target])] if phrase)
            rng.shuffle(options)
            for target, phrase in options:
                budget[0] -= 1
                if budget[0] < 0:
                    return False
                chain.append(target)
                phrases.append(phrase)
                if extend(chain, phrases):
                    return True
                chain.pop()
                phrases.pop()
            return False

        chain, phrases = [rng.choice(sorted(names))], []
        if not extend(chain, phrases):
            return None
        first, answer = names[chain[0]], names[chain[-1]]
        steps = "; in that entry, ".join(f'the entry named right after the words "{p}"' for p in phrases)
        q = (f'Start at the {self.config.site_name} entry "{first}". In its text, find {steps}. '
             f"Which entry does the last one name there?")
        return q, answer, chain[:-1], hops, None

    def _q_counting(self, rng, urls, info, links):
        candidates = [u for u in urls if info[u].senses >= 2]
        if not candidates:
            return None
        p = info[rng.choice(candidates)]
        q = f'How many distinct numbered senses does the {self.config.site_name} entry for "{p.name}" list?'
        return q, str(p.senses), [p.url], 1, None

    # --- LLM: the model writes a question from a random walk of 1-4 linked pages ---

    async def _llm_items(self, rng: random.Random):
        cfg = self.config
        client = make_client(cfg.llm, "synth.crawlqa.llm")
        template = PromptTemplate.from_file(cfg.prompt_file, fields=("pages",))
        by_url = {p.url: p for p in self.pages}
        urls = sorted(by_url)
        made, attempts = 0, 0
        try:
            budget = cfg.max_llm_calls or cfg.num_items * 5
            while made < cfg.num_items and attempts < budget:
                attempts += 1
                walk = [by_url[rng.choice(urls)]]
                for _ in range(rng.randint(0, 3)):
                    nxt = [l for l in walk[-1].links if l in by_url and by_url[l] not in walk]
                    if not nxt:
                        break
                    walk.append(by_url[rng.choice(nxt)])
                pages = "\n\n".join(f"## Page {i + 1}: {p.title} ({p.url})\n{p.text[: cfg.max_page_chars]}" for i, p in enumerate(walk))
                data = await ask_json(client, template.fill(pages=pages))
                if not data or not isinstance(data.get("question"), str) or not isinstance(data.get("answer"), str):
                    self.gate.dropped["llm_unparseable"] += 1
                    continue
                question, answer = data["question"].strip(), data["answer"].strip()
                if not self.gate.admit(question, answer, [p.text for p in walk]):
                    continue
                made += 1
                path = [p.url for p in walk]
                yield QAItem(
                    question=question,
                    answer=answer,
                    id=stable_id("crawlqa", question, answer),
                    tag="crawlqa",
                    hops=len(walk),
                    source_urls=path,
                    provenance={
                        "kind": str(data.get("type") or "unknown"),
                        "generator": "llm",
                        "model": client.config.model,
                        "hop_path": path,
                        "supporting_sentences": [s for s in data.get("supporting_sentences") or [] if isinstance(s, str)],
                    },
                )
        finally:
            await client.aclose()


def _lead_in(text: str, name: str) -> str:
    """The CHAIN_PHRASE_WORDS words before a place `name` appears in `text` (as a whole word, on one line), when
    those words appear nowhere else: what a reader finds without the page's links."""
    if len(text) > CHAIN_PAGE_CHARS or len(name) < 3:
        return ""
    flat = " ".join(text.split())
    for found in re.finditer(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text):
        if text[found.start() - 1 : found.start()] != " ":  # the phrase, a space, the name: nothing glued to it
            continue
        line_start = text.rfind("\n", 0, found.start()) + 1
        words = text[line_start : found.start()].split()
        if len(words) < CHAIN_PHRASE_WORDS:
            continue
        phrase = " ".join(words[-CHAIN_PHRASE_WORDS:])
        if '"' not in phrase and flat.count(phrase) == 1:
            return phrase
    return ""


def _sentence_with(text: str, answer: str) -> str:
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
        if answer.lower() in sentence.lower():
            return sentence.strip()
    return ""
