"""The gradio demo: streamed steps, errors as messages, gradio's client API, and a real browser."""

import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from conftest import ROOT, free_port

from webdancer.config_loader import load_config
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.wire import render_assistant

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
SCRIPT = [
    render_assistant("I should look it up.", tool_call=ToolCall("lookup", {"query": ["kilby integrated circuit"]})),
    render_assistant("The lookup says Kilby.", answer="Jack Kilby"),
]
ARTIFACTS = ROOT / "test-output"


def demo_config(srv_url, *extra):
    return load_config(None, [f"model.base_url={srv_url}", "model.model=m", "model.max_retries=0", "agent.tools=[lookup]", "agent.max_turns=3", *extra])


async def collect(question, cfg):
    from webdancer_demo.app import ask

    return [chat async for chat in ask(question, cfg)]


async def test_steps_stream_one_update_at_a_time_with_observations_collapsed(plugins):
    with FakeOpenAIServer(list(SCRIPT)) as srv:
        updates = await collect("Who invented the integrated circuit?", demo_config(srv.base_url))
    final = updates[-1]
    titles = [m.get("metadata", {}).get("title", "") for m in final]
    assert final[0] == {"role": "user", "content": "Who invented the integrated circuit?"}
    assert final[1]["content"].startswith("**Step 1**\n\nI should look it up.\n\nCalls `lookup`:") and "kilby integrated circuit" in final[1]["content"]
    assert titles[2] == "Step 1 · observation (37 chars)" and final[2]["metadata"]["status"] == "done"
    assert "results for: kilby integrated circuit" in final[2]["content"]
    assert final[-2]["content"] == "**Answer:** Jack Kilby" and final[-1]["content"].startswith("_Done: 2 turns")
    # Streamed: a pending marker while the model works, and the chat grows update by update.
    assert any(m.get("metadata", {}).get("status") == "pending" for u in updates for m in u)
    assert len(updates) >= 4 and [len(u) for u in updates] != sorted(set(len(u) for u in updates))[-1:]


async def test_errors_show_in_the_page_not_as_tracebacks(plugins, monkeypatch):
    port = free_port()  # nothing listens there: the model is down
    down = await collect("q", demo_config(f"http://127.0.0.1:{port}/v1"))
    assert "The model endpoint or a tool backend is down" in down[-1][-1]["content"] and "Traceback" not in str(down)

    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_SEARCH_KEY", raising=False)
    with FakeOpenAIServer(default=render_assistant("search", tool_call=ToolCall("search", {"query": ["x"]}))) as srv:
        no_key = await collect("q", demo_config(srv.base_url, "agent.tools=[search]", "tools.search.backend=serper", "agent.max_turns=1"))
    text = str(no_key[-1])
    assert "SERPER_API_KEY" in text and "Traceback" not in text

    # The demo does not keep a person waiting for a batch run's outage limit (infra.max_outage_s, 600 s).
    from webdancer_demo.app import build_app

    patient = demo_config(f"http://127.0.0.1:{port}/v1", "model.max_retries=20", "model.backoff_s=0.05", "demo.max_outage_s=1")
    build_app(patient)
    started = time.monotonic()
    down = await collect("q", patient)
    assert "is down" in down[-1][-1]["content"] and "infra.max_outage_s=1" in down[-1][-1]["content"]
    assert time.monotonic() - started < 15

    empty = await collect("  ", demo_config("http://127.0.0.1:1/v1"))
    assert empty[-1][-1]["content"] == "⚠ Type a question first."


def launch(cfg):
    from webdancer_demo.app import build_app

    port = free_port()
    app = build_app(cfg)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return app, f"http://127.0.0.1:{port}/"


def test_gradio_client_api_streams_the_agent(plugins):
    from gradio_client import Client

    with FakeOpenAIServer(list(SCRIPT)) as srv:
        app, url = launch(demo_config(srv.base_url))
        try:
            client = Client(url, verbose=False)
            job = client.submit("Who invented the integrated circuit?", api_name="/ask")
            outputs = list(job)
            final = job.result()
        finally:
            app.close()
    assert len(outputs) >= 3  # streamed, not one blob at the end
    contents = [m["content"] if isinstance(m["content"], str) else str(m["content"]) for m in final]
    assert any("Jack Kilby" in c for c in contents) and any("results for: kilby" in c for c in contents)


def test_a_person_asks_the_demo_in_a_browser(local_web, tiny_server, tmp_path):
    """Headless Chromium types a question to the tiny model on the offline web and waits for the end."""
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("Debian chromium and chromium-driver must be installed (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    web, _, _ = local_web
    serve_cfg, _ = tiny_server
    port = free_port()
    cmd = [sys.executable, "-m", "webdancer.cli", "demo", f"web.root={web.root}", f"web.port={web.port}",
           f"model.base_url=http://127.0.0.1:{serve_cfg.port}/v1", f"model.model={serve_cfg.model_path}", "model.temperature=0",
           "model.max_tokens=48", "agent.max_turns=2", "tools.visit.cache_dir=null", "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400", "--disable-gpu"):
        options.add_argument(arg)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
        browser = webdriver.Chrome(service=Service(driver_path), options=options)
        browser.get(url)
        box = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.CSS_SELECTOR, "#question textarea"))
        assert "Examples for this web" in browser.page_source
        box.send_keys("Who invented the integrated circuit in 1958 at Texas Instruments?")
        browser.find_element(By.CSS_SELECTOR, "#ask").click()
        steps = browser.find_element(By.CSS_SELECTOR, "#steps")
        WebDriverWait(browser, 240, poll_frequency=1).until(lambda b: "termination:" in steps.text)
        text = steps.text
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "demo_browser.png"
        browser.save_screenshot(str(shot))
        shutil.copy(shot, tmp_path / shot.name)
    finally:
        if browser is not None:
            browser.quit()
        proc.terminate()
        proc.wait(timeout=30)
    assert "Who invented the integrated circuit" in text and "Step 1" in text and "turns" in text
    assert shot.stat().st_size > 10_000


def test_demo_uses_the_newest_model_a_run_trained_and_says_which(tmp_path):
    from webdancer_demo.app import choose_model, describe_setup

    run = tmp_path / "quickstart"
    cfg = load_config(None, [f"demo.model_run={run}", "demo.serve_model=true"])
    same, which = choose_model(cfg)
    assert same == cfg and which == f"the base model ({cfg.serve.model_path})"
    for sub in ("sft", "rl/model"):
        (run / sub).mkdir(parents=True)
        (run / sub / "config.json").write_text("{}")
    (run / "sft" / "model.safetensors").write_bytes(b"x")
    chosen, which = choose_model(cfg)
    assert which == f"after SFT ({run / 'sft'})" and chosen.serve.model_path == chosen.model.model == str(run / "sft")
    (run / "rl" / "model" / "model.safetensors").write_bytes(b"x")  # RL finished: newer than SFT
    chosen, which = choose_model(cfg)
    assert which == f"after RL ({run / 'rl' / 'model'})" and chosen.serve.model_path == str(run / "rl" / "model")
    assert "this model: **after RL" in describe_setup(chosen, which)
