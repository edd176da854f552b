"""The offline web: build, serve over real HTTP, and the search/visit tools on it."""

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from webdancer_web.config import SearchConfig, VisitConfig
from webdancer_web.search import SearchTool
from webdancer_web.visit import VisitTool
from webfakes import FakeJina, FakeSerper, Route, ScriptedSite

from webdancer.agent import Agent
from webdancer.config import AgentConfig, ModelConfig
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError, OutageError, WebdancerError
from webdancer.jsonl import iter_json_lines
from webdancer.policies import build_policy
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant


def test_build_writes_page_store_index_and_manifest(local_web):
    web, stats, _ = local_web
    assert stats.per_site["python"] == 80 and stats.per_site["foldoc"] > 2000
    pages = [obj for _, obj in iter_json_lines(f"{web.root}/pages.jsonl")]
    assert len(pages) == stats.pages >= 500
    python = next(p for p in pages if p["url"].endswith("/foldoc/python.html"))
    assert python["title"] == "Python - FOLDOC"
    assert "Guido van Rossum" in python["text"] and "1991" in python["text"]
    assert any(link.endswith("/foldoc/abc.html") for link in python["links"])
    manifest = json.loads(open(f"{web.root}/manifest.json").read())
    assert manifest["base_url"] == web.base_url and [s["name"] for s in manifest["sites"]] == ["python", "foldoc"]


def test_server_status_codes_types_redirects(local_web):
    web, _, server = local_web
    base = server.url
    assert server.url == web.base_url
    with httpx.Client() as client:
        home = client.get(base + "/")
        assert home.status_code == 200 and "/foldoc/" in home.text
        page = client.get(base + "/foldoc/python.html")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        css = client.get(base + "/python/_static/pygments.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert client.get(base + "/foldoc/no-such-entry.html").status_code == 404
        assert client.get(base + "/nosite/").status_code == 404
        assert client.get(base + "/python/../../../../etc/passwd").status_code == 404
        folder = client.get(base + "/python/library")
        assert folder.status_code == 301 and folder.headers["location"] == "/python/library/"
        redirects = json.loads(open(f"{web.root}/sites/foldoc.json").read())["redirects"]
        alias, target = next(iter(redirects.items()))
        moved = client.get(f"{base}/foldoc/{alias}")
        assert moved.status_code == 301 and moved.headers["location"] == f"/foldoc/{target}"
        assert client.get(f"{base}/foldoc/{alias}", follow_redirects=True).status_code == 200
        index = client.get(base + "/foldoc/")  # the site's index, not the FOLDOC entry "index"
        assert index.status_code == 200 and "Free On-line Dictionary of Computing</h1>" in index.text
        assert client.get(base + "/foldoc/index-2.html").text.count("<h1>index</h1>") == 1
        one, two = client.get(base + "/foldoc/actor.html"), client.get(base + "/foldoc/actor-2.html")
        assert "<h1>Actor</h1>" in one.text and "concurrent process" in two.text  # two entries, two pages
        assert one.headers["last-modified"] and int(one.headers["content-length"]) == len(one.content)


def test_foldoc_pages_have_unique_paths_and_aliases_hide_no_page(local_web):
    """FOLDOC has 193 headwords that two entries share: each entry is a page of its own (one URL in the page store,
    one page served), and no redirect alias takes a page's path."""
    web, _, _ = local_web
    pages = [obj for _, obj in iter_json_lines(f"{web.root}/pages.jsonl") if obj["site"] == "foldoc"]
    urls = [p["url"] for p in pages]
    assert len(urls) == len(set(urls)) > 12_000
    table = json.loads(open(f"{web.root}/sites/foldoc.json").read())
    assert set(table["pages"]) == {p["path"] for p in pages}
    assert not set(table["redirects"]) & set(table["pages"])
    assert set(table["redirects"].values()) <= set(table["pages"])


def test_a_rebuild_swaps_the_pack_and_the_running_server_keeps_its_own(tmp_path):
    """A generated site is a pack: a rebuild writes a new data file and switches the table to it, removing the old
    data (and a folder of pages from builds before packs); a server started before the rebuild still serves."""
    from conftest import FOLDOC, free_port
    from webdancer_web.build import build_web
    from webdancer_web.config import SiteConfig
    from webdancer_web.server import LocalWebServer

    sites = [SiteConfig("foldoc", "foldoc", str(FOLDOC.parent), max_pages=50)]
    (tmp_path / "sites" / "foldoc").mkdir(parents=True)
    (tmp_path / "sites" / "foldoc" / "old.html").write_text("old")
    build_web(sites, tmp_path, "http://127.0.0.1:1")
    assert not (tmp_path / "sites" / "foldoc").exists()
    first = sorted(p.name for p in (tmp_path / "sites").glob("foldoc.*.pages"))
    with LocalWebServer(tmp_path, "127.0.0.1", free_port()) as server:
        before = httpx.get(server.url + "/foldoc/index.html")
        build_web(sites, tmp_path, "http://127.0.0.1:1")
        after = httpx.get(server.url + "/foldoc/index.html")
    second = sorted(p.name for p in (tmp_path / "sites").glob("foldoc.*.pages"))
    assert len(first) == len(second) == 1 and first != second
    assert before.status_code == after.status_code == 200 and before.content == after.content
    assert not list((tmp_path / "sites").glob("*.tmp"))
    (tmp_path / "sites" / second[0]).unlink()  # a pack that lost its data: named, with what to do
    with pytest.raises(WebdancerError, match=r"packed site .*foldoc.json cannot be read .*run `webdancer web build` again"):
        LocalWebServer(tmp_path, "127.0.0.1", free_port())


def test_relative_links_resolve(local_web):
    _, _, server = local_web
    with httpx.Client() as client:
        url = server.url + "/python/library/index.html"
        page = client.get(url)
        from webdancer_web.extract import extract

        links = [l for l in extract(page.text, url).links if l.startswith(server.url + "/python/library/") and l.endswith(".html")]
        assert len(links) > 5
        ok = [client.get(l).status_code for l in links[:10]]
        assert ok.count(200) >= 8


def test_links_resolve_as_urljoin_resolves_them_from_any_page():
    """Links are resolved against the page's folder (cached per folder and href): the same absolute URLs, in the same
    order, as urljoin against the page's own URL, for pages with queries, fragments, no path or no URL at all."""
    from urllib.parse import urldefrag, urljoin, urlsplit

    from webdancer_web.extract import extract

    hrefs = ["c.html#f", "../d.html", "?q=1", "/abs", "//other/x", "http://e/f#g", "ftp://x/y", "#top", "mailto:a", "./", "..",
             "sub/", "https://z", "c.html", "../../../up.html", "?q=1#h"]
    html = "<html><head><title>T</title></head><body><p>some text here</p>" + "".join(f'<a href="{h}">x</a>' for h in hrefs) + "</body></html>"
    for url in ["http://x/a/b.html?p=/q#frag", "http://x", "http://x/", "http://x/a/", "http://x/a/b", "https://h:8080/a/b/c.html", ""]:
        expected: list[str] = []
        for href in hrefs:
            if href.startswith(("#", "mailto:")):
                continue
            absolute = urldefrag(urljoin(url, href) if url else href)[0]
            if urlsplit(absolute).scheme in ("http", "https") and absolute not in expected:
                expected.append(absolute)
        assert extract(html, url).links == expected, url


def test_link_resolution_equals_urljoin_on_random_hrefs():
    """The appended-path shortcut and the fragment-free cache key give what urljoin + urldefrag give, over 20,000
    random hrefs (dots, slashes, colons, queries, fragments, spaces, tabs, percent escapes, non-ASCII) and folders."""
    import random
    from urllib.parse import urldefrag, urljoin, urlsplit

    from webdancer_web.extract import _absolute_link

    rng = random.Random(7)
    pieces = ["a", "b.html", ".", "..", "/", "//", ":", "?", "#", "%2F", " ", "\t", "\n", "~", "x=1", "&", "@", "é", "http:", "A", "-_"]
    bases = ["http://x/", "http://x/a/b/", "https://h:8080/a/", "http://x/a//b/", "HTTP://x/a/", "ftp://x/a/", "http://x/a/b.html", ""]
    for _ in range(20_000):
        href = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        base = rng.choice(bases)
        absolute = urldefrag(urljoin(base, href))[0]
        expected = absolute if urlsplit(absolute).scheme in ("http", "https") else None
        assert _absolute_link(base, href) == expected, (base, href)


async def test_local_search_finds_the_entry_and_formats_like_reference(local_web):
    web, _, _ = local_web
    tool = SearchTool(SearchConfig(web_root=web.root, top_k=5))
    out = await tool.call({"query": ["Guido van Rossum interpreted language 1991", "zzqqxxv"]})
    first, second = out.split("\n=======\n")
    assert first.startswith("A search for 'Guido van Rossum interpreted language 1991' found ")
    assert "\n\n## Web Results\n1. [" in first
    assert f"]({web.base_url}/foldoc/python.html)" in first.split("\n\n2. ")[0]
    assert second.startswith("No results found for 'zzqqxxv'")
    assert "[search] no query" in await tool.call({"query": ["  "]})


async def test_serper_backend_against_fake(monkeypatch):
    with FakeSerper(statuses=[429, 503]) as srv:
        monkeypatch.setenv("SERPER_API_KEY", srv.key)
        tool = SearchTool(SearchConfig(backend="serper", serper_url=srv.url + "/search", backoff_s=0.01))
        out = await tool.call({"query": ["santa claus derby"]})
        await tool.aclose()
    assert out.startswith("A Google search for 'santa claus derby' found 3 results:")
    assert "1. [Result 1 for santa claus derby](https://example.org/1)\n\nDate published: May 19, 2025\n\nSnippet 1." in out
    assert len(srv.requests) == 3 and srv.requests[-1]["body"] == {"q": "santa claus derby", "num": 10}
    assert srv.requests[-1]["key"] == srv.key


async def test_serper_bad_key_and_outage(monkeypatch):
    with FakeSerper() as srv:
        monkeypatch.setenv("GOOGLE_SEARCH_KEY", "wrong")
        monkeypatch.delenv("SERPER_API_KEY", raising=False)
        tool = SearchTool(SearchConfig(backend="serper", serper_url=srv.url + "/search", backoff_s=0.01))
        out = await tool.call({"query": ["x"]})
        assert "rejected the API key (HTTP 403)" in out and "SERPER_API_KEY or GOOGLE_SEARCH_KEY" in out
        assert "wrong" not in out
        monkeypatch.setenv("GOOGLE_SEARCH_KEY", srv.key)
        srv.statuses = [500, 500, 500]
        tool = SearchTool(SearchConfig(backend="serper", serper_url=srv.url + "/search", backoff_s=0.01, max_retries=2))
        # An outage is not an observation for the model: it ends the rollout (see tests/test_outages.py).
        with pytest.raises(OutageError, match=r"serper search failed after 3 tries \(HTTP 500\)"):
            await tool.call({"query": ["x"]})


def test_missing_keys_name_the_env_vars(monkeypatch):
    for var in ("SERPER_API_KEY", "GOOGLE_SEARCH_KEY", "JINA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="SERPER_API_KEY or GOOGLE_SEARCH_KEY"):
        SearchTool(SearchConfig(backend="serper"))
    with pytest.raises(ConfigError, match="JINA_API_KEY"):
        VisitTool(VisitConfig(reader="jina"))


async def test_the_jina_reader_down_or_rate_limiting_is_an_outage_not_a_page(monkeypatch):
    from conftest import free_port

    monkeypatch.setenv("JINA_API_KEY", "jina-test-key")
    down = VisitTool(VisitConfig(reader="jina", jina_url=f"http://127.0.0.1:{free_port()}", cache_dir=None, backoff_s=0.01, max_retries=1))
    with pytest.raises(OutageError, match="jina reader .* failed after 2 tries \\(ConnectError"):
        await down.call({"url": ["https://example.org/"], "goal": "x"})
    await down.aclose()
    with FakeJina(statuses=[429, 429]) as jina:
        limited = VisitTool(VisitConfig(reader="jina", jina_url=jina.url, cache_dir=None, backoff_s=0.01, max_retries=1))
        with pytest.raises(OutageError, match="jina HTTP 429"):
            await limited.call({"url": ["https://example.org/"], "goal": "x"})
        jina.statuses = [429]  # one 429, then the page: a retry is enough
        out = await limited.call({"url": ["https://example.org/"], "goal": "who won"})
        await limited.aclose()
    assert "Santa Claus in 1964" in out


async def test_jina_telling_about_the_page_is_an_observation_but_a_gateway_error_or_silence_is_an_outage(monkeypatch):
    """Jina's real page failure (422 with its JSON naming the target) is what the model reads; a 5xx without Jina's
    error (a gateway's page) or no answer within timeout_s, although Jina was told to give up on the page sooner,
    is the reader's outage."""
    monkeypatch.setenv("JINA_API_KEY", "jina-test-key")
    failed_goto = json.dumps({"data": None, "cause": {"name": "TimeoutError"}, "code": 422, "name": "AssertionFailureError", "status": 42206,
                              "message": "Failed to goto https://slow.example/: TimeoutError: Navigation timeout of 15000 ms exceeded",
                              "readableMessage": "AssertionFailureError: Failed to goto https://slow.example/: TimeoutError"}).encode()
    with FakeJina(statuses=[(422, "application/json", failed_goto)] + [(502, "text/html", b"<html>Bad gateway</html>")] * 2) as jina:
        tool = VisitTool(VisitConfig(reader="jina", jina_url=jina.url, cache_dir=None, backoff_s=0.01, max_retries=1, timeout_s=20))
        out = await tool.call({"url": ["https://slow.example/"], "goal": "x"})
        assert "Failed to goto https://slow.example/" in out and jina.requests[0]["timeout"] == "15"
        with pytest.raises(OutageError, match="jina HTTP 502"):
            await tool.call({"url": ["https://other.example/"], "goal": "x"})
        await tool.aclose()
        jina.statuses, jina.delay_s = [], 1.5
        slow = VisitTool(VisitConfig(reader="jina", jina_url=jina.url, cache_dir=None, backoff_s=0.01, max_retries=0, timeout_s=1))
        with pytest.raises(OutageError, match="jina reader .* failed after 1 tries \\(timeout"):
            await slow.call({"url": ["https://example.org/"], "goal": "x"})
        await slow.aclose()


def visit_tool(local_sites, tmp_path=None, **kw):
    return VisitTool(VisitConfig(local_sites=local_sites, cache_dir=str(tmp_path / "cache") if tmp_path else None, backoff_s=0.01, **kw))


async def test_visit_local_site_extracts_evidence(local_web):
    web, _, _ = local_web
    tool = visit_tool([f"{web.host}:{web.port}"])
    out = await tool.call({"url": [f"{web.base_url}/foldoc/python.html"], "goal": "who invented Python and in which year"})
    await tool.aclose()
    assert out.startswith(f"The useful information in {web.base_url}/foldoc/python.html for user goal who invented Python")
    evidence = out.split("Evidence in page: \n")[1].split("\n\nSummary: \n")[0]
    assert "Guido van Rossum" in evidence and "1991" in evidence
    assert "Guido van Rossum" in out.split("Summary: \n")[1]


async def test_visit_cache_serves_second_call_without_fetching(tmp_path):
    with ScriptedSite({"/a.html": Route(body=b"<html><head><title>A</title></head><body><p>The answer is forty-two, said the computer.</p></body></html>")}) as site:
        tool = visit_tool([site.host_port], tmp_path)
        first = await tool.call({"url": [site.url + "/a.html"], "goal": "the answer"})
        await tool.aclose()
        tool = visit_tool([site.host_port], tmp_path)
        second = await tool.call({"url": [site.url + "/a.html"], "goal": "the answer"})
        await tool.aclose()
    assert first == second and "forty-two" in first
    assert site.hits["/a.html"] == 1


REFUSED = [
    ("http://10.1.2.3/", "private address"),
    ("http://192.168.0.10:8080/admin", "private address"),
    ("http://172.16.5.4/", "private address"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
    ("http://[::1]:8765/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://127.0.0.1:9/", "loopback"),
    ("http://localhost:9/", "loopback"),
    ("http://db.localhost/", "loopback name"),
    ("http://0.0.0.0/", "private address"),
    ("http://224.0.0.1/", "multicast"),
    ("file:///etc/passwd", "only http and https"),
    ("ftp://example.org/x", "only http and https"),
    ("gopher://127.0.0.1:70/", "only http and https"),
    ("http://999.1.1.1/", "does not resolve"),
]


@pytest.mark.parametrize("url,reason", REFUSED, ids=[u for u, _ in REFUSED])
async def test_ssrf_guard_refuses(url, reason):
    tool = visit_tool(["127.0.0.1:8765"])
    out = await tool.call({"url": [url], "goal": "anything"})
    await tool.aclose()
    assert out.startswith(f"[visit] could not fetch {url}: refused") or "does not resolve" in out
    assert reason in out


async def test_ssrf_guard_checks_every_redirect_hop():
    with ScriptedSite() as inner, ScriptedSite() as outer:
        inner.routes["/secret"] = Route(body=b"<p>internal secret</p>")
        outer.routes["/go"] = Route(status=302, headers={"Location": inner.url + "/secret"})
        outer.routes["/local"] = Route(status=301, headers={"Location": "/page"})
        outer.routes["/page"] = Route(body=b"<html><body><p>A page reached through a same-site redirect works.</p></body></html>")
        tool = visit_tool([outer.host_port])
        out = await tool.call({"url": [outer.url + "/go", outer.url + "/local"], "goal": "secret"})
        await tool.aclose()
    refused, followed = out.split("\n=======\n")
    assert "refused: '127.0.0.1' resolves to a loopback address" in refused
    assert inner.hits == {}
    assert "same-site redirect works" in followed


def rebinding_resolver(monkeypatch, name, answers):
    """socket.getaddrinfo, but `name` resolves to the next of `answers` on each lookup (the last one repeats)."""
    real = socket.getaddrinfo
    lookups = []

    def getaddrinfo(host, port, *args, **kwargs):
        if (host.decode() if isinstance(host, bytes) else host) != name:  # anyio passes the name IDNA-encoded
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = answers[min(len(lookups), len(answers)) - 1]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


async def test_dns_rebinding_cannot_reach_the_address_the_guard_refused(monkeypatch):
    # The allowed local site on 127.0.0.1:P; on 127.0.0.2:P something the agent must never reach.
    with ScriptedSite({"/page": Route(body=b"<html><body><p>The public page text that may be read.</p></body></html>")}) as site, \
            ScriptedSite({"/page": Route(body=b"<p>internal secret</p>")}, host="127.0.0.2", port=site.port) as internal:
        lookups = rebinding_resolver(monkeypatch, "rebind.test", ["127.0.0.1", "127.0.0.2"])
        tool = visit_tool([site.host_port])
        out = await tool.call({"url": [f"http://rebind.test:{site.port}/page"], "goal": "the page text"})
        await tool.aclose()
        assert "public page text" in out and "secret" not in out
        assert internal.hits == {} and len(lookups) == 1  # checked once, connected to what was checked
        assert site.hosts == [f"rebind.test:{site.port}"]  # the name still travels in Host

        lookups.clear()  # now the name answers the refused address first: refused, never connected
        rebinding_resolver(monkeypatch, "rebind2.test", ["127.0.0.2"])
        tool = visit_tool([site.host_port])
        out = await tool.call({"url": [f"http://rebind2.test:{site.port}/page"], "goal": "x"})
        await tool.aclose()
    assert "refused: 'rebind2.test' resolves to a loopback address (127.0.0.2)" in out and internal.hits == {}


async def test_oversize_slow_and_garbage_pages():
    big = b"<html><body>" + b"<p>word </p>" * 200_000 + b"</body></html>"
    routes = {
        "/big": Route(body=big),
        "/big-chunked": Route(body=big, chunked=True),
        "/slow": Route(body=b"<p>late</p>", delay_s=2.0),
        "/png": Route(body=b"\x89PNG\r\n\x1a\n" + bytes(100), content_type="image/png"),
        "/garbage": Route(body=b"<html><body><p>Valid words survive \xff\xfe\xfa broken bytes in the page text.</p></body></html>"),
        "/flaky": Route(status=503),
    }
    with ScriptedSite(routes) as site:
        tool = visit_tool([site.host_port], max_bytes=1_000_000, timeout_s=0.5, max_retries=1)
        urls = [site.url + p for p in routes]
        out = (await tool.call({"url": urls[:5], "goal": "words"})).split("\n=======\n")
        flaky = await tool.call({"url": urls[5:], "goal": "words"})
        await tool.aclose()
    assert "page too large" in out[0] and "page too large" in out[1]
    assert "timeout after 0.5 s" in out[2]
    assert "unsupported content type 'image/png'" in out[3]
    assert "Valid words survive" in out[4]
    assert flaky == f"[visit] could not fetch {urls[5]}: HTTP 503" and site.hits["/flaky"] == 2


async def test_jina_reader_against_fake(monkeypatch):
    with FakeJina() as jina:
        monkeypatch.setenv("JINA_API_KEY", jina.key)
        tool = VisitTool(VisitConfig(reader="jina", jina_url=jina.url, cache_dir=None))
        out = await tool.call({"url": ["https://en.wikipedia.org/wiki/Epsom_Derby"], "goal": "who won in 1964"})
        await tool.aclose()
        monkeypatch.setenv("JINA_API_KEY", "bad")
        tool = VisitTool(VisitConfig(reader="jina", jina_url=jina.url, cache_dir=None))
        bad = await tool.call({"url": ["https://example.org/"], "goal": "x"})
        await tool.aclose()
    assert jina.requests[0] == {"path": "/https://en.wikipedia.org/wiki/Epsom_Derby", "auth": f"Bearer {jina.key}", "timeout": "15"}
    assert "Santa Claus in 1964" in out
    assert "jina rejected the API key (HTTP 401)" in bad and "JINA_API_KEY" in bad


async def test_llm_summary_and_garbage_fallback(local_web):
    web, _, _ = local_web
    reply = json.dumps({"rational": "entry names the inventor", "evidence": "invented by Guido van Rossum in 1991", "summary": "Guido van Rossum, 1991."})
    with FakeOpenAIServer([reply, "no json here", "still none"]) as srv:
        cfg = dict(local_sites=[f"{web.host}:{web.port}"], cache_dir=None, summary_model={"base_url": srv.base_url, "model": "summarizer"})
        tool = VisitTool(VisitConfig(**cfg))
        good = await tool.call({"url": [f"{web.base_url}/foldoc/python.html"], "goal": "inventor"})
        fallback = await tool.call({"url": [f"{web.base_url}/foldoc/python.html"], "goal": "inventor"})
        await tool.aclose()
    prompt = srv.state.requests[0]["messages"][0]["content"]
    assert "Guido van Rossum" in prompt and "## User goal\ninventor" in prompt
    assert "Evidence in page: \ninvented by Guido van Rossum in 1991\n\nSummary: \nGuido van Rossum, 1991." in good
    assert "Guido van Rossum" in fallback and len(srv.state.requests) == 3


async def test_agent_searches_and_visits_the_local_web(plugins, local_web):
    web, _, _ = local_web

    def script(request):
        n = sum(1 for m in request["messages"] if m["content"].startswith("<tool_response>"))
        if n == 0:
            return render_assistant("search first", tool_call=ToolCall("search", {"query": ["Guido van Rossum language"]}))
        if n == 1:
            last = request["messages"][-1]["content"]
            url = last.split("](")[1].split(")")[0]
            return render_assistant("read the top hit", tool_call=ToolCall("visit", {"url": [url], "goal": "who invented it"}))
        return render_assistant("the page says so", answer="Guido van Rossum")

    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null"])
    with FakeOpenAIServer(default=script) as srv:
        policy = build_policy("openai", {}, ModelConfig(base_url=srv.base_url, model="fake"))
        toolbox = ToolBox.from_config(cfg.agent.tools, cfg.tools, 30)
        async with toolbox:
            traj = await Agent(policy, toolbox, AgentConfig(current_date="2026-11-24")).run("Who created Python?")
        await policy.aclose()
    assert traj.termination == "answered" and traj.answer == "Guido van Rossum"
    assert "Guido van Rossum" in traj.steps[1].tool_result.content
    assert traj.steps[1].tool_call.arguments["url"][0].startswith(web.base_url)


def test_the_offline_web_serves_256_concurrent_clients_while_a_slow_client_trickles(local_web):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    web, _, _ = local_web
    stop = threading.Event()

    def slow_client():  # one byte every 0.2 s, never finishing its request while the others run
        with socket.create_connection((web.host, web.port)) as sock:
            for byte in b"GET /foldoc/python.html HTTP/1.1\r\nHost: x\r\n":
                if stop.is_set():
                    return
                sock.send(bytes([byte]))
                time.sleep(0.2)

    trickle = threading.Thread(target=slow_client, daemon=True)
    trickle.start()
    time.sleep(0.3)
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=256)) as client, ThreadPoolExecutor(256) as pool:
        started = time.monotonic()
        codes = list(pool.map(lambda i: client.get(f"{web.base_url}/foldoc/python.html").status_code, range(256)))
        elapsed = time.monotonic() - started
    stop.set()
    assert codes == [200] * 256 and elapsed < 20
    assert trickle.is_alive()  # still trickling: it did not hold the others up


def test_the_offline_web_speaks_http_1_1_on_raw_sockets(local_web, monkeypatch):
    """Keep-alive, HEAD without a body, 501 for other methods, 400 for garbage, Connection: close, and a kept-alive
    connection with no new request is closed after the idle timeout."""
    import webdancer_web.server as server_mod
    from conftest import free_port

    web, _, _ = local_web

    def exchange(sock, data: bytes) -> bytes:
        sock.sendall(data)
        out = b""
        while b"\r\n\r\n" not in out:
            out += sock.recv(65536)
        head, _, body = out.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
        if not data.startswith(b"HEAD"):
            while len(body) < length:
                body += sock.recv(65536)
        return (head + b"\r\n\r\n").lower() + body

    with socket.create_connection((web.host, web.port)) as sock:
        first = exchange(sock, b"GET /foldoc/python.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.startswith(b"http/1.1 200 ") and b"content-type: text/html" in first and b"</html>" in first.lower()
        head = exchange(sock, b"HEAD /foldoc/python.html HTTP/1.1\r\nHost: x\r\n\r\n")  # same connection: kept alive
        assert head.startswith(b"http/1.1 200 ") and head.endswith(b"\r\n\r\n")
        assert exchange(sock, b"POST /foldoc/python.html HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").startswith(b"http/1.1 501 ")
        closing = exchange(sock, b"GET /nosite/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert closing.startswith(b"http/1.1 404 ") and b"connection: close" in closing
        assert sock.recv(10) == b""  # closed as asked
    with socket.create_connection((web.host, web.port)) as sock:
        assert exchange(sock, b"NONSENSE\r\n\r\n").startswith(b"http/1.1 400 ")
    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT_S", 0.3)
    with server_mod.LocalWebServer(Path(web.root), "127.0.0.1", free_port()) as idle_web, socket.create_connection(("127.0.0.1", idle_web.server_address[1])) as sock:
        assert exchange(sock, b"GET /foldoc/python.html HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"http/1.1 200 ")
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(10) == b"" and time.monotonic() - started < 3
