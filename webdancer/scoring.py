"""Answer normalization, exact match and token F1 (the fallback when no LLM judge is configured)."""

from __future__ import annotations

import re
import string
from collections import Counter

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.I)
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """SQuAD-style normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, reference: str) -> bool:
    """True when the normalized reference appears as whole words in the prediction (long answers)."""
    ref = normalize_answer(reference)
    return bool(ref) and f" {ref} " in f" {normalize_answer(prediction)} "


def matches(answer: str, reference: str, f1_threshold: float = 0.8) -> bool:
    """Correct without a judge model: exact match, containment in a short answer, or token F1.

    A long answer is judged by its emphasized spans (**...**), where prose answers put the fact.
    """
    for cand in [answer] + _BOLD.findall(answer):
        short = len(cand.split()) <= max(8, 3 * len(reference.split()))
        if exact_match(cand, reference) or (short and contains_answer(cand, reference)) or token_f1(cand, reference) >= f1_threshold:
            return True
    return False
