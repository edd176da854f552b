"""Training-health alarms: the ways an RL run goes wrong while its training reward still looks fine.

Each alarm compares the mean of the last `rl.alarm_window` steps with the first `rl.alarm_window` steps' (the run's
own start, read back from metrics.jsonl when it resumes), on the metric names both engines log. An alarm names the
metric, its value, the threshold and what is usually done about it; it is printed once, and every step's line in
metrics.jsonl lists the alarms that hold at that step (`alarms`). A NaN/inf loss is not an alarm: it stops the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import fmean
from typing import Any, Callable, Optional

from webdancer.errors import WebdancerError

FORMAT = "format"  # the reward component paid for any well-formed answer


@dataclass(frozen=True)
class Thresholds:
    """`rl.alarm_*` (their defaults and meaning: webdancer_rl.config.RlConfig)."""

    window: int
    tool_call_drop: float
    valid_turn_drop: float
    format_only: float
    answered_rise: float
    correct_fall: float
    length_growth: float
    heldout_gap: float

    @classmethod
    def of(cls, rl: Any) -> "Thresholds":
        return cls(window=rl.alarm_window, tool_call_drop=rl.alarm_tool_call_drop, valid_turn_drop=rl.alarm_valid_turn_drop,
                   format_only=rl.alarm_format_only, answered_rise=rl.alarm_answered_rise, correct_fall=rl.alarm_correct_fall,
                   length_growth=rl.alarm_length_growth, heldout_gap=rl.alarm_heldout_gap)


def correctness_names(row: dict[str, Any]) -> list[str]:
    """The reward components that pay for a right answer (every logged one but the format reward)."""
    return sorted(k[len("reward/"):-len("/mean")] for k in row
                  if k.startswith("reward/") and k.endswith("/mean") and k not in ("reward/mean", f"reward/{FORMAT}/mean", "reward/overlong/mean"))


def mean_of(rows: list[dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return fmean(values) if values else None


def correctness(rows: list[dict[str, Any]]) -> Optional[float]:
    names = correctness_names(rows[0]) if rows else []
    values = [mean_of(rows, f"reward/{n}/mean") for n in names]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def stop_on_bad_loss(m: dict[str, Any], checkpoint_hint: Callable[[], str]) -> None:
    loss = m.get("loss")
    if loss is not None and not math.isfinite(loss):
        raise WebdancerError(f"the loss became {loss} at step {m.get('step')}; stopped. {checkpoint_hint()} "
                             "Lower rl.learning_rate or check the rewards, then rerun to resume.")


class Alarms:
    """Checks each step's metrics; returns the names of the alarms that hold, printing each the first time."""

    def __init__(self, limits: Thresholds, say: Callable[[str], None], history: Optional[list[dict[str, Any]]] = None):
        self.limits, self.say = limits, say
        self.rows: list[dict[str, Any]] = [r for r in history or [] if "reward/mean" in r]
        self.heldout: list[dict[str, Any]] = [r for r in history or [] if "heldout/reward/mean" in r]
        self.raised: set[str] = {name for r in history or [] for name in r.get("alarms", [])}

    def check(self, m: dict[str, Any]) -> list[str]:
        if "reward/mean" in m:
            self.rows.append(m)
        if "heldout/reward/mean" in m:  # against the training reward of the last window, as noisy as one step is not
            recent = self.rows[-self.limits.window:]
            m["heldout/gap"] = fmean(r["reward/mean"] for r in recent) - m["heldout/reward/mean"] if recent else 0.0
            self.heldout.append(m)
        held = []
        for name, message in self._conditions():
            held.append(name)
            if name not in self.raised:
                self.raised.add(name)
                self.say(f"alarm {name}: {message}")
        return held

    def _conditions(self) -> list[tuple[str, str]]:
        w, lim = self.limits.window, self.limits
        if len(self.rows) < 2 * w:
            return []
        start, now = self.rows[:w], self.rows[-w:]
        span = f"steps {now[0].get('step')}-{now[-1].get('step')} against {start[0].get('step')}-{start[-1].get('step')}"
        found = []
        calls0, calls = mean_of(start, "tool_calls/mean"), mean_of(now, "tool_calls/mean")
        if calls0 and calls is not None and calls < lim.tool_call_drop * calls0:
            found.append(("tool_calls", f"tool calls per rollout {calls:.2f} ({span}: {calls0:.2f}), below rl.alarm_tool_call_drop="
                          f"{lim.tool_call_drop} of the start. The policy is learning to answer without searching; usually the "
                          "answer is paid too little against the format reward (rewards.format.weight) or the questions are "
                          "answerable from memory"))
        valid0, valid = mean_of(start, "valid_turn_rate"), mean_of(now, "valid_turn_rate")
        if valid0 is not None and valid is not None and valid0 - valid > lim.valid_turn_drop:
            found.append(("valid_turns", f"valid-turn rate {valid:.2f} ({span}: {valid0:.2f}), a fall of more than "
                          f"rl.alarm_valid_turn_drop={lim.valid_turn_drop}. Usually the learning rate is too high for the "
                          "model (rl.learning_rate) or turns are cut by rl.max_turn_tokens"))
        fmt, right = mean_of(now, f"reward/{FORMAT}/mean"), correctness(now)
        if fmt and right is not None and right <= lim.format_only:
            found.append(("format_only", f"the answer rewards are {right:.3f} ({span.split(' against')[0]}), at most "
                          f"rl.alarm_format_only={lim.format_only}, while the format reward is {fmt:.2f}: the reward comes only "
                          "from the format. The questions are too hard for the model (easier data, more SFT) or the answer "
                          "reward cannot match (check the judge / answer normalization on samples.jsonl)"))
        answered0, answered = mean_of(start, "answered_rate"), mean_of(now, "answered_rate")
        right0 = correctness(start)
        if None not in (answered0, answered, right0, right) and answered - answered0 >= lim.answered_rise and right0 - right >= lim.correct_fall:
            found.append(("answer_sooner", f"answered {answered:.2f} (start {answered0:.2f}, up at least rl.alarm_answered_rise="
                          f"{lim.answered_rise}) while correctness fell to {right:.2f} (start {right0:.2f}, down at least "
                          f"rl.alarm_correct_fall={lim.correct_fall}), {span}. The policy is paid for answering, right or not: "
                          "lower rewards.format.weight or raise the answer's"))
        length0, length = mean_of(start, "response_length/mean"), mean_of(now, "response_length/mean")
        if length0 and length and length > lim.length_growth * length0:
            found.append(("length", f"mean response length {length:.0f} tokens ({span}: {length0:.0f}), past "
                          f"rl.alarm_length_growth={lim.length_growth}x. Usually repetition or runaway thinking: read "
                          "samples.jsonl; rl.overlong_buffer / rl.max_turn_tokens bound it"))
        if len(self.heldout) >= 2:
            first, last = self.heldout[0], self.heldout[-1]
            gap0, gap = first["heldout/gap"], last["heldout/gap"]
            if gap - gap0 > lim.heldout_gap:
                found.append(("heldout_gap", f"training reward minus held-out reward {gap:.2f} at step {last.get('step')} "
                              f"(step {first.get('step')}: {gap0:.2f}), widened by more than rl.alarm_heldout_gap={lim.heldout_gap}. "
                              "The policy fits the training questions and not the task: more (or more varied) training "
                              "questions, fewer steps, a lower rl.learning_rate"))
        return found
