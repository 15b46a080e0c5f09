"""A tiny randomly initialised Llama chat model with a real BPE tokenizer, built in seconds."""

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "How can I track my order? You can track it from the order history page.",
    "I want a refund for my purchase. Refunds take five to seven business days.",
    "Where is my parcel? Shipping usually takes two days.",
    "Can I change my delivery address? Yes, before the order ships.",
    "Thank you for contacting customer support, happy to help!",
]


def tiny_model_build(folder: Path, *, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """Build it in `folder`. A larger `initializer_range` lets a LoRA adapter (which cannot
    rescale the frozen output layer) move the replies far enough to learn whole answers."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(config)
    # Keep the random model from ever choosing end-of-turn, so replies have a known length.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id].zero_()
        model.model.embed_tokens.weight[tokenizer.eos_token_id].zero_()
    model.save_pretrained(folder)
    return folder
