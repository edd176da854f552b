"""A user's own corpus as the agent's web (`tools.search.backend: corpus`, `tools.visit.reader: corpus`): searched and
visited through the real tools, JSONL and parquet, with bad corpus files refused by line."""

from __future__ import annotations

import json
import os

import pytest
from webdancer_web.corpus import CorpusError, _open, load_corpus

from webdancer.records import ToolCall
from webdancer.tools import ToolBox

CITIES = ["Avalon", "Brinmoor", "Calderwick", "Dunhallow", "Elsmere", "Farrowdale", "Glenquist", "Harrowgate"]


def records() -> list[dict]:
    out = []
    for i, city in enumerate(CITIES):
        out.append({"id": f"c{i}", "title": f"{city} (town)", "url": f"https://wiki.example/{city}",
                    "text": f"{city} is a market town. Its river bridge was finished in {1700 + i * 13}. " + "Fields and farms. " * 30})
    out.append({"id": "notes", "title": "Notes on bridges", "text": "The oldest bridge of the region spans the Quillwater near Dunhallow."})
    return out


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def toolbox(corpus: str, index_dir) -> ToolBox:
    options = {"search": {"backend": "corpus", "corpus": corpus, "corpus_index_dir": str(index_dir), "top_k": 3},
               "visit": {"reader": "corpus", "corpus": corpus, "corpus_index_dir": str(index_dir), "cache_dir": None}}
    return ToolBox.from_config(["search", "visit"], options, 30)


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
async def test_the_agent_searches_and_visits_a_users_corpus(tmp_path, kind):
    if kind == "jsonl":
        corpus = write_jsonl(tmp_path / "wiki.jsonl", records())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = records()
        pq.write_table(pa.table({k: [r.get(k) for r in rows] for k in ("id", "title", "text", "url")}), tmp_path / "wiki.parquet")
        corpus = str(tmp_path / "wiki.parquet")
    tools = toolbox(corpus, tmp_path / "index")
    async with tools:
        found = (await tools.run(ToolCall("search", {"query": ["Calderwick river bridge"]}))).content
        assert "https://wiki.example/Calderwick" in found and "Calderwick (town)" in found and "1726" in found  # snippet from the text
        assert "corpus://notes" in (await tools.run(ToolCall("search", {"query": ["Quillwater bridge"]}))).content  # no url: corpus://<id>
        page = (await tools.run(ToolCall("visit", {"url": ["https://wiki.example/Calderwick"], "goal": "when was the bridge finished"}))).content
        assert "1726" in page
        assert "Quillwater" in (await tools.run(ToolCall("visit", {"url": ["corpus://notes"], "goal": "the oldest bridge"}))).content
        missing = (await tools.run(ToolCall("visit", {"url": ["https://wiki.example/Nowhere"], "goal": "x"}))).content
        assert "not in the corpus" in missing  # an observation, not a crash
    assert len(list((tmp_path / "index").iterdir())) == 1  # search and visit share one index
    assert tools.tools["search"].backend.searcher is tools.tools["visit"].reader.corpus  # loaded once


def test_the_index_is_built_once_and_again_when_the_corpus_changes(tmp_path):
    corpus = write_jsonl(tmp_path / "wiki.jsonl", records())
    first = load_corpus(corpus, str(tmp_path / "index"), "tools.search.corpus")
    built = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "index").iterdir()}
    _open.cache_clear()  # read it from disk again
    again = load_corpus(corpus, str(tmp_path / "index"), "tools.search.corpus")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "index").iterdir()} == built and len(again) == len(first) == 9
    write_jsonl(tmp_path / "wiki.jsonl", records()[:3])
    os.utime(tmp_path / "wiki.jsonl", ns=(1, 1))  # a different mtime even within one clock tick
    _open.cache_clear()  # read it from disk again
    assert len(load_corpus(corpus, str(tmp_path / "index"), "tools.search.corpus")) == 3
    assert len(list((tmp_path / "index").iterdir())) == 2 and not list((tmp_path / "index").glob("*.tmp-*"))


@pytest.mark.parametrize("lines, message", [
    (['{"id": 1, "title": "a", "text": "x"}', '{"id": 2, "title": "b", "text": "y"}', '{"id": 3, "text": "z"}'], r"wiki\.jsonl, line 3: missing field\(s\) title"),
    (['{"id": 1, "title": "a", "text": "x"}', '{"id": 2, "title": "b", "text": "y"}', '{"id": 1, "title": "c", "text": "z"}'], r"line 3: duplicate id '1' \(first at line 1\)"),
    (['{"id": 1, "title": "a", "text": "x", "url": "u"}', '{"id": 2, "title": "b", "text": "y", "url": "u"}'], r"line 2: duplicate url 'u' \(first at line 1\)"),
    (['{"id": 1, "title": "a", "text": "x"}', "{oops"], r"line 2: not JSON"),
    ([""], r"no records"),
])
def test_a_bad_corpus_is_refused_naming_the_line(tmp_path, lines, message):
    (tmp_path / "wiki.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        load_corpus(str(tmp_path / "wiki.jsonl"), str(tmp_path / "index"), "tools.search.corpus")
    assert not list((tmp_path / "index").glob("*")) if (tmp_path / "index").exists() else True  # nothing half-built left


def test_a_missing_or_unset_corpus_names_the_setting(tmp_path):
    with pytest.raises(CorpusError, match="tools.search.corpus is empty"):
        toolbox("", tmp_path / "index")
    with pytest.raises(CorpusError, match="tools.search.corpus: no corpus file at"):
        toolbox(str(tmp_path / "nope.jsonl"), tmp_path / "index")
    (tmp_path / "wiki.csv").write_text("id,title\n")
    with pytest.raises(CorpusError, match=r"must be a \.jsonl or \.parquet file"):
        toolbox(str(tmp_path / "wiki.csv"), tmp_path / "index")
