"""The TRL engine's update without the work that cannot change it: padding columns and rows with no gradient.

TRL pads every rollout of a generated batch to the batch's widest prompt and completion and keeps that width in
each micro-batch. On the CPU that costs twice: the padded tokens are computed, and an attention mask with padding
sends scaled-dot-product attention down its slow masked path, where an unpadded row takes the causal kernel
(benchmarks/rl_step.py: 8 rollouts of 650 + 400-1,500 tokens, forward + backward 282 s in micro-batches of 2 against
160 s one rollout at a time without padding). And a rollout whose loss mask is empty (its group was dropped by
dynamic sampling) or, with a loss of summed tokens and no KL or entropy term, whose advantage is 0, adds exactly
nothing to the gradient: its forward and backward are skipped. Last, TRL's fused LM head (49k-vocabulary projection
and log-softmax, in fp32 tiles) scores only labelled positions on Triton devices and every position elsewhere, which
on the CPU means the prompt and the tool observations, most of a rollout, are projected and thrown away: here only
the tokens the model wrote are scored. The loss is the same sum over the same tokens (tests/test_rl_update.py).

A rollout the context policy restarted (webdancer_rl.rollout: its segments laid end to end in one row) has each
segment's log-probs computed in that segment's own context, for the loss, the old and the reference log-probs alike:
TRL has no public way to train several contexts of one rollout as one sample, so `_get_per_token_logps_and_entropies`
(through which all three go) is overridden for such rows; other rows take TRL's own path. verl trains each segment
as a sample of its own; with a loss that averages per sequence (`grpo`, verl's seq-mean-token-mean) such a row would
instead weigh its tokens as one sequence and count once, so its advantage is weighted per token to make the row's
loss the sum of its segments' means, and every row's by rows/segments of the generated batch: each segment then
weighs what it does in verl (`dr_grpo`, seq-mean-token-sum-norm, needs the latter only; `dapo`'s token mean, neither).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

# Tensors TRL's GRPOTrainer puts in a micro-batch (trl 1.16, text models), by what their columns are.
PROMPT_COLUMNS = ("prompt_ids", "prompt_mask")
COMPLETION_COLUMNS = ("completion_ids", "completion_mask", "tool_mask", "old_per_token_logps", "ref_per_token_logps",
                      "sampling_per_token_logps", "importance_sampling_ratio")
PER_ROW = ("advantages",)
KNOWN = {*PROMPT_COLUMNS, *COMPLETION_COLUMNS, *PER_ROW, "num_items_in_batch"}
# Losses that divide a sum over tokens by a count fixed for the whole generated batch (num_items_in_batch): a row
# that contributes no token loss can leave the micro-batch without changing the loss.
BATCH_NORMALIZED = {"dapo", "cispo"}
# Losses that average per sequence: a restarted rollout's segments must count as the sequences verl makes of them.
SEQUENCE_MEAN = {"grpo": True, "dr_grpo": False}  # loss type -> whether each sequence's tokens are averaged


def loss_mask(inputs: dict[str, Any]) -> Any:
    """The completion tokens the loss counts, as TRL masks them: the model's own (tool observations are not)."""
    return inputs["completion_mask"] * inputs["tool_mask"] if "tool_mask" in inputs else inputs["completion_mask"]


def live_rows(inputs: dict[str, Any], zero_advantage_is_dead: bool) -> list[int]:
    """Rows that carry a gradient: some token in the loss mask and, when `zero_advantage_is_dead`, an advantage."""
    alive = loss_mask(inputs).sum(dim=1) > 0
    if zero_advantage_is_dead:
        advantages = inputs["advantages"]
        alive &= (advantages.reshape(advantages.size(0), -1) != 0).any(dim=1)
    return alive.nonzero().flatten().tolist()


def trimmed(inputs: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """`inputs` restricted to `rows`, without the prompt columns no row attends to and the completion columns past
    every row's last token (prompts are padded on the left, completions on the right)."""
    import torch

    index = torch.tensor(rows, dtype=torch.long, device=inputs["prompt_ids"].device)
    prompt_mask, completion_mask = inputs["prompt_mask"][index], inputs["completion_mask"][index]
    prompt_start = int((prompt_mask.sum(dim=0) > 0).nonzero().min()) if prompt_mask.any() else prompt_mask.size(1) - 1
    used = (completion_mask.sum(dim=0) > 0).nonzero()
    completion_end = int(used.max()) + 1 if used.numel() else 1
    width = inputs["completion_ids"].size(1)
    out = dict(inputs)
    for key, value in inputs.items():
        if key == "num_items_in_batch" or not isinstance(value, torch.Tensor) or value.dim() == 0:
            continue
        value = value[index]
        if key in PROMPT_COLUMNS:
            value = value[:, prompt_start:]
        elif key in COMPLETION_COLUMNS and value.dim() == 2 and value.size(1) == width:
            value = value[:, :completion_end]
        out[key] = value
    return out


@contextlib.contextmanager
def model_tokens_scored_only(model: Any, inputs: dict[str, Any]) -> Iterator[_Scoring]:
    """While TRL computes this micro-batch's loss: observation tokens get no label (the loss masks them anyway), and
    on the CPU the fused head projects labelled positions only (its `_use_triton` choice, made to keep tile shapes
    fixed for compilers, which eager CPU code does not have)."""
    import trl.trainer.utils as trl_utils

    scoring = _Scoring(loss_mask(inputs))

    def unlabel_observations(module, args, kwargs):
        labels, mask = kwargs.get("labels"), scoring.mask
        if mask is None:
            return args, kwargs
        if kwargs.get("fused_lm_head") and labels is not None and labels.size(0) == mask.size(0) and labels.size(1) >= mask.size(1):
            labels = labels.clone()
            labels[:, -mask.size(1):] = labels[:, -mask.size(1):].masked_fill(mask == 0, -100)
            kwargs["labels"] = labels
        return args, kwargs

    hook = model.register_forward_pre_hook(unlabel_observations, with_kwargs=True)
    use_triton = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or use_triton(device)
    try:
        yield scoring
    finally:
        trl_utils._use_triton = use_triton
        hook.remove()


def row_key(ids: list[int]) -> int:
    """How the trainer finds a rollout's segment layout from a row's tokens (TRL shuffles rows between updates)."""
    return hash(tuple(ids))


class _Scoring:
    """The completion mask the fused-head hook unlabels observations with (a segment's own while it is scored)."""

    def __init__(self, mask: Any):
        self.mask = mask


@contextlib.contextmanager
def _scored_mask(trainer: Any, mask: Any) -> Iterator[None]:
    scoring = getattr(trainer, "_scoring", None)
    if scoring is None:
        yield
        return
    before, scoring.mask = scoring.mask, mask
    try:
        yield
    finally:
        scoring.mask = before


def segmented_logps(trainer: Any, score: Any, input_ids: Any, attention_mask: Any, logits_to_keep: int, compute_entropy: bool,
                    layouts: list[Any]) -> tuple[Any, Any]:
    """Per-token log-probs (and entropies) of each row, a restarted rollout's segments each scored after its own
    prompt; `score(ids, mask, keep)` is TRL's own computation for one unpadded sequence. A restart prompt's tokens
    (in the completion, never trained) get 0."""
    import torch

    from webdancer.token_trajectories import segment_spans

    width = input_ids.size(1)
    prompt_width = width - logits_to_keep
    logps = torch.zeros(input_ids.size(0), logits_to_keep, device=input_ids.device)
    entropies = torch.zeros_like(logps) if compute_entropy else None
    for row, layout in enumerate(layouts):
        used = attention_mask[row].bool()
        prompt = input_ids[row, :prompt_width][used[:prompt_width]]
        completion = input_ids[row, prompt_width:][used[prompt_width:]]
        for segment_prompt, begin, end in segment_spans(prompt, completion, layout):
            if end <= begin:
                continue
            ids = torch.cat([segment_prompt, completion[begin:end]]).unsqueeze(0)
            mask = getattr(getattr(trainer, "_scoring", None), "mask", None)
            with _scored_mask(trainer, None if mask is None else mask[row : row + 1, begin:end]):
                out, entropy = score(ids, torch.ones_like(ids), end - begin)
            logps[row, begin:end] = out[0]
            if entropies is not None and entropy is not None:
                entropies[row, begin:end] = entropy[0]
    return logps, entropies


def segment_weighted_advantages(inputs: dict[str, Any], layouts: list[Any], scale: float, per_segment_mean: bool) -> Any:
    """(rows, completion width) advantages under which a sequence-mean loss weighs each segment of a restarted row as
    a sequence of its own (its tokens' mean, with `per_segment_mean`) and every row by `scale` (rows / segments of the
    generated batch), as verl weighs the segments it trains as separate samples."""
    import torch

    from webdancer.token_trajectories import segment_spans

    mask = loss_mask(inputs)
    weights = torch.full(mask.shape, float(scale), dtype=torch.float32, device=mask.device)
    for row, layout in enumerate(layouts):
        if not layout or not per_segment_mean:
            continue
        width = int(inputs["completion_mask"][row].sum())
        total = mask[row].sum().clamp(min=1)
        for _, begin, end in segment_spans([], list(range(width)), layout):
            tokens = mask[row, begin:end].sum()
            if tokens > 0:
                weights[row, begin:end] *= total / tokens
    return inputs["advantages"].reshape(-1, 1).to(weights.dtype) * weights


def zero_loss(model: Any) -> Any:
    """A loss of 0 whose gradient is 0 for every trainable weight, as a micro-batch of dead rows gives in TRL."""
    return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0


def lean_update_trainer(base: type) -> type:
    """`base` (TRL's GRPOTrainer) computing each micro-batch's loss on its live rows without padding."""

    class LeanUpdateGRPOTrainer(base):  # type: ignore[misc, valid-type]
        restarted_rows: dict[int, list[tuple[int, int]]] = {}  # row_key -> restarts, set by the rollout function each batch
        segment_scale: float = 1.0  # rows / segments of the generated batch, set with restarted_rows
        _scoring: Any = None

        def _layouts(self, input_ids: Any, attention_mask: Any) -> list[Any]:
            if not self.restarted_rows:
                return []
            return [self.restarted_rows.get(row_key(ids[mask.bool()].tolist())) for ids, mask in zip(input_ids, attention_mask)]

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                               compute_entropy=False, compute_aux_loss=False, **multimodal):
            layouts = self._layouts(input_ids, attention_mask)
            if not any(layouts):
                return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, batch_size,
                                                                  compute_entropy, compute_aux_loss, **multimodal)
            if compute_aux_loss or any(v is not None for v in multimodal.values()):
                raise NotImplementedError("context restarts (agent.context) are trained for text models without MoE aux loss")

            def score(ids, mask, keep):
                out, entropy, _ = super(LeanUpdateGRPOTrainer, self)._get_per_token_logps_and_entropies(
                    model, ids, mask, keep, 1, compute_entropy, False)
                return out, entropy

            logps, entropies = segmented_logps(self, score, input_ids, attention_mask, logits_to_keep, compute_entropy, layouts)
            return logps, entropies, None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if set(inputs) - KNOWN:  # a multimodal or newer TRL batch: left as TRL made it
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if self.loss_type in BATCH_NORMALIZED:
                no_other_term = self.beta == 0.0 and not getattr(self, "_entropy_bonus_enabled", True)
                rows = live_rows(inputs, zero_advantage_is_dead=no_other_term)
            else:  # the loss averages over rows: every row stays, only padding goes
                rows = list(range(inputs["prompt_ids"].size(0)))
            if not rows:
                return zero_loss(model)
            inputs = trimmed(inputs, rows)
            if self.loss_type in SEQUENCE_MEAN and self.restarted_rows and inputs["advantages"].dim() == 1:
                import torch

                layouts = self._layouts(torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1),
                                        torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1))
                inputs["advantages"] = segment_weighted_advantages(inputs, layouts, self.segment_scale, SEQUENCE_MEAN[self.loss_type])
            with model_tokens_scored_only(model, inputs) as self._scoring:
                try:
                    return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
                finally:
                    self._scoring = None

    return LeanUpdateGRPOTrainer
