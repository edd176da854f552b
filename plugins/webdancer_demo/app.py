"""The gradio demo: ask a question, watch the agent think, search, visit and answer, step by step."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

from webdancer.config import WebdancerConfig
from webdancer.errors import WebdancerError
from webdancer_demo.steps import Chat, closing_message, error_message, pending, step_messages


def example_questions(cfg: WebdancerConfig) -> list[str]:
    path = Path(cfg.demo.examples_file)
    if not cfg.demo.examples_file or not path.is_file():
        return []
    questions = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            questions.append(json.loads(line)["question"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # examples are a convenience; a bad line is skipped, not fatal
    return questions


def choose_model(cfg: WebdancerConfig) -> tuple[WebdancerConfig, str]:
    """The config with `demo.model_run`'s most trained model in place of the served one, and which model that is."""
    from dataclasses import replace

    from webdancer.runs import newest_model

    found = newest_model(cfg.demo.model_run) if cfg.demo.model_run else None
    if found is None:
        base = "the base model" if cfg.demo.model_run else "as configured"
        return cfg, f"{base} ({cfg.serve.model_path if cfg.demo.serve_model else cfg.model.model})"
    path, label = found
    serve = replace(cfg.serve, model_path=str(path))
    from webdancer_models.serve import LOCAL_BACKENDS

    model = replace(cfg.model, model=str(path)) if cfg.serve.backend in LOCAL_BACKENDS else cfg.model
    return replace(cfg, serve=serve, model=model), f"{label} ({path})"


def describe_setup(cfg: WebdancerConfig, which: str = "") -> str:
    tools = ", ".join(
        f"`{name}` ({cfg.tools.get(name, {}).get('backend') or cfg.tools.get(name, {}).get('reader') or 'default'})" for name in cfg.agent.tools
    )
    who = f"`{cfg.model.model}` at `{cfg.model.base_url}`" if cfg.agent.policy == "openai" else f"policy `{cfg.agent.policy}`"
    trained = f" · this model: **{which}**" if which else ""
    return f"Model: {who}{trained} · tools: {tools} · at most {cfg.agent.max_turns} turns"


async def ask(question: str, cfg: WebdancerConfig) -> AsyncIterator[Chat]:
    """Yield the whole chat after every change: the question, then each step as it happens."""
    from webdancer.agent import configured_agent

    chat: Chat = [{"role": "user", "content": question}]
    if not question.strip():
        yield chat + [error_message("Type a question first.")]
        return
    yield chat
    steps: asyncio.Queue = asyncio.Queue()

    async def run():
        async with configured_agent(cfg) as agent:
            return await agent.run(question, on_step=steps.put)

    task = asyncio.ensure_future(run())
    done_steps = 0
    try:
        while True:
            yield chat + [pending(done_steps)]
            getter = asyncio.ensure_future(steps.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                chat += step_messages(getter.result())
                done_steps += 1
                continue
            getter.cancel()
            while not steps.empty():
                chat += step_messages(steps.get_nowait())
            break
        try:
            traj = task.result()
        except WebdancerError as exc:  # a missing key, an unknown tool or backend: the agent could not be built
            yield chat + [error_message(f"Cannot start the agent: {exc}")]
            return
        except Exception as exc:  # the agent records model and tool errors itself; this is the rest
            yield chat + [error_message(f"The agent stopped: {type(exc).__name__}: {exc}")]
            return
        yield chat + [closing_message(traj)]
    finally:
        if not task.done():  # the page went away mid-run
            task.cancel()


def build_app(cfg: WebdancerConfig, which: str = "") -> Any:
    import dataclasses

    import gradio as gr

    from webdancer.breaker import BREAKERS

    # Someone is waiting at the page: say an endpoint is down after demo.max_outage_s, not after a batch run's wait.
    BREAKERS.configure(dataclasses.replace(cfg.infra, max_outage_s=min(cfg.infra.max_outage_s, cfg.demo.max_outage_s)))

    async def respond(question: str):
        async for chat in ask(question, cfg):
            yield chat

    with gr.Blocks(title=cfg.demo.title) as app:
        gr.Markdown(f"# {cfg.demo.title}\nA web information-seeking agent: it reasons, searches and reads pages, then answers.")
        gr.Markdown(describe_setup(cfg, which), elem_id="setup")
        chatbot = gr.Chatbot(label="Agent steps", height=560, elem_id="steps")
        with gr.Row():
            question = gr.Textbox(label="Question", placeholder="Ask something the web can answer", scale=5, elem_id="question")
            button = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
        examples = example_questions(cfg)
        if examples:
            gr.Examples(examples=[[q] for q in examples], inputs=question, label="Examples for this web")
        button.click(respond, inputs=question, outputs=chatbot, api_name="ask")
        question.submit(respond, inputs=question, outputs=chatbot, api_name=False)
    return app
