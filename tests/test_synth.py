"""Stage 1: crawling, CrawlQA and E2HQA on the real offline web, and their LLM paths."""

import json

import pytest
from click.testing import CliRunner
from webdancer_synth.crawl import CrawlConfig, crawl, load_crawl
from webdancer_synth.crawlqa import CrawlQA, CrawlQAConfig
from webdancer_synth.e2hqa import E2HQA, E2HQAConfig, candidate_entities
from webfakes import Route, ScriptedSite

from webdancer.cli import cli
from webdancer.errors import ConfigError, OutageError, RecordError, WebdancerError
from webdancer.jsonl import read_records
from webdancer.records import QAItem
from webdancer.scoring import normalize_answer
from webdancer.synth import run_synthesizer
from webdancer.testing.fake_openai import FakeOpenAIServer

PAGE = '<html><head><title>{t}</title></head><body><main><h1>{t}</h1><p>{body}</p></main></body></html>'


def html(title, body):
    return Route(body=PAGE.format(t=title, body=body).encode())


async def test_crawler_bfs_same_site_robots_dedupe_and_resume(tmp_path):
    routes = {
        "/robots.txt": Route(body=b"User-agent: *\nDisallow: /private/\n", content_type="text/plain"),
        "/site/index.html": html("Home", '<a href="a.html">A</a> <a href="b.html#part">B</a> <a href="a.html">A again</a> '
                                 '<a href="https://example.org/x">out</a> <a href="../other/z.html">other site</a> '
                                 '<a href="/private/p.html">private</a> <a href="missing.html">gone</a>'),
        "/site/a.html": html("A", 'links <a href="b.html">B</a> <a href="c.html">C</a>'),
        "/site/b.html": html("B", "leaf"),
        "/site/c.html": html("C", 'deep <a href="d.html">D</a>'),
        "/site/d.html": html("D", "deeper"),
        "/private/p.html": html("P", "secret"),
        "/other/z.html": html("Z", "not this site"),
    }
    with ScriptedSite(routes) as site:
        store = tmp_path / "crawl.jsonl"
        cfg = CrawlConfig(root_url=site.url + "/site/index.html", max_pages=4, max_depth=3)
        pages = await crawl(cfg, store)
        assert {p.url.rsplit("/", 1)[1] for p in pages} == {"index.html", "a.html", "b.html", "c.html"}
        assert site.hits.get("/private/p.html") is None and site.hits.get("/other/z.html") is None
        assert site.hits["/site/a.html"] == 1  # deduped despite two links and a fragment
        before = dict(site.hits)
        cfg.max_pages = 10
        pages = await crawl(cfg, store)  # resume: only the frontier is fetched
        assert {p.url.rsplit("/", 1)[1] for p in pages} == {"index.html", "a.html", "b.html", "c.html", "d.html"}
        assert site.hits["/site/index.html"] == before["/site/index.html"]
        assert len(load_crawl(store)) == 5
        assert next(p for p in pages if p.url.endswith("d.html")).depth == 3


async def test_crawler_follows_redirects_only_inside_the_site(tmp_path):
    with ScriptedSite() as inner, ScriptedSite() as site:
        inner.routes["/secret"] = html("Secret", "internal")
        site.routes["/site/index.html"] = html("Home", '<a href="moved.html">moved</a> <a href="away.html">away</a>')
        site.routes["/site/moved.html"] = Route(status=301, headers={"Location": "/site/new.html"})
        site.routes["/site/new.html"] = html("New", "the page that moved")
        site.routes["/site/away.html"] = Route(status=302, headers={"Location": inner.url + "/secret"})
        pages = await crawl(CrawlConfig(root_url=site.url + "/site/index.html", max_pages=10), tmp_path / "c.jsonl")
    assert {p.url.rsplit("/", 1)[1] for p in pages} == {"index.html", "new.html"}
    assert inner.hits == {}  # never sent elsewhere on the site's say-so


async def test_crawl_of_unreachable_root_is_a_clear_error(tmp_path):
    from conftest import free_port

    with pytest.raises(WebdancerError, match="cannot reach"):
        await crawl(CrawlConfig(root_url=f"http://127.0.0.1:{free_port()}/"), tmp_path / "c.jsonl")
    with pytest.raises(WebdancerError, match="not an http"):
        await crawl(CrawlConfig(root_url="ftp://x/"), tmp_path / "c.jsonl")


@pytest.fixture(scope="module")
def crawlqa_items(local_web, tmp_path_factory):
    import asyncio

    web, _, _ = local_web
    out = tmp_path_factory.mktemp("synth") / "qa.jsonl"
    cfg = CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(out.with_name("crawl.jsonl")), max_pages=400, num_items=80)
    counts = asyncio.run(run_synthesizer(CrawlQA(cfg), out))
    return cfg, out, counts


def test_crawlqa_items_are_supported_unleaked_and_multi_hop(crawlqa_items):
    cfg, out, counts = crawlqa_items
    items = list(read_records(out, QAItem))
    assert counts["written"] == len(items) == 80
    pages = {p.url: p.text for p in load_crawl(cfg.crawl_store)}
    kinds = {i.provenance["kind"] for i in items}
    assert {"identify", "multi_hop", "temporal", "comparison"} <= kinds
    assert any(i.hops == 2 and len(i.provenance["hop_path"]) == 2 for i in items)
    for item in items:
        assert normalize_answer(item.answer) not in normalize_answer(item.question).split() or len(item.answer.split()) > 1
        assert f" {normalize_answer(item.answer)} " not in f" {normalize_answer(item.question)} "
        texts = [pages[u] for u in item.source_urls]
        if item.provenance["kind"] == "comparison":
            years = [int(y[:4]) for y in (t.split("Last updated: ")[1][:4] for t in texts)]
            assert abs(years[0] - years[1]) == int(item.answer)
        else:
            assert any(f" {normalize_answer(item.answer)} " in f" {normalize_answer(t)} " for t in texts), item
        assert len(item.answer.split()) <= 8 and item.tag == "crawlqa"


def test_crawlqa_refuses_an_unknown_kind_by_name(crawlqa_items):
    import dataclasses

    cfg, _, _ = crawlqa_items
    with pytest.raises(ConfigError, match=r"unknown kind\(s\) multihop; the kinds are identify, multi_hop.*chain"):
        CrawlQA(dataclasses.replace(cfg, kinds=["identify", "multihop"]))


async def test_chain_questions_need_six_entries_each_found_in_what_a_visit_shows(crawlqa_items, local_web, tmp_path):
    """Kind `chain` (long-horizon): 6 entries read in turn, each naming the next right after a quoted phrase; the
    visit tool's text of each entry (no links) shows that phrase and name, and the expert, reading them all, finds
    the answer in the last one."""
    import dataclasses

    from webdancer_synth.pages import page_name

    from webdancer.agent import Agent
    from webdancer.config import AgentConfig
    from webdancer.config_loader import load_config
    from webdancer.policies import build_policy
    from webdancer.tools import ToolBox

    cfg, _, _ = crawlqa_items
    titles = {p.url: p.title for p in load_crawl(cfg.crawl_store)}
    out = tmp_path / "chain.jsonl"
    counts = await run_synthesizer(CrawlQA(dataclasses.replace(cfg, kinds=["chain"], num_items=4)), out)
    items = list(read_records(out, QAItem))
    assert counts["written"] == len(items) == 4
    assert all(i.hops == 6 and len(i.source_urls) == 6 == len(set(i.source_urls)) and i.provenance["kind"] == "chain" for i in items)
    web, _, _ = local_web
    run = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null"])
    async with ToolBox.from_config(run.agent.tools, run.tools, 30) as toolbox:
        agent = Agent(build_policy("expert", {}, run.model), toolbox, AgentConfig(current_date="2026-11-24", max_turns=12))
        for item in items:
            traj = await agent.run(item.question, task=item)
            visits = [s for s in traj.steps if s.tool_call and s.tool_call.name == "visit"]
            assert traj.termination == "answered" and [s.tool_call.arguments["url"] for s in visits] == [[u] for u in item.source_urls]
            phrases = [p.split('"')[0] for p in item.question.split('right after the words "')[1:]]
            names = [page_name(titles[u]) for u in item.source_urls[1:]] + [item.answer]  # the entry each hop names
            shown = [" ".join(s.tool_result.content.split()) for s in visits]
            assert len(phrases) == 6
            for phrase, name, text in zip(phrases, names, shown):
                assert f"{phrase} {name}" in text, (phrase, name, text[max(0, text.find(phrase) - 100) :][:400])
            assert "I could not confirm" not in traj.steps[-1].thought  # the answer was in what it read


def test_crawlqa_resume_writes_nothing_twice(crawlqa_items):
    import asyncio

    cfg, out, _ = crawlqa_items
    again = asyncio.run(run_synthesizer(CrawlQA(cfg), out))
    assert again == {"written": 0, "already_there": 80}
    ids = [i.id for i in read_records(out, QAItem)]
    assert len(ids) == len(set(ids)) == 80


async def test_e2hqa_rewrites_over_two_rounds(crawlqa_items, local_web, tmp_path):
    web, _, _ = local_web
    _, seeds_file, _ = crawlqa_items
    out = tmp_path / "hard.jsonl"
    synth = E2HQA(E2HQAConfig(seed_file=str(seeds_file), rounds=2, search={"web_root": web.root}))
    await run_synthesizer(synth, out)
    items = list(read_records(out, QAItem))
    seeds = {i.id: i for i in read_records(seeds_file, QAItem)}
    assert len(items) >= 10
    assert any(i.provenance["round"] == 2 for i in items)
    for item in items:
        seed = seeds[item.provenance["seed_id"]]
        assert item.answer == seed.answer and item.question != seed.question
        assert f" {normalize_answer(item.answer)} " not in f" {normalize_answer(item.question)} "
        assert "described as" in item.question and item.provenance["evidence"]["url"].startswith(web.base_url)
        if item.provenance["round"] == 2:
            parent = next(i for i in items if i.id == item.provenance["parent_id"])
            assert parent.provenance["round"] == 1


def test_candidate_entities():
    q = 'How many years apart were the entries for "Python" and the language described as "A dialect of Lisp by MIT", according to Guido van Rossum?'
    found = candidate_entities(q, "7")
    assert found[0] == "Guido van Rossum" and "Python" in found
    assert "A dialect of Lisp by MIT" in found or all("Lisp" not in e for e in found[1:])
    assert "Python" not in candidate_entities(q, "Python")


async def test_crawlqa_llm_path_against_fake_and_garbage_counted(local_web, tmp_path):
    web, _, _ = local_web
    good = json.dumps({"question": "Which language did Guido van Rossum create in 1991?", "answer": "Python",
                       "type": "single_hop", "supporting_sentences": ["invented by Guido van Rossum"]})
    with FakeOpenAIServer(["not json at all", good, '{"question": 3}'], default=good) as srv:
        cfg = CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(tmp_path / "c.jsonl"), max_pages=5,
                            num_items=1, llm={"base_url": srv.base_url, "model": "writer"}, prompt_file="configs/prompts/crawlqa.txt")
        synth = CrawlQA(cfg)
        # The answer must appear in the walked pages: give the model's "Python" a walk that contains it.
        items = [i async for i in synth.generate()]
    prompt = srv.state.requests[0]["messages"][0]["content"]
    assert "## Page 1:" in prompt and "Return one JSON object" in prompt
    assert synth.gate.dropped["llm_unparseable"] >= 1
    assert all(i.provenance["generator"] == "llm" and i.provenance["model"] == "writer" for i in items)


async def test_an_llm_outage_stops_the_synthesis_instead_of_dropping_items(local_web, tmp_path):
    web, _, _ = local_web
    with FakeOpenAIServer(default=(503, "down")) as srv:
        cfg = CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(tmp_path / "c.jsonl"), max_pages=5,
                            num_items=1, llm={"base_url": srv.base_url, "model": "writer", "max_retries": 0},
                            prompt_file="configs/prompts/crawlqa.txt")
        synth = CrawlQA(cfg)
        with pytest.raises(OutageError, match="HTTP 503"):
            _ = [i async for i in synth.generate()]
    assert not synth.gate.dropped  # nothing was counted as a bad question


async def test_crawlqa_llm_path_with_the_tiny_model(tiny_server, local_web, tmp_path):
    """Real prompt plumbing against the CPU server: whatever the 135M model writes is parsed or counted."""
    serve_cfg, server = tiny_server
    web, _, _ = local_web
    from webdancer_models.serve import served_model_name

    llm = {"base_url": server.base_url, "model": served_model_name(serve_cfg), "max_tokens": 96, "temperature": 0.0}
    cfg = CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(tmp_path / "c.jsonl"), max_pages=5,
                        num_items=2, max_llm_calls=2, llm=llm, max_page_chars=400)
    synth = CrawlQA(cfg)
    items = [i async for i in synth.generate()]
    assert len(items) + sum(synth.gate.dropped.values()) == 2


def test_bad_seed_files(tmp_path):
    import asyncio

    bad = tmp_path / "seeds.jsonl"
    bad.write_text('{"question": "fine?", "answer": "yes"}\n{"answer": "no question"}\n')
    with pytest.raises(RecordError, match=r"seeds.jsonl:2: .*'question': is missing"):
        asyncio.run(run_synthesizer(E2HQA(E2HQAConfig(seed_file=str(bad))), tmp_path / "o.jsonl"))
    with pytest.raises(ConfigError, match="not found"):
        asyncio.run(run_synthesizer(E2HQA(E2HQAConfig(seed_file=str(tmp_path / "none.jsonl"))), tmp_path / "o.jsonl"))


def test_synth_cli_and_stats(local_web, tmp_path, crawlqa_items):
    web, _, _ = local_web
    _, qa_file, _ = crawlqa_items
    result = CliRunner().invoke(cli, ["synth", "stats", str(qa_file), "--json"])
    stats = json.loads(result.output)
    assert stats["items"] == 80 and stats["tag"] == {"crawlqa": 80} and set(stats["hops"]) == {"1", "2"}
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(cli, ["synth", "crawlqa", f"synth.crawlqa.root_url={web.base_url}/foldoc/python.html",
                                      "synth.crawlqa.num_items=5", "synth.crawlqa.max_pages=50", f"run.root={tmp_path}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "crawlqa: wrote 5 items" in result.output
    bad = CliRunner().invoke(cli, ["synth", "crawlqa", "synth.crawlqa.num_itmes=5"])
    assert bad.exit_code == 2 and "num_items" in bad.output


async def test_e2hqa_llm_path_against_fake(crawlqa_items, local_web, tmp_path):
    web, _, _ = local_web
    _, seeds_file, _ = crawlqa_items
    seeds = [i for i in read_records(seeds_file, QAItem) if '"' in i.question][:3]
    seed_file = tmp_path / "seeds.jsonl"
    seed_file.write_text("".join(json.dumps({"question": s.question, "answer": s.answer, "id": s.id}) + "\n" for s in seeds))

    def rewrite(request):
        prompt = request["messages"][0]["content"]
        entity = prompt.split('no longer names "', 1)[1].split('"', 1)[0]
        question = prompt.split("Question: ", 1)[1].split("\nAnswer", 1)[0]
        return json.dumps({"question": question.replace(entity, "a thing found by search")})

    with FakeOpenAIServer(default=rewrite) as srv:
        synth = E2HQA(E2HQAConfig(seed_file=str(seed_file), rounds=1, search={"web_root": web.root},
                                  llm={"base_url": srv.base_url, "model": "rewriter"}))
        await run_synthesizer(synth, tmp_path / "hard.jsonl")
    items = list(read_records(tmp_path / "hard.jsonl", QAItem))
    assert items and all("a thing found by search" in i.question and i.provenance["generator"] == "llm" for i in items)
    assert "Evidence about" in srv.state.requests[0]["messages"][0]["content"]
