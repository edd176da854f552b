"""The LLM path of the synthesizers: fill a prompt from configs/prompts/, parse the JSON the model returns."""

from __future__ import annotations

from typing import Any, Optional

from webdancer.config import ModelConfig
from webdancer.errors import OutageError, WebdancerError
from webdancer.llm import ChatClient, parse_json_object
from webdancer.options import validate_options
from webdancer.records import Message


def make_client(options: dict[str, Any], where: str) -> Optional[ChatClient]:
    if not options:
        return None
    model = validate_options(ModelConfig, options, where)
    model.stop = []
    return ChatClient(model)


async def ask_json(client: ChatClient, prompt: str) -> Optional[dict[str, Any]]:
    """One completion parsed as a JSON object; None when the reply is not one (counted by the caller).

    An outage of the model is not a bad reply: it stops the synthesis (a rerun resumes), no item is dropped for it.
    """
    try:
        reply = await client.chat([Message("user", prompt)])
    except OutageError:
        raise
    except WebdancerError:
        return None
    return parse_json_object(reply.text)
