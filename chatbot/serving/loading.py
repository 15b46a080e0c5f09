"""Load a servable model from a folder, refusing anything corrupt or incomplete."""

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


# transformers switches torch's process-wide default dtype while it builds a model, so two
# models loading at once in different threads (the chat model in bf16, the float32 embedding
# model) can end up with each other's dtypes. Every model load in the process takes this lock.
MODEL_LOAD_LOCK = threading.Lock()


class ModelLoadError(Exception):
    """The folder does not hold a loadable model; the caller keeps what it had."""


@dataclass
class LoadedModel:
    path: str
    model: Any  # a transformers PreTrainedModel
    tokenizer: Any  # its tokenizer


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name} in {path.parent} is unreadable: {exc}") from exc


def artifact_check(path: Path) -> str:
    """Return "full" or "adapter" for a folder that looks loadable, else raise ModelLoadError."""
    if not path.is_dir():
        raise ModelLoadError(f"Model folder {path} does not exist.")
    if (path / "adapter_config.json").exists():
        _read_json(path / "adapter_config.json")
        if not any((path / name).exists() for name in ADAPTER_FILES):
            raise ModelLoadError(f"Adapter folder {path} has no adapter weights.")
        return "adapter"
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path} holds no config.json: not a model folder.")
    _read_json(path / "config.json")
    if not any((path / name).exists() for name in WEIGHT_FILES):
        raise ModelLoadError(f"Model folder {path} has no weights file.")
    return "full"


def model_config_load(path: str | Path):
    """The model's config, minus a stale GGUF `quantization_config`.

    A folder converted from GGUF by older code keeps that marker although its weights are
    plain floats; transformers would then route every matmul through its GGUF kernels
    (slower) and Trainer would refuse to train it.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    marker = getattr(config, "quantization_config", None)
    if isinstance(marker, dict) and marker.get("quant_method") == "gguf":
        del config.quantization_config
    return config


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(name, torch.float32)


def model_load(
    path: str | Path, *, base_path: str | Path = "", dtype: str = "float32"
) -> LoadedModel:
    """Load a full model folder, or a LoRA adapter folder merged into `base_path`.

    Adapters are merged for serving speed. Any failure (missing folder, corrupt weights,
    wrong shapes) surfaces as ModelLoadError.
    """
    path = Path(path)
    kind = artifact_check(path)
    torch_dtype = _torch_dtype(dtype)
    with MODEL_LOAD_LOCK:
        return _load(path, kind, base_path, dtype, torch_dtype)


def _load(path: Path, kind: str, base_path, dtype: str, torch_dtype) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        if kind == "adapter":
            from peft import PeftModel

            if not base_path:
                raise ModelLoadError(f"Adapter {path} needs a base model path.")
            artifact_check(Path(base_path))
            base = AutoModelForCausalLM.from_pretrained(
                base_path, config=model_config_load(base_path), dtype=torch_dtype
            )
            model = PeftModel.from_pretrained(base, path).merge_and_unload()
            tokenizer_dir = path if (path / "tokenizer_config.json").exists() else base_path
        else:
            model = AutoModelForCausalLM.from_pretrained(
                path, config=model_config_load(path), dtype=torch_dtype
            )
            tokenizer_dir = path
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any loader failure means "not loadable"
        raise ModelLoadError(f"Could not load model from {path}: {exc}") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    log.info("Loaded model %s (%s, %s)", path, kind, dtype)
    return LoadedModel(path=str(path), model=model, tokenizer=tokenizer)
