"""`webdancer traj check`: do the model's chat template and the trained tokens agree?"""

from __future__ import annotations

from typing import Optional

import click


@click.group("traj")
def traj_group() -> None:
    """Trajectories as tokens: check what was trained against what the chat template renders."""


@traj_group.command("check")
@click.argument("rollouts", type=click.Path(exists=True))
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False), help="The model folder whose tokenizer and chat template to render with.")
@click.option("--chat-template", type=click.Path(exists=True, dir_okay=False), default=None, help="A Jinja chat template file to use instead of the model's.")
@click.option("--limit", type=int, default=0, help="Check only the first N rollouts (0: all).")
@click.option("--show", type=int, default=10, show_default=True, help="Rollouts that drift to print.")
@click.option("--strict", is_flag=True, help="Fail on tokenization drift and turns cut by a stop string too, not only on template drift.")
def check_cmd(rollouts: str, model_dir: str, chat_template: Optional[str], limit: int, show: int, strict: bool) -> None:
    """Re-render every rollout of ROLLOUTS (token_rollouts.jsonl of `webdancer rl train`, verl's token_rollouts/ folder, or
    trajectories sampled or evaluated with model.return_token_ids) from its text with the chat template, and report
    each rollout whose re-rendered tokens differ from the sampled ones (the first differing turn of each; for a
    trajectory, also a turn whose server rendered the earlier turns otherwise than they were sampled). Template drift (the re-rendered text differs: SFT or a trainer re-rendering these conversations sees
    other text than was sampled) exits 1; tokenization drift (the same text, tokenized otherwise, as a model sampling
    at temperature 1 or a turn cut mid-word gives) and turns cut by a stop string are counted, and exit 1 with --strict."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from webdancer.jsonl import iter_json_lines
    from webdancer.records import Trajectory, record_from_dict
    from webdancer.token_trajectories import Drift, TokenRollout, check, rollouts_of, segment_records

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if chat_template:
        tokenizer.chat_template = Path(chat_template).read_text()
    files = sorted(Path(rollouts).glob("*.jsonl")) if Path(rollouts).is_dir() else [Path(rollouts)]
    if not files:
        raise click.UsageError(f"{rollouts}: no .jsonl files")
    checked, untokenized, drifts = 0, 0, []
    lines = ((path, number, obj) for path in files for number, obj in iter_json_lines(path))
    for path, number, obj in lines:
        if limit and checked >= limit:
            break
        if isinstance(obj, dict) and "steps" in obj:  # a sampled trajectory: a record per segment
            records = rollouts_of(record_from_dict(Trajectory, obj, f"{path}:{number}"), tokenizer)
            if not records:
                untokenized += 1
                continue
        else:
            records = segment_records(record_from_dict(TokenRollout, obj, f"{path}:{number}"))
        for record in records:
            checked += 1
            drift = record if isinstance(record, Drift) else check(record, tokenizer)
            if drift is not None:
                drifts.append(drift)
                if len(drifts) <= show:
                    click.echo(drift.describe())
    if untokenized:
        click.echo(f"{untokenized} trajectories have no token ids (sampled without model.return_token_ids, or by a server that "
                   "does not report them): not checked")
    if not checked:
        raise click.ClickException(f"{rollouts}: nothing to check (no rollouts, no trajectory with token ids)")
    template = [d for d in drifts if d.cause == "template"]
    tokenization = sum(1 for d in drifts if d.cause == "tokenization")
    cut = sum(1 for d in drifts if d.cause == "cut")
    context = sum(1 for d in drifts if d.cause == "context")
    if not template:
        click.echo(f"{checked} rollouts: the chat template renders every turn's text as it was sampled"
                   + (f"; {tokenization} sampled a tokenization that re-encoding their text does not give back" if tokenization else "")
                   + (f"; {cut} had a turn cut by a stop string after sampling (model.stop)" if cut else "")
                   + (f"; {context} had an earlier observation rewritten by the context policy (agent.context)" if context else ""))
        if strict and (tokenization or cut or context):
            raise SystemExit(1)
        return
    kinds = sorted({d.kind for d in template})
    click.echo(f"{len(template)} of {checked} rollouts drift in their text ({', '.join(kinds)} turns): a conversation re-rendered by this "
               "template is not what was trained; use the template the rollouts were made with (webdancer_models.chat_template)"
               + (f". {tokenization} more differ only in tokenization." if tokenization else ""))
    raise SystemExit(1)
