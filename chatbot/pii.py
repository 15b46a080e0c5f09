"""Mask personal data (emails, phone numbers, card numbers, street addresses, order ids).

Masks are short lowercase tags in square brackets, e.g. `[email]`; the evaluation uses the
same patterns (`pii_find`) to catch a reply leaking personal data.
"""

import re

EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
PHONE = re.compile(
    r"(?<![\w#])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,5}\b"
)
ADDRESS = re.compile(
    r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl)\b\.?"
)
# An id after a word that names it ("order 1234", "bill #A-9921"), a coded id ("ORD-12345"),
# or any bare run of 6+ digits left once cards and phone numbers are masked.
ORDER_ID = re.compile(
    r"(?P<lead>\b(?:order|bill|purchase|invoice|tracking|reference|refund|number|no\.|id)"
    r"\s*[:#]?\s*|#)(?P<id>(?=[A-Z-]{0,4}\d)[A-Z0-9][A-Z0-9-]{3,})\b|\b[A-Z]{2,4}-\d{4,}\b",
    re.I,
)
BARE_ID = re.compile(r"\b\d{6,}\b")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card number]" if _luhn_ok(digits) else match.group(0)


def pii_mask(text: str) -> str:
    text = EMAIL.sub("[email]", text)
    text = ORDER_ID.sub(lambda m: (m.group("lead") or "") + "[order id]", text)
    text = CARD.sub(_card, text)
    text = PHONE.sub("[phone]", text)
    text = ADDRESS.sub("[address]", text)
    return BARE_ID.sub("[order id]", text)


def pii_find(text: str, *, allowed: tuple[str, ...] = ()) -> list[str]:
    """Personal data in `text` (emails, cards, phones, addresses), except `allowed` values."""
    found = EMAIL.findall(text) + [
        m.group(0) for m in CARD.finditer(text) if _card(m) != m.group(0)
    ]
    found += PHONE.findall(text) + ADDRESS.findall(text)
    return [item for item in found if item not in allowed]
