"""What the model is told: the shop's system prompt and a history cut to fit the context."""

from django.conf import settings


def system_prompt(knowledge: list | None = None, *, approved: str | None = None) -> str:
    """The system prompt; with `knowledge` (retrieval hits, possibly none) it also carries
    the knowledge-base passages and says what to do when they do not cover the question.
    An `approved` answer (the shop's answer to a very similar question) comes first."""
    prompt = (
        f"You are the customer-service assistant of {settings.SHOP_NAME}, an online shop. "
        f"Your tone is {settings.SHOP_TONE}. Answer the customer's question directly and "
        "briefly. Never invent order numbers, tracking numbers, amounts or dates; if you "
        "need account details, ask the customer or offer to connect them with a human agent. "
        f"Shop policies: {settings.SHOP_POLICIES} "
        f"Support email: {settings.SHOP_SUPPORT_EMAIL}."
    )
    if approved:
        prompt += (
            "\n\nThe support team's approved answer to a very similar customer question: "
            f'"{approved}"\nGive the customer this answer; never contradict it.'
        )
    if knowledge is None:
        return prompt
    return prompt + "\n\n" + knowledge_section(knowledge)


def knowledge_section(hits: list) -> str:
    if not hits:
        return (
            "No knowledge-base article matches the customer's last message. Do not guess "
            "or invent a policy: if the shop policies above do not answer it, say you are "
            "not sure and offer to connect the customer with a human agent."
        )
    passages = "\n".join(f"[{i}] {hit.title}: {hit.text}" for i, hit in enumerate(hits, 1))
    return (
        "Knowledge base passages for the customer's last message:\n"
        f"{passages}\n"
        "Answer from these passages and the shop policies only. If they do not answer the "
        "question, say so and offer to connect the customer with a human agent; never "
        "invent a policy."
    )


ROLE_FOR_MODEL = {"customer": "user", "bot": "assistant", "agent": "assistant"}


def chat_messages(
    history: list[tuple[str, str]],
    *,
    system: str | None = None,
    example: tuple[str, str] | None = None,
) -> list[dict]:
    """Turn (role, text) pairs from a conversation into chat-template messages.

    An `example` (question, answer), the approved answer's own exchange, goes first, as if
    it had been said earlier: the small model follows a shown answer far more often than one
    it is only told about (approved text's copied 4-grams 0.34 vs 0.10 on the seed corpus,
    27 intents, with the system prompt's approved answer either way)."""
    messages = [{"role": "system", "content": system if system is not None else system_prompt()}]
    if example:
        messages += [
            {"role": "user", "content": example[0]},
            {"role": "assistant", "content": example[1]},
        ]
    for role, text in history:
        if role in ROLE_FOR_MODEL:
            messages.append({"role": ROLE_FOR_MODEL[role], "content": text})
    return messages


def prompt_fit(tokenizer, messages: list[dict], budget: int) -> list[dict]:
    """Drop the oldest turns (never the system prompt or the last message) until the
    templated prompt fits in `budget` tokens; a last message still too long is cut."""
    system, turns = messages[:1], list(messages[1:])

    def length(msgs: list[dict]) -> int:
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        return len(ids if isinstance(ids, list) else ids["input_ids"])

    # The fewest oldest turns to drop, by bisection: a long conversation costs a few
    # tokenizations of its prompt, not one per dropped turn (this runs on the engine thread).
    low, high = 0, len(turns) - 1
    while low < high:
        middle = (low + high) // 2
        if length(system + turns[middle:]) <= budget:
            high = middle
        else:
            low = middle + 1
    turns = turns[low:]
    # A conversation should start with the customer.
    while len(turns) > 1 and turns[0]["role"] == "assistant":
        turns.pop(0)
    fitted = system + turns
    overflow = length(fitted) - budget
    if overflow > 0 and turns:
        last = turns[-1]
        ids = tokenizer(last["content"], add_special_tokens=False)["input_ids"]
        keep = max(1, len(ids) - overflow)
        fitted[-1] = {**last, "content": tokenizer.decode(ids[-keep:])}
    return fitted
