"""Our rollout rules inside verl: a `webdancer` tool parser and the `webdancer_agent` agent loop.

verl's own `ToolAgentLoop` does most of what a WebDancer rollout needs (generate, run the tool
calls, append `tool` messages, mask them out of the loss). What we change, so that verl and the
TRL engine train the same thing (webdancer_rl.rollout holds the rules both follow):
- each turn is read by `read_turn` (our `parse_assistant`, checked against the tools' full
  schemas): a malformed turn is answered with the agent's `[format error]` observation instead of
  ending the rollout; a cut turn or one that writes its own `<tool_response>` ends it;
- the chat template gets no `tools=`: our prompt carries the tool descriptions, as at inference;
- ChatML tokenizers get verl's ChatML token builder whatever their model type (SmolLM2 is `llama`),
  so the newline after `<|im_end|>` is there, as the chat template renders it;
- `max_turn_tokens` (from agent_loops.yaml) caps each turn's generation;
- the run's context policy (agent_loops.yaml `context`: agent.context, its options, agent.max_context_tokens) fits the
  conversation before every turn through the same `RolloutContext` as the TRL engine; a restart ends the segment and
  the rollout returns one `AgentLoopOutput` per segment, which verl's trainer (0.9.1's default, `trainer.use_v1`)
  trains as separate rows sharing the final segment's reward and GRPO advantage (ReSum-GRPO);
- a tool whose backend is down (OutageError, after the circuit breaker's pause) is never an observation: verl turns
  every exception of a tool into its answer, so the loop re-raises it, and the rollout fails; with our verl patch
  (third_party_patches/verl) the trainer then stops, as TRL's engine does, instead of training on without it;
- with `WEBDANCER_ROLLOUT_STATS` set (`rl train` always sets it), what each rollout did (turns, tool calls, how it
  ended) is appended for `rl train`'s step metrics and alarms (webdancer_rl.rollout_stats: verl logs none of it);
- with `WEBDANCER_TOKEN_ROLLOUTS` set (`rl train`, `rl.record_tokens`), every rollout is appended as a `TokenRollout` to
  a file of its own process in that folder (`<host>-<pid>.jsonl`: workers on several nodes never share a file).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Optional

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.tool_agent_loop import AgentState, ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.tools.schemas import ToolResponse
from verl.utils.tokenizer.continuous_token import QwenContinuousTokenBuilder

from webdancer.plugins import get_plugins
from webdancer.rewards import plain
from webdancer.token_trajectories import TOKEN_ROLLOUTS_ENV, TokenRollout
from webdancer.typed import to_dict
from webdancer.wire import format_error_observation
from webdancer_rl.rollout import ChatTokens, Ended, RolloutContext, RolloutLimits, read_turn, turn_budget, turn_end
from webdancer_rl.rollout_stats import TRAIN, RolloutStats, process_log, score_key
from webdancer_rl.rollout_stats import record_rollout as record_stats

PARSER = "webdancer"
AGENT_LOOP = "webdancer_agent"
# A malformed turn becomes a call of this pseudo-tool, whose observation is the format error.
FORMAT_ERROR_CALL = "__webdancer_format_error__"
# Where WebdancerTool leaves an outage for the loop to re-raise (verl's AgentData.extra_fields: the tools' scratch space).
OUTAGE_FIELD = "webdancer_outage"
# How a rollout the context policy ended says so (extra_fields, beside verl's own keys).
END_FIELD, ERROR_FIELD = "webdancer_end", "webdancer_error"


def record_rollout(prompt: Any, extra_info: Any, output: Any, segment: int = 0, step: Optional[int] = None) -> None:
    """Append one verl rollout to this process's file in $WEBDANCER_TOKEN_ROLLOUTS. `step`: the one verl dispatched its
    prompt at (its default trainer says; None otherwise). verl does not hand agent loops the group's fate (dynamic
    sampling drops groups later), so the loss mask is the model's."""
    log = process_log(TOKEN_ROLLOUTS_ENV)
    if log is None:
        return
    question_id = str((extra_info or {}).get("question_id", ""))
    mask = [int(m) for m in output.response_mask]
    logprobs = list(output.response_logprobs) if output.response_logprobs is not None else None
    log.write(to_dict(TokenRollout(
        id=f"{question_id}:{uuid.uuid4().hex[:8]}" + (f"#{segment}" if segment else ""), step=step, engine="verl", prompt=[dict(m) for m in prompt],
        prompt_ids=list(output.prompt_ids), completion_ids=list(output.response_ids), loss_mask=mask, model_mask=list(mask),
        logprobs=logprobs, question_id=question_id)))


def tool_parameters(tools: Any) -> dict[str, dict[str, Any]]:
    params = {}
    for tool in tools or []:
        fn = tool.function if hasattr(tool, "function") else tool.get("function", tool)
        name = fn.name if hasattr(fn, "name") else fn["name"]
        raw = fn.parameters.model_dump(exclude_none=True) if hasattr(fn, "parameters") else fn.get("parameters", {})
        params[name] = raw
    return params


@ToolParser.register(PARSER)
class WebdancerToolParser(ToolParser):
    # Set by the agent loop: the tools' own schemas (verl's schema copy drops array `items`).
    full_parameters: dict[str, dict[str, Any]] = {}

    async def extract_tool_calls(self, responses_ids: list[int], tools: Any = None) -> tuple[str, list[FunctionCall]]:
        text = self.tokenizer.decode(responses_ids, skip_special_tokens=True)
        ended = bool(responses_ids) and responses_ids[-1] == self.tokenizer.eos_token_id
        turn = read_turn(text, ended, self.full_parameters or tool_parameters(tools))
        if turn.kind == "format_error":
            return text, [FunctionCall(name=FORMAT_ERROR_CALL, arguments=json.dumps({"error": turn.error}))]
        if turn.kind != "call":
            return text, []
        call = turn.call
        return turn.thought, [FunctionCall(name=call.name, arguments=json.dumps(call.arguments, ensure_ascii=False))]


@register(AGENT_LOOP)
class WebdancerAgentLoop(ToolAgentLoop):
    """verl's tool agent loop with our turn rules, whatever `multi_turn.format` says."""

    def __init__(self, *args, max_turn_tokens: int = 0, context: Any = None, **kwargs):
        super().__init__(*args, **kwargs)
        context = plain(context) or {"name": "blank_old", "options": {}, "max_tokens": 10**9}  # agent_loops.yaml's, from `rl prepare`
        self.context_policy = get_plugins().build("context_policies", context["name"], context.get("options") or None, f"context.{context['name']}")
        self.context_tokens = int(context["max_tokens"])
        self.tool_parser = ToolParser.get_tool_parser(PARSER, self.tokenizer)
        self.tool_parser.full_parameters = {
            name: tool.webdancer_parameters for name, tool in self.tools.items() if hasattr(tool, "webdancer_parameters")
        }
        self.tool_parser_name = PARSER
        self.tool_schemas = None  # rendered into the prompt by `rl prepare`, not by the chat template
        if self.tokenizer.eos_token == "<|im_end|>" and not isinstance(self.continuous_token_builder, QwenContinuousTokenBuilder):
            self.continuous_token_builder = QwenContinuousTokenBuilder(self.tokenizer, chat_template_kwargs=self.apply_chat_template_kwargs)
        multi_turn = self.rollout_config.multi_turn
        self.chat = ChatTokens(self.tokenizer, self.apply_chat_template_kwargs)
        self.limits = RolloutLimits(
            max_turns=self.max_assistant_turns or 0, max_prompt_length=self.prompt_length, max_response_length=self.response_length,
            max_turn_tokens=int(max_turn_tokens), max_tool_response_length=self.max_tool_response_length,
            truncate_side=multi_turn.tool_response_truncate_side,
        )

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        self._context = RolloutContext(self.context_policy, list(kwargs["raw_prompt"]), self.context_tokens, self.chat.count)
        self._stats = RolloutStats(turns=0, well_formed_turns=0, tool_calls=0, tool_errors=0, format_errors=0, end="", model_tokens=0, response_length=0)
        self._finished: list[AgentLoopOutput] = []  # the segments before a restart
        self._prompts: list[list[dict[str, Any]]] = [list(kwargs["raw_prompt"])]  # the messages each segment's prompt renders
        try:
            output = await super().run(sampling_params, **kwargs)
        finally:
            await self.context_policy.aclose()
        output.extra_fields.setdefault(END_FIELD, "")  # every row of a batch has the same extra fields
        output.extra_fields.setdefault(ERROR_FIELD, "")
        segments = [*self._finished, output]
        self._record_stats(segments, kwargs)
        for index, segment in enumerate(segments):
            if output.extra_fields.get(END_FIELD) == "policy_error":  # the context policy's doing, not the model's: no training
                segment.response_mask = [0] * len(segment.response_mask)
            record_rollout(self._prompts[index], kwargs.get("extra_info"), segment, index, self._stats.step)
        return segments if self._finished else output

    def _record_stats(self, segments: list[AgentLoopOutput], kwargs: dict[str, Any]) -> None:
        """The rollout's RolloutStats for `rl train`'s metrics (webdancer_rl.rollout_stats), tagged with the step verl
        dispatched the prompt at (the `global_steps` its trainer puts beside every prompt) and keyed by the text verl's
        reward manager will score: the last segment's response, decoded as it decodes it."""
        stats, extra = self._stats, dict(kwargs.get("extra_info") or {})
        stats.end = segments[-1].extra_fields.get(END_FIELD) or stats.end or "length"  # no end after the last turn: its observation overflowed
        stats.model_tokens = sum(sum(s.response_mask) for s in segments)
        stats.response_length, stats.segments = sum(len(s.response_ids) for s in segments), len(segments)
        step = kwargs.get("global_steps")
        stats.step = int(step) if step is not None else None
        stats.split, stats.question_id = str(extra.get("split", TRAIN)), str(extra.get("question_id", ""))
        stats.key = score_key(stats.question_id, self.tokenizer.decode(segments[-1].response_ids, skip_special_tokens=True))
        record_stats(stats)

    async def _handle_generating_state(self, agent_data, sampling_params: dict[str, Any], ignore_termination: bool = False):
        try:
            restart = await self._context.next_prompt()
        except Ended as ended:
            agent_data.extra_fields[END_FIELD] = ended.end
            agent_data.extra_fields[ERROR_FIELD] = ended.error or ""
            return AgentState.TERMINATED
        if restart is not None:
            self._restart(agent_data, self.chat.prompt(restart), restart)
        if self.limits.max_turn_tokens > 0:
            sampling_params = {**sampling_params, "max_tokens": turn_budget(self.limits, len(agent_data.prompt_ids))}
        state = await super()._handle_generating_state(agent_data, sampling_params, ignore_termination)
        ids = agent_data.response_ids  # this turn's tokens, read by the rules the TRL engine counts with
        text = self.chat.decode(ids)
        params = self.tool_parser.full_parameters or tool_parameters([tool.tool_schema for tool in self.tools.values()])  # the parser's
        turn = read_turn(text, bool(ids) and ids[-1] == self.tokenizer.eos_token_id, params)
        self._stats.turns += 1
        self._stats.well_formed_turns += turn.kind in ("answer", "call")
        self._stats.end = turn_end(turn, self._stats.turns, len(agent_data.response_mask), self.limits)
        if state == AgentState.PROCESSING_TOOLS:
            self._context.model_turn(text)
        return state

    async def _handle_processing_tools_state(self, agent_data) -> Any:
        shown = len(agent_data.messages)
        state = await super()._handle_processing_tools_state(agent_data)
        if state == AgentState.GENERATING:  # the observations went into the sequence
            for message in agent_data.messages[shown:]:
                self._context.observation(message["content"])
        return state

    def _restart(self, agent_data, prompt_ids: list[int], messages: list[dict[str, Any]]) -> None:
        """End the current segment (kept as an output of its own) and go on from `prompt_ids` (`messages` rendered)."""
        if not agent_data.response_mask:  # nothing followed the current prompt: it is replaced
            self._prompts[-1] = messages
        else:
            self._prompts.append(messages)
            response = len(agent_data.response_mask)
            self._finished.append(AgentLoopOutput(
                prompt_ids=agent_data.prompt_ids[:-response], response_ids=agent_data.prompt_ids[-response:],
                response_mask=list(agent_data.response_mask),
                response_logprobs=list(agent_data.response_logprobs) if agent_data.response_logprobs else None,
                num_turns=agent_data.user_turns + agent_data.assistant_turns + 1, metrics=agent_data.metrics,
                extra_fields={**agent_data.extra_fields, END_FIELD: "restart", ERROR_FIELD: "",
                              "turn_scores": list(agent_data.turn_scores), "tool_rewards": list(agent_data.tool_rewards)}))
        agent_data.prompt_ids, agent_data.response_mask, agent_data.response_logprobs = list(prompt_ids), [], []

    async def _call_tool(self, tool_call: FunctionCall, tools_kwargs: dict[str, Any], agent_data) -> tuple[ToolResponse, float, dict]:
        if tool_call.name == FORMAT_ERROR_CALL:
            self._stats.format_errors += 1
            return ToolResponse(text=format_error_observation(json.loads(tool_call.arguments)["error"])), 0.0, {"format_error": 1}
        answer = await super()._call_tool(tool_call, tools_kwargs, agent_data)
        outage = agent_data.extra_fields.pop(OUTAGE_FIELD, None)
        if outage is not None:
            raise outage
        self._stats.tool_calls += 1
        self._stats.tool_errors += int(bool(answer[2].get("error")))
        return answer
