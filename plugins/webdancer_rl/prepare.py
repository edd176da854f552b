"""`webdancer rl prepare`: the parquet files, tool YAML and agent-loop YAML verl reads.

Rows follow verl's RLHFDataset: `prompt` (our system prompt and first user turn, as chat
messages), `data_source`, `reward_model.ground_truth`, `extra_info` (question, ids)
and `agent_name` (our agent loop). A question goes to train or val by a hash of its id, so a
rerun on a grown QA file never moves a question between the two.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from webdancer.config import WebdancerConfig
from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_write_text
from webdancer.records import QAItem
from webdancer.wire import initial_messages

AGENT_LOOP = "webdancer_agent"  # = webdancer_rl.verl_agent.AGENT_LOOP (that module needs verl)
TOOL_CLASS = "webdancer_rl.verl_tool.WebdancerTool"
AGENT_LOOP_CLASS = "webdancer_rl.verl_agent.WebdancerAgentLoop"


@dataclass
class RlData:
    train: Path
    val: Path
    tool_config: Path
    agent_loops: Path
    train_rows: int
    val_rows: int


def is_val(item_id: str, fraction: float) -> bool:
    return int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def rl_row(item: QAItem, index: int, schemas: list[dict[str, Any]], cfg: WebdancerConfig, split: str) -> dict[str, Any]:
    date = cfg.agent.current_date or dt.date.today().isoformat()
    prompt = [{"role": m.role, "content": m.content} for m in initial_messages(item.question, schemas, date, cfg.agent.system_prompt_file)]
    return {
        "data_source": f"webdancer/{item.tag or 'qa'}",
        "prompt": prompt,
        "ability": "web_information_seeking",
        "reward_model": {"style": "rule", "ground_truth": item.answer},
        # No tools_kwargs: our tools need no per-question state (parquet cannot store an empty struct).
        "extra_info": {"split": split, "index": index, "question_id": item.id, "question": item.question},
        "agent_name": AGENT_LOOP,
    }


def offered_tools(cfg: WebdancerConfig) -> list[tuple[str, dict[str, Any]]]:
    """(the `agent.tools` entry, schema) of every tool the model is offered, in order. A plain tool's schema comes
    from its class (no index loaded, no network); a tool set's tools (an MCP server's) are known only once it is
    opened, so its servers are started for the time it takes to list them."""
    from webdancer.aio import run
    from webdancer.plugins import get_plugins
    from webdancer.tools import ToolBox, ToolSet

    offered = []
    for name in cfg.agent.tools:
        cls = get_plugins().get("tools", name)
        if not (isinstance(cls, type) and issubclass(cls, ToolSet)):
            offered.append((name, cls.schema()))
            continue

        async def listed(name: str = name) -> list[dict[str, Any]]:
            async with ToolBox.from_config([name], cfg.tools, cfg.agent.tool_timeout_s) as box:
                return box.schemas()

        offered += [(name, schema) for schema in run(listed())]
    return offered


def tool_config(cfg: WebdancerConfig, offered: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """verl's tool YAML: one WebdancerTool per offered tool; a tool set's tools name the set (`tool`) and
    themselves (`member`)."""
    tools = []
    for name, schema in offered:
        member = {"member": schema["name"]} if schema["name"] != name else {}
        tools.append({
            "class_name": TOOL_CLASS,
            "config": {"type": "native", "tool": name, **member, "options": dict(cfg.tools.get(name) or {}), "timeout_s": cfg.agent.tool_timeout_s,
                       **({"tool_store": dataclasses.asdict(cfg.tool_store)} if cfg.tool_store.mode != "off" else {})},
            "tool_schema": {"type": "function", "function": {"name": schema["name"], "description": schema["description"],
                                                             "parameters": schema["parameters"]}},
        })
    return {"tools": tools}


def write_parquets(splits: dict[Path, list[dict[str, Any]]]) -> None:
    """Each split's rows as one parquet file, all with one schema: an empty split (rl.val_fraction=0) is a 0-row file
    with the columns the others have, which readers (verl, `webdancer data export`) take as an empty split."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise WebdancerError("writing verl's parquet needs pyarrow: pip install 'webdancer[rl]' (or run in .venvs/rl)") from None
    schema = pa.Table.from_pylist([row for rows in splits.values() for row in rows]).schema
    for path, rows in splits.items():
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        tmp.replace(path)


def prepare(items: list[QAItem], cfg: WebdancerConfig, out_dir: Path) -> RlData:
    if not items:
        raise WebdancerError("no QA items to prepare for RL")
    offered = offered_tools(cfg)
    schemas = [schema for _, schema in offered]
    fraction = cfg.rl.val_fraction
    train, val = [], []
    for item in items:
        (val if is_val(item.id, fraction) else train).append(item)
    if not val and fraction > 0:  # a small file: keep one question out for validation
        val.append(train.pop())
    if not train:
        raise WebdancerError(f"all {len(items)} questions went to validation; lower rl.val_fraction ({fraction})")
    if 0 < cfg.rl.train_questions < len(train):
        train = sorted(train, key=lambda it: hashlib.sha256(it.id.encode()).hexdigest())[: cfg.rl.train_questions]
    out_dir.mkdir(parents=True, exist_ok=True)
    data = RlData(out_dir / "train.parquet", out_dir / "val.parquet", out_dir / "tool_config.yaml", out_dir / "agent_loops.yaml", len(train), len(val))
    write_parquets({data.train: [rl_row(it, i, schemas, cfg, "train") for i, it in enumerate(train)],
                    data.val: [rl_row(it, i, schemas, cfg, "val") for i, it in enumerate(val)]})
    atomic_write_text(data.tool_config, yaml.safe_dump(tool_config(cfg, offered), sort_keys=False))
    loop = {"name": AGENT_LOOP, "_target_": AGENT_LOOP_CLASS, "max_turn_tokens": cfg.rl.max_turn_tokens, "context": loop_context(cfg)}
    atomic_write_text(data.agent_loops, yaml.safe_dump([loop], sort_keys=False))
    return data


def loop_context(cfg: WebdancerConfig) -> dict[str, Any]:
    """The context policy verl's agent loop applies (agent.context, its options, agent.max_context_tokens), checked here:
    in RL the policy in training generates, so a policy needing a model endpoint must be given one."""
    from webdancer.context import build_context_policy
    from webdancer.rewards import plain

    build_context_policy(cfg).check_rollout_model(None)
    name = cfg.agent.context
    return {"name": name, "options": plain((cfg.context or {}).get(name)) or {}, "max_tokens": cfg.agent.max_context_tokens}


ROW_FIELDS = ("prompt", "data_source", "reward_model", "extra_info")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows `prepare` wrote, checked: what the TRL engine trains on and verl's RLHFDataset reads."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise WebdancerError(f"{path} is missing: run `webdancer rl prepare QA_FILE` first")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow's errors say little about which file
        raise WebdancerError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc}); rerun `webdancer rl prepare`") from None
    if not rows:
        raise WebdancerError(f"{path} has no rows: rerun `webdancer rl prepare` with a QA file that has questions")
    missing = [f for f in ROW_FIELDS if f not in rows[0]]
    if missing:
        raise WebdancerError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(ROW_FIELDS)} as `webdancer rl prepare` writes them")
    for i, row in enumerate(rows):
        prompt = row["prompt"]
        if not prompt or not all(isinstance(m, dict) and m.get("role") and isinstance(m.get("content"), str) for m in prompt):
            raise WebdancerError(f"{path}: row {i}: `prompt` must be a list of {{role, content}} messages")
        if not (row.get("reward_model") or {}).get("ground_truth"):
            raise WebdancerError(f"{path}: row {i}: `reward_model.ground_truth` is empty")
    return rows


def check_prepared(cfg: WebdancerConfig, data_dir: Path) -> None:
    """The prepared data must match the config it will train with (tools offered, per-turn budget)."""
    need = ("train.parquet", "val.parquet", "tool_config.yaml", "agent_loops.yaml")
    missing = [name for name in need if not (data_dir / name).is_file()]
    if missing:
        raise WebdancerError(f"{data_dir / missing[0]} is missing: run `webdancer rl prepare QA_FILE` first")
    entries = (yaml.safe_load((data_dir / "tool_config.yaml").read_text()) or {}).get("tools", [])
    tools = list(dict.fromkeys(t["config"]["tool"] for t in entries))  # a tool set's tools name it once each
    if tools != list(cfg.agent.tools):
        raise WebdancerError(f"{data_dir} was prepared for tools {tools}, but agent.tools is {list(cfg.agent.tools)}: "
                             "rerun `webdancer rl prepare` with this config")
    loops = yaml.safe_load((data_dir / "agent_loops.yaml").read_text()) or []
    loop = next((loop for loop in loops if loop.get("name") == AGENT_LOOP), {})
    prepared = loop.get("max_turn_tokens", 0) if loop else None
    if prepared != cfg.rl.max_turn_tokens:
        raise WebdancerError(f"{data_dir} was prepared with rl.max_turn_tokens={prepared}, but the config says "
                             f"{cfg.rl.max_turn_tokens}: rerun `webdancer rl prepare` with this config")
    if loop.get("context") != loop_context(cfg):
        raise WebdancerError(f"{data_dir} was prepared with the context policy {loop.get('context')}, but the config says "
                             f"{loop_context(cfg)} (agent.context, context.*, agent.max_context_tokens): rerun `webdancer rl prepare`")
