import pytest

from training.config import train_config
from training.models import SeedExample

QUESTIONS = [
    ("How can I track my order?", "You can track it from the order history page."),
    ("I want a refund for my purchase.", "Refunds take five to seven business days."),
    ("Where is my parcel?", "Shipping usually takes two days."),
    ("Can I change my delivery address?", "Yes, you can change it before the order ships."),
    ("Do you sell gift cards?", "Yes, gift cards are sold on the website."),
    ("How do I reset my password?", "Use the forgot password link on the sign in page."),
    ("Can I pay with PayPal?", "Yes, PayPal is one of our payment methods."),
    ("What is your return policy?", "Returns are accepted within thirty days of delivery."),
    ("How do I cancel my order?", "Open the order details and press the cancel button."),
    ("Is there a newsletter?", "Yes, you can subscribe at the bottom of any page."),
    ("Can I talk to a human?", "Of course, I will connect you with an agent now."),
    ("Do you ship abroad?", "We ship to most countries in Europe and North America."),
]


@pytest.fixture
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    # The tiny tokenizer spends a token on almost every character: keep the prompt short.
    settings.SHOP_POLICIES = "Returns within 30 days."
    return settings.DATA_DIR


@pytest.fixture
def seed_corpus(db):
    """Twelve distinct questions, each asked three ways (different wording, same answer)."""
    rows = []
    for i, (question, answer) in enumerate(QUESTIONS):
        for j, prefix in enumerate(("", "Hello, ", "Quick question: ")):
            rows.append(
                SeedExample(
                    source="test",
                    external_id=f"{i}-{j}",
                    customer=prefix + question,
                    agent=answer,
                )
            )
    SeedExample.objects.bulk_create(rows)
    return rows


WORDINGS = ("", "Hello, ", "Quick question: ", "Hi! ", "Please tell me: ", "Hey there. ")


@pytest.fixture
def wide_seed_corpus(db):
    """The twelve questions, each asked six ways (same answer): enough rows per answer for
    the learnable tiny model to learn them whatever the hash splits hold out."""
    rows = [
        SeedExample(source="test", external_id=f"{i}-{j}", customer=prefix + q, agent=a)
        for i, (q, a) in enumerate(QUESTIONS)
        for j, prefix in enumerate(WORDINGS)
    ]
    SeedExample.objects.bulk_create(rows)
    return rows


@pytest.fixture
def tiny_cfg():
    """Settings that make the tiny model learn visibly in a few CPU seconds."""
    return train_config(
        learning_rate=5e-3,
        batch_size=4,
        grad_accum=1,
        epochs=8,
        max_length=512,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        eval_steps=10,
        early_stopping_patience=0,
        validation_share=0.25,
        near_duplicate_threshold=0.999,
        warmup_ratio=0.0,
        bf16=False,
    )
