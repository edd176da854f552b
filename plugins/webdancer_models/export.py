"""`webdancer model export`: a named model -> a plain Hugging Face folder every trainer and server can load."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path
from typing import Optional

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_write_text
from webdancer_models.chat_template import TURN_END, WIRE_CHATML_TEMPLATE
from webdancer_models.registry import get_source, locate_gguf

MARKER = "webdancer_model.json"


def is_stale_gguf_quantization(config: dict) -> bool:
    """A `quantization_config` left by loading from GGUF: the weights beside it are plain floats.

    transformers' Trainer refuses such a model ("purely quantized"), and vLLM/SGLang look for a GGUF file.
    """
    quant = config.get("quantization_config")
    return isinstance(quant, dict) and quant.get("quant_method") == "gguf"


def clean_model_folder(folder: Path) -> bool:
    """Drop a stale GGUF `quantization_config` from `folder/config.json` (atomically); True when it changed.

    Folders exported before this fix (and checkpoints trained from them) carry it.
    """
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not is_stale_gguf_quantization(config):
        return False
    del config["quantization_config"]
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return True


def sample_when_asked(folder: Path) -> bool:
    """Make `transformers serve` honour a request's temperature as every OpenAI server does; True when it changed.

    It samples only when the model's generation_config says `do_sample` (a request with temperature 0
    turns it off again), so without this a temperature of 0.6 still decodes greedily and k runs of a
    question are k copies. `top_k` is turned off too: OpenAI's API has temperature and top_p only.
    """
    from transformers import AutoConfig, GenerationConfig

    folder = Path(folder)
    try:
        config = GenerationConfig.from_pretrained(folder)
    except OSError:
        config = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
    if config.do_sample is True and not config.top_k:
        return False
    config.do_sample, config.top_k = True, 0
    atomic_write_text(folder / "generation_config.json", config.to_json_string(use_diff=True))
    return True


def load_gguf(name: str):
    """The model and tokenizer from the packaged GGUF (dequantized by transformers; no hub access)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = locate_gguf(get_source(name))
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    return model, tokenizer, gguf


def install_wire_template(folder: Path) -> Optional[str]:
    """Give a model folder the wire chat template when its own does not render agent conversations verbatim.

    Writes `chat_template.jinja` (and drops `chat_template` from tokenizer_config.json, which would
    otherwise compete with it); returns the generation prefix it kept, or None when nothing changed.
    """
    from transformers import AutoTokenizer

    from webdancer_models.chat_template import generation_prefix, wire_template_for

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    template = wire_template_for(tokenizer)
    if template is None:
        return None
    prefix = generation_prefix(tokenizer)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if "chat_template" in config:
        del config["chat_template"]
        atomic_write_text(config_file, json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(folder / "chat_template.jinja", template)
    return prefix


def export_model(name: str, out_dir: Path) -> Path:
    """Write safetensors + config + tokenizer + wire-format chat template into `out_dir`.

    A GGUF-loaded model is flagged quantized and refuses save_pretrained, so the weights are
    copied into a fresh model built from the same config. An existing export of the same model
    is kept (resume); a folder holding anything else is never overwritten.
    """
    import torch
    from transformers import AutoModelForCausalLM

    source = get_source(name)
    marker = out_dir / MARKER
    if marker.is_file():
        done = json.loads(marker.read_text(encoding="utf-8"))
        if done.get("name") == name:
            clean_model_folder(out_dir)
            return out_dir
        raise WebdancerError(f"{out_dir} already holds an export of '{done.get('name')}'; choose another folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise WebdancerError(f"{out_dir} exists and is not empty; choose an empty or new folder")
    model, tokenizer, gguf = load_gguf(name)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the GGUF loader's; the copy below holds float32 weights
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise WebdancerError(f"weights of '{name}' did not map onto its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    fresh.tie_weights()
    fresh.generation_config = model.generation_config
    fresh.generation_config.do_sample, fresh.generation_config.top_k = True, 0  # see sample_when_asked
    tokenizer.chat_template = WIRE_CHATML_TEMPLATE
    # The template ends every turn with <|im_end|>: that is the end-of-sequence token generation and RL stop at.
    # (transformers 5.10's GGUF conversion names <|im_start|> instead; 5.24's gets it right.)
    tokenizer.eos_token = TURN_END
    tokenizer.pad_token = tokenizer.pad_token or TURN_END
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps(
            {"name": name, "source": str(gguf), "distribution": source.distribution, "license": source.license,
             "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            indent=2,
        ),
        encoding="utf-8",
    )
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)
    return out_dir
