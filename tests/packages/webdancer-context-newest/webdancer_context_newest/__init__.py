"""A context policy that works by `pip install` alone: each prompt is the system prompt, the question and the
newest model turn with its observation (the rest is left out of the prompt; the trajectory keeps it)."""

from webdancer import hookimpl
from webdancer.context import ContextPolicy


class NewestExchange(ContextPolicy):
    name = "newest_exchange"

    async def fit(self, messages, budget):
        prompt = messages[:2] + messages[2:][-2:]
        return prompt if budget.size(prompt) <= budget.max_tokens else None


@hookimpl
def register_context_policies(register):
    register(NewestExchange)
