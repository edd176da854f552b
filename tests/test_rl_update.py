"""The TRL engine's lean update (webdancer_rl.trl_update): the loss and gradients TRL computes, on less work."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def trainers(tiny_model, tmp_path_factory):
    """TRL's GRPOTrainer and ours on one small random Llama with the tiny model's tokenizer."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer
    from webdancer_rl.trl_update import lean_update_trainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)

    folder = tmp_path_factory.mktemp("random-llama")  # a folder: with a KL term TRL loads the reference model from it
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)

    def make(cls, loss_type, beta=0.0):
        args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), use_cpu=True, bf16=False, report_to=[],
                          per_device_train_batch_size=4, num_generations=2, loss_type=loss_type, beta=beta,
                          activation_checkpointing=False, max_completion_length=8, disable_dropout=True)
        trainer = cls(model=LlamaForCausalLM.from_pretrained(folder), reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                      train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4), processing_class=tokenizer)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets for each window
        return trainer

    return lambda loss_type, beta=0.0: (make(GRPOTrainer, loss_type, beta), make(lean_update_trainer(GRPOTrainer), loss_type, beta))


def micro_batch(advantages, dead_row=None):
    """4 rollouts as TRL batches them: prompts padded on the left, completions on the right, observations masked."""
    torch.manual_seed(1)
    prompt_lengths, completion_lengths = [5, 3, 6, 4], [7, 2, 5, 3]
    prompt_mask = torch.tensor([[0] * (8 - n) + [1] * n for n in prompt_lengths])
    completion_mask = torch.tensor([[1] * n + [0] * (10 - n) for n in completion_lengths])
    tool_mask = completion_mask.clone()
    tool_mask[0, 2:4] = 0  # an observation inside the first rollout
    if dead_row is not None:
        tool_mask[dead_row] = 0  # a group dropped by dynamic sampling
    mask = completion_mask * tool_mask
    return {"prompt_ids": torch.randint(10, 1000, (4, 8)) * prompt_mask, "prompt_mask": prompt_mask,
            "completion_ids": torch.randint(10, 1000, (4, 10)) * completion_mask, "completion_mask": completion_mask,
            "tool_mask": tool_mask, "advantages": torch.tensor(advantages), "num_items_in_batch": mask.sum().float()}


def loss_and_grads(trainer, inputs):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(inputs))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type,beta,advantages,dead_row", [
    ("dapo", 0.0, [0.5, -0.5, 0.0, 1.0], 1),   # DAPO: a dropped row and a zero-advantage row are skipped
    ("dapo", 0.04, [0.5, -0.5, 0.0, 1.0], 1),  # with a KL term a zero-advantage row still has a gradient
    ("grpo", 0.0, [0.5, -0.5, 0.0, 1.0], 2),   # a per-row mean: every row stays, only padding goes
    ("bnpo", 0.0, [0.5, -0.5, 0.0, 1.0], None),
])
def test_the_lean_update_has_trls_loss_and_gradient(trainers, loss_type, beta, advantages, dead_row):
    trl, lean = trainers(loss_type, beta)
    inputs = micro_batch(advantages, dead_row)
    if beta:
        inputs["ref_per_token_logps"] = -torch.rand(4, 10)
    want_loss, want = loss_and_grads(trl, inputs)
    got_loss, got = loss_and_grads(lean, inputs)
    assert torch.allclose(got_loss, want_loss, atol=1e-6, rtol=1e-4)
    assert want.keys() == got.keys()
    for name in want:  # the same up to float rounding (positions shift with the trimmed prompt padding)
        assert (got[name] - want[name]).norm() <= 1e-4 * want[name].norm() + 1e-7, name
    assert any(g.abs().sum() > 0 for g in want.values())  # a gradient that could have differed


def test_what_the_lean_update_leaves_out(trainers):
    """The rows and columns the lean update computes: live rows only, no column that is padding for all of them."""
    from webdancer_rl.trl_update import live_rows, trimmed

    inputs = micro_batch([0.5, -0.5, 0.0, 1.0], dead_row=1)
    assert live_rows(inputs, zero_advantage_is_dead=False) == [0, 2, 3]
    assert live_rows(inputs, zero_advantage_is_dead=True) == [0, 3]
    lean = trimmed(inputs, [0, 3])
    assert lean["prompt_ids"].shape == (2, 5) and lean["completion_ids"].shape == (2, 7)  # longest prompt 5, completion 7
    assert torch.equal(lean["advantages"], torch.tensor([0.5, 1.0])) and lean["num_items_in_batch"] is inputs["num_items_in_batch"]


def test_only_the_tokens_the_model_wrote_are_scored(trainers):
    """TRL labels every completion token, tool observations included; the lean update labels the model's own only."""
    trl, lean = trainers("dapo")
    inputs = micro_batch([0.5, -0.5, 0.0, 1.0], dead_row=1)

    def labelled(trainer):
        seen = []
        hook = trainer.model.register_forward_hook(lambda module, args, out: seen.append(int(out.label_mask.sum())))
        try:
            loss_and_grads(trainer, inputs)
        finally:
            hook.remove()
        return sum(seen)

    model_written = int((inputs["completion_mask"] * inputs["tool_mask"])[[0, 3]].sum())  # the live rows
    assert labelled(lean) == model_written < labelled(trl)


def test_a_micro_batch_of_dead_rows_gives_zero_gradients_without_a_forward(trainers):
    trl, lean = trainers("dapo")
    inputs = micro_batch([0.0, 0.0, 0.0, 0.0])
    calls = []
    hook = lean.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        got_loss, got = loss_and_grads(lean, inputs)
    finally:
        hook.remove()
    want_loss, want = loss_and_grads(trl, inputs)
    assert not calls and got_loss == 0 == want_loss
    assert got.keys() == want.keys() and all(not g.any() for g in got.values())


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
def test_a_restarted_rollout_trains_as_its_segments_would_as_rows_of_their_own(trainers, loss_type):
    """ReSum-GRPO: a rollout the context policy restarted is one row (its segments end to end, the second segment's
    prompt masked), each segment scored after its own prompt; loss and gradient equal TRL's on the segments as separate
    rows sharing the rollout's advantage (as verl trains them), for a token mean and for losses that average per
    sequence alike, and the labelled tokens are still the model's own only."""
    from webdancer_rl.trl_update import row_key

    trl, lean = trainers(loss_type)
    torch.manual_seed(2)
    p1, c1, p2, c2, other_p, other_c = (torch.randint(10, 1000, (n,)) for n in (5, 6, 4, 5, 3, 7))
    m1 = torch.tensor([1, 1, 0, 0, 1, 1])  # an observation inside the first segment
    m2 = torch.ones(5, dtype=torch.long)

    def batch(rows, advantages):
        """rows: (prompt, completion, loss mask) padded as TRL pads them."""
        pw, cw = max(len(p) for p, _, _ in rows), max(len(c) for _, c, _ in rows)
        prompt_ids = torch.stack([torch.cat([torch.zeros(pw - len(p), dtype=torch.long), p]) for p, _, _ in rows])
        prompt_mask = torch.stack([torch.tensor([0] * (pw - len(p)) + [1] * len(p)) for p, _, _ in rows])
        completion_ids = torch.stack([torch.cat([c, torch.zeros(cw - len(c), dtype=torch.long)]) for _, c, _ in rows])
        completion_mask = torch.stack([torch.tensor([1] * len(c) + [0] * (cw - len(c))) for _, c, _ in rows])
        tool_mask = torch.stack([torch.cat([m, torch.zeros(cw - len(m), dtype=torch.long)]) for _, _, m in rows])
        return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids, "completion_mask": completion_mask,
                "tool_mask": tool_mask, "advantages": torch.tensor(advantages),
                "num_items_in_batch": (completion_mask * tool_mask).sum().float()}

    packed = batch([(p1, torch.cat([c1, p2, c2]), torch.cat([m1, torch.zeros(4, dtype=torch.long), m2])), (other_p, other_c, torch.ones(7, dtype=torch.long))],
                   [0.7, -0.4])
    separate = batch([(p1, c1, m1), (p2, c2, m2), (other_p, other_c, torch.ones(7, dtype=torch.long))], [0.7, 0.7, -0.4])
    assert packed["num_items_in_batch"] == separate["num_items_in_batch"]
    lean.restarted_rows = {row_key(torch.cat([p1, c1, p2, c2]).tolist()): [(6, 4)]}
    lean.segment_scale = 2 / 3  # 2 rows, 3 segments
    try:
        seen = []
        hook = lean.model.register_forward_hook(lambda module, args, out: seen.append(int(out.label_mask.sum())))
        try:
            got_loss, got = loss_and_grads(lean, packed)
        finally:
            hook.remove()
    finally:
        lean.restarted_rows, lean.segment_scale = {}, 1.0
    want_loss, want = loss_and_grads(trl, separate)
    assert torch.allclose(got_loss, want_loss, atol=1e-6, rtol=1e-4)
    for name in want:
        assert (got[name] - want[name]).norm() <= 1e-4 * want[name].norm() + 1e-7, name
    assert sum(seen) == int(m1.sum() + m2.sum() + 7)  # the two segments and the other row: model-written tokens only
    # Without the layout the row is one context: another gradient (the check above could fail)
    _, wrong = loss_and_grads(lean, packed)
    assert any((wrong[name] - want[name]).norm() > 1e-3 * want[name].norm() for name in want)
