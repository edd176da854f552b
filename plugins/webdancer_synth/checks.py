"""Checks every synthesized QA item must pass: supported, not leaked, short, not a near-duplicate."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from webdancer.scoring import normalize_answer

_WORD = re.compile(r"\w+")


def answer_supported(answer: str, texts: list[str]) -> bool:
    """The normalized answer occurs as whole words in some provenance text."""
    needle = f" {normalize_answer(answer)} "
    return needle.strip() != "" and any(needle in f" {normalize_answer(t)} " for t in texts)


def leaks_answer(question: str, answer: str) -> bool:
    ans = normalize_answer(answer)
    return bool(ans) and f" {ans} " in f" {normalize_answer(question)} "


def short_answer(answer: str, max_words: int = 8) -> bool:
    return 0 < len(answer.split()) <= max_words


def _shingles(text: str) -> set[str]:
    words = normalize_answer(text).split()
    return {" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))}


@dataclass
class QualityGate:
    """Applies the checks in order and counts why items were dropped."""

    max_words: int = 8
    dup_threshold: float = 0.8
    dropped: Counter = field(default_factory=Counter)
    _seen: list[set[str]] = field(default_factory=list)

    def remember(self, question: str) -> None:
        self._seen.append(_shingles(question))

    def admit(self, question: str, answer: str, support: list[str]) -> bool:
        reason = None
        if not short_answer(answer, self.max_words):
            reason = "answer_too_long"
        elif leaks_answer(question, answer):
            reason = "answer_in_question"
        elif not answer_supported(answer, support):
            reason = "unsupported_answer"
        else:
            sh = _shingles(question)
            if any(len(sh & old) / max(1, len(sh | old)) >= self.dup_threshold for old in self._seen):
                reason = "near_duplicate"
        if reason:
            self.dropped[reason] += 1
            return False
        self._seen.append(_shingles(question))
        return True
