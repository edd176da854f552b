"""Trajectories -> a LLaMA-Factory sharegpt dataset whose rendering equals what the agent sees at inference.

Each trajectory becomes: system, human (the first user turn, which carries the tool list and the
question, as in the reference release), then gpt turns holding the raw wire text (<think> +
<tool_call> or <answer>) and observation turns holding the tool result. LLaMA-Factory's `qwen`
template renders observations as a user turn wrapped in <tool_response>, exactly our wire format,
and masks them (and system/human turns) from the loss. The `tools` field is written for
inspection but deliberately not mapped in dataset_info.json: mapping it would make the template
append its own tool instructions to the system prompt, which the agent never sees.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_file, atomic_write_json, iter_json_lines, json_bytes
from webdancer.records import Trajectory
from webdancer.reference import load_trajectory
from webdancer.wire import unwrap_tool_response

DATASET = "webdancer_sft"


@dataclass
class ExportStats:
    exported: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def to_sharegpt(traj: Trajectory) -> dict[str, Any] | str:
    """The sharegpt record, or the reason the trajectory cannot be one."""
    msgs = traj.messages
    if len(msgs) < 3 or msgs[0].role != "system" or msgs[1].role != "user":
        return "does_not_start_with_system_and_user"
    turns = [{"from": "human", "value": msgs[1].content}]
    for msg in msgs[2:]:
        if msg.role == "assistant":
            turns.append({"from": "gpt", "value": msg.content})
        else:
            obs = unwrap_tool_response(msg.content)
            if obs is None:
                return "user_turn_is_not_a_tool_response"
            turns.append({"from": "observation", "value": obs})
    roles = [t["from"] for t in turns]
    if len(roles) % 2 or any(r != ("gpt" if i % 2 else ("human" if i == 0 else "observation")) for i, r in enumerate(roles)):
        return "turns_do_not_alternate"
    if roles[-1] != "gpt":
        return "does_not_end_with_the_model"
    return {"conversations": turns, "system": msgs[0].content, "tools": json.dumps(traj.tools, ensure_ascii=False), "id": traj.id}


def load_trajectories(path: Path) -> Iterable[Trajectory]:
    for lineno, obj in iter_json_lines(path):
        yield load_trajectory(obj, f"{path}:{lineno}")


def export_sft(src: Path | str, out_dir: Path, split: Optional[str] = None) -> ExportStats:
    """Write `<out_dir>/webdancer_sft.json` and `dataset_info.json` (both atomically) from a trajectory JSONL,
    a dataset folder or a Hub dataset `hf:OWNER/NAME` (`split` picks its split). Records are written as they are
    read (a JSON array, one record at a time), so a file of any size exports in constant memory."""
    from webdancer.datasources import is_dataset_ref, read_trajectories

    stats = ExportStats()
    with contextlib.suppress(_NothingExported), atomic_file(out_dir / f"{DATASET}.json") as fh:
        for traj in read_trajectories(str(src), split) if is_dataset_ref(src) else load_trajectories(Path(src)):
            rec = to_sharegpt(traj)
            if isinstance(rec, str):
                stats.skip(rec)
                continue
            fh.write(b",\n" if stats.exported else b"[\n")
            fh.write(json_bytes(rec))
            stats.exported += 1
        if not stats.exported:
            raise _NothingExported  # leaves no file behind
        fh.write(b"\n]\n")
    if not stats.exported:
        raise WebdancerError(f"{src}: no trajectory could be exported (skipped: {stats.skipped or 'the file is empty'})")
    atomic_write_json(out_dir / "dataset_info.json", {DATASET: dataset_info_entry()})
    return stats


class _NothingExported(Exception):
    pass


def dataset_info_entry() -> dict[str, Any]:
    return {
        "file_name": f"{DATASET}.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"},
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
            "observation_tag": "observation",
            "function_tag": "function_call",
            "system_tag": "system",
        },
    }
