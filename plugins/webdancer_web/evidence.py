"""Turning page text into evidence and a summary for a goal: BM25-ranked passages, or an extractor model's JSON."""

from __future__ import annotations

import re
from typing import Optional

import bm25s

from webdancer.llm import parse_json_object


def passages(text: str, target: int = 500) -> list[str]:
    """Paragraph-sized passages: short paragraphs merged up to ~`target` chars, long ones kept whole."""
    out, buf = [], ""
    for para in (p.strip() for p in re.split(r"\n+", text)):
        if not para:
            continue
        buf = f"{buf}\n{para}" if buf else para
        if len(buf) >= target:
            out.append(buf)
            buf = ""
    if buf:
        out.append(buf)
    return out


def extractive_evidence(text: str, goal: str, budget_chars: int) -> tuple[str, str]:
    """BM25-rank the page's passages against the goal; evidence = the best ones in page order."""
    parts = passages(text)
    if not parts:
        return "", "The page has no readable text."
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(parts, stopwords="en", show_progress=False), show_progress=False)
    query = bm25s.tokenize([goal], stopwords="en", show_progress=False)
    order: list[int] = []
    if any(len(ids) for ids in query.ids):
        docs, sc = retriever.retrieve(query, k=len(parts), show_progress=False, n_threads=1)
        order = [int(d) for d, s in zip(docs[0], sc[0]) if s > 0]
    if not order:  # nothing matches the goal: the page opening is the honest evidence
        evidence = "\n".join(parts)[:budget_chars]
        opening = " ".join(re.split(r"(?<=[.!?])\s+", " ".join(parts[:2]))[:2])
        return evidence, "The page does not clearly address the goal. It begins: " + opening[:400]
    chosen, used = [], 0
    for idx in order:
        if used + len(parts[idx]) > budget_chars and chosen:
            continue
        chosen.append(idx)
        used += len(parts[idx])
        if used >= budget_chars:
            break
    evidence = "\n".join(parts[i] for i in sorted(chosen))[:budget_chars]
    top = parts[order[0]]
    sentences = re.split(r"(?<=[.!?])\s+", top)
    return evidence, " ".join(sentences[:2]).strip()


def parse_extractor_reply(text: str) -> Optional[dict[str, str]]:
    """The extractor's reply: a JSON object with string `summary` and `evidence` (a string or a list)."""
    data = parse_json_object(text)
    if data is None or not isinstance(data.get("evidence"), (str, list)) or not isinstance(data.get("summary"), str):
        return None
    if isinstance(data["evidence"], list):
        data["evidence"] = "\n".join(str(x) for x in data["evidence"])
    return data


def format_visit(url: str, goal: str, evidence: str, summary: str) -> str:
    return (
        f"The useful information in {url} for user goal {goal} as follows: \n\n"
        f"Evidence in page: \n{evidence}\n\nSummary: \n{summary}\n\n"
    )
