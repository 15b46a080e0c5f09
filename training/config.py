"""One config dataclass for data preparation, LoRA fine-tuning and DPO.

Defaults come from the dataclass, overridden by `TRAINING_<FIELD>` environment variables
(read into settings.TRAINING_ENV), overridden by command-line options (`--learning-rate 1e-4`).
"""

import argparse
import dataclasses
from dataclasses import dataclass, field


def _help(text: str) -> dict:
    return {"help": text}


@dataclass
class TrainConfig:
    # Optimisation
    learning_rate: float = field(default=2e-4, metadata=_help("AdamW peak learning rate (SFT)."))
    # 4 x 2 = 8 sequences per optimizer step; 8 x 1 peaked at 11.8 GB on 384-token rows.
    batch_size: int = field(default=4, metadata=_help("Sequences per step (before accumulation)."))
    grad_accum: int = field(default=2, metadata=_help("Gradient accumulation steps."))
    epochs: float = field(default=1.0, metadata=_help("Passes over the training split."))
    max_steps: int = field(default=-1, metadata=_help("Cap on optimizer steps; -1 = no cap."))
    max_length: int = field(
        default=384, metadata=_help("Longest tokenized example; longer dropped.")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    warmup_ratio: float = field(default=0.05, metadata=_help("Share of steps spent warming up."))
    lr_scheduler: str = field(default="cosine", metadata=_help("transformers scheduler name."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))
    bf16: bool = field(
        default=True, metadata=_help("bf16 autocast where the CPU/GPU has bf16 instructions.")
    )
    # LoRA
    lora_r: int = field(default=16, metadata=_help("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=_help("LoRA scaling alpha."))
    # Dropout copies every LoRA input: 0.05 cost 1.4 GB more at micro-batch 4 (6.7 vs 5.3 GB).
    lora_dropout: float = field(default=0.0, metadata=_help("Dropout on the LoRA path."))
    lora_target_modules: str = field(
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        metadata=_help("Comma-separated module names that get adapters."),
    )
    # Run control
    seed: int = field(default=42, metadata=_help("Seed for split, shuffling, init and sampling."))
    eval_steps: int = field(default=50, metadata=_help("Validate (and checkpoint) every N steps."))
    early_stopping_patience: int = field(
        default=3, metadata=_help("Stop after N validations without a better loss; 0 = off.")
    )
    max_train_examples: int = field(
        default=0, metadata=_help("Use only the first N training examples; 0 = all.")
    )
    max_eval_examples: int = field(
        default=200, metadata=_help("Validation examples used for early stopping; 0 = all.")
    )
    # Incremental retrains (continue from the parent adapter) and preferences
    incremental: bool = field(
        default=True,
        metadata=_help("Continue from the parent's adapter on new rows + replay; 0 = full."),
    )
    replay_examples: int = field(
        default=256, metadata=_help("Earlier training rows replayed in an incremental run.")
    )
    replay_neighbour_share: float = field(
        default=0.0,
        metadata=_help(
            "Share of the replayed rows chosen as the earlier questions nearest (MiniLM) to the "
            "new rows' questions, the rest at random; 0 = all at random."
        ),
    )
    incremental_learning_rate: float = field(
        default=1e-3, metadata=_help("Peak learning rate of an incremental run.")
    )
    incremental_epochs: float = field(
        default=1.0, metadata=_help("Passes over new rows + replay in an incremental run.")
    )
    incremental_keep: float = field(
        default=0.9,
        metadata=_help(
            "Share of an incremental run's change the candidate keeps: its adapter weights are "
            "the parent's moved this far toward the trained ones (1 = as trained)."
        ),
    )
    incremental_mixed_batches: bool = field(
        default=True,
        metadata=_help(
            "Incremental runs draw each step's rows at random, so every update mixes new rows "
            "with replayed ones (split into micro-batches by length, for less padding); "
            "0 = length-grouped batches as in full runs (they put the short "
            "correction rows together, and the run spilled the corrections into other answers)."
        ),
    )
    incremental_eval_examples: int = field(
        default=16, metadata=_help("Validation rows for early stopping in an incremental run.")
    )
    dpo_beta: float = field(default=0.1, metadata=_help("DPO temperature beta."))
    dpo_min_pairs: int = field(default=50, metadata=_help("Run DPO after SFT from N pairs on."))
    dpo_learning_rate: float = field(default=5e-6, metadata=_help("DPO learning rate."))
    dpo_epochs: float = field(default=1.0, metadata=_help("DPO passes over the pairs."))
    # Data preparation (build_dataset)
    validation_share: float = field(
        default=0.1, metadata=_help("Share of conversations held out for validation.")
    )
    max_turn_chars: int = field(default=2000, metadata=_help("Drop examples with a longer turn."))
    near_duplicate_threshold: float = field(
        default=0.6,
        metadata=_help("Word 3-shingle Jaccard similarity at which two examples are duplicates."),
    )
    # What trains (build_dataset): reviewed text, corrections weighted and paraphrased
    include_thumbs_up: bool = field(
        default=False,
        metadata=_help("Also train on bot replies customers liked (nobody rated bad/flagged)."),
    )
    correction_weight: int = field(
        default=8, metadata=_help("Times a correction row is seen per epoch.")
    )
    paraphrase_weight: int = field(
        default=4, metadata=_help("Times a correction-paraphrase row is seen per epoch.")
    )
    paraphrases_per_correction: int = field(
        default=8,
        metadata=_help("Paraphrases the base model writes per corrected question; 0 = off."),
    )
    paraphrase_min_similarity: float = field(
        default=0.82, metadata=_help("MiniLM cosine a paraphrase needs to its question.")
    )
    paraphrase_max_similarity: float = field(
        default=0.985, metadata=_help("Paraphrases closer than this are copies: dropped.")
    )
    paraphrase_eval_share: float = field(
        default=0.34, metadata=_help("Share of paraphrases held out as evaluation cases.")
    )
    supersede_min_similarity: float = field(
        default=0.65,
        metadata=_help(
            "Imported corpus rows whose question is this close (MiniLM cosine) to a corrected "
            "question are left out of training and evaluation: the correction answers them "
            "now (0.65 = APPROVED_VERBATIM_MIN_SCORE, same category 99 % of the time). 0 = off."
        ),
    )
    nearest_min_similarity: float = field(
        default=0.65,
        metadata=_help(
            "Imported corpus questions this close (MiniLM cosine) to a corrected question take "
            "the correction's answer: real customers' wordings of it, held out as the gate's "
            "correction cases (or trained, see nearest_eval_share). 0 = off."
        ),
    )
    nearest_margin: float = field(
        default=0.06,
        metadata=_help(
            "How much closer such a question must be to its correction than to any question "
            "corrected with another answer: MiniLM puts 'how long it takes for my order to "
            "arrive' 0.71 from 'How long do I have to return something?' (0.03 let three such "
            "rows through with the returns answer in bench-loop; 0.06 none)."
        ),
    )
    nearest_eval_share: float = field(
        default=1.0,
        metadata=_help(
            "Share of those corpus questions held out as the correction's evaluation cases "
            "(by hash; the rest train with the correction's answer). 1 = all judge the gate "
            "and none train: training them spilled into general answers (seed similarity "
            "-0.029 in bench-loop)."
        ),
    )
    eval_seed_share: float = field(
        default=0.12,
        metadata=_help("Share of seed rows in the frozen evaluation set (by id hash)."),
    )

    @property
    def target_modules(self) -> list[str]:
        return [name.strip() for name in self.lora_target_modules.split(",") if name.strip()]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _cast(field_type, value):
    kind = field_type
    if kind is bool:
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in {"1", "true", "yes", "on"}
    return kind(value)


def train_config(**overrides) -> TrainConfig:
    """Dataclass defaults < settings.TRAINING_ENV (TRAINING_* env vars) < `overrides`.

    Unknown names raise TypeError; None values in `overrides` are ignored (unset options).
    """
    from django.conf import settings

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values = {}
    for name, raw in getattr(settings, "TRAINING_ENV", {}).items():
        if name in fields:
            values[name] = _cast(fields[name].type, raw)
    for name, raw in overrides.items():
        if name not in fields:
            raise TypeError(f"TrainConfig has no field {name!r}")
        if raw is not None:
            values[name] = _cast(fields[name].type, raw)
    return TrainConfig(**values)


def config_arguments_add(parser: argparse.ArgumentParser) -> None:
    """Add one `--field-name` option per TrainConfig field (default: unset)."""
    group = parser.add_argument_group("training config (defaults from TRAINING_* settings)")
    for f in dataclasses.fields(TrainConfig):
        group.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, default=None, help=f.metadata["help"]
        )


def config_from_options(options: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return train_config(**{k: v for k, v in options.items() if k in names})
