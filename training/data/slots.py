"""The dataset's `{{Placeholder}}` template slots, rewritten on purpose.

The bot must never show a raw slot to a customer, so training text holds none: slots that
name shop facts are filled from shop settings (SHOP_NAME, SHOP_SUPPORT_EMAIL,
SHOP_SUPPORT_PHONE, SHOP_SUPPORT_HOURS); slots standing for a customer's order, bill or
purchase id become a neutral phrase (the bot must not invent numbers); UI labels such as
`{{Order History}}` keep their label text. Square-bracket slots (`[Customer Support Phone
Number]`) are filled the same way when their name is a known shop fact.
"""

import re

from django.conf import settings

CURLY_SLOT = re.compile(r"\{\{\s*([^{}\n]{1,80}?)\s*\}\}")
BRACKET_SLOT = re.compile(r"\[([A-Z][A-Za-z ]{0,50})\]")  # PII masks are lowercase
# What the evaluation counts as a raw slot in a reply.
RAW_SLOT = re.compile(r"\{\{[^{}\n]{0,80}\}\}|\[[A-Z][A-Za-z]*(?: [A-Z][A-Za-z]*)*\]")
ID_SLOT = re.compile(
    r"anonymi[sz]ed|^\d+$|\b(?:order|purchase|bill|invoice|tracking)\s+(?:number|id)\b", re.I
)
ID_LEAD = re.compile(r"(?:\bnumber|\bID|#)\s*$", re.I)


def _shop_fact(name: str) -> str | None:
    lower = name.lower()
    if "phone" in lower:
        # With no shop phone, "reach them at our support line" taught the model to add a
        # made-up number ("at our support number (807-234-6211)": 7 of 8 leaked-PII replies of
        # a seed fine-tune); the shop's own e-mail fills the same place with a real contact.
        return settings.SHOP_SUPPORT_PHONE or settings.SHOP_SUPPORT_EMAIL or "live chat"
    if "live chat" in lower or lower == "chat":
        return "live chat"
    if "email" in lower:
        return settings.SHOP_SUPPORT_EMAIL
    if any(word in lower for word in ("availability", "hours", "business hours")):
        return settings.SHOP_SUPPORT_HOURS
    if any(word in lower for word in ("website name", "website url", "website or app")):
        return f"the {settings.SHOP_NAME} website"
    if lower in {"company name", "store name", "shop name"}:
        return settings.SHOP_NAME
    return None


def _curly(match: re.Match) -> str:
    name = match.group(1).strip()
    fact = _shop_fact(name)
    if fact is not None:
        return fact
    if ID_SLOT.search(name):
        before = match.string[: match.start()]
        return "in question" if ID_LEAD.search(before) else "your order"
    if name.lower() in {"x", "y", "number of days", "x to y"}:
        return "a few"
    return name


def _bracket(match: re.Match) -> str:
    name = match.group(1).strip()
    fact = _shop_fact(name)
    if fact is not None:
        return fact
    if name in {"X", "Y", "X to Y"}:
        return "a few"
    return match.group(0)


def slots_rewrite(text: str) -> str:
    """Replace every template slot with shop facts or neutral text (see module docstring)."""
    text = CURLY_SLOT.sub(_curly, text)
    # Shop-settings values like "the X website" can follow "our": keep it readable.
    text = re.sub(r"\bour the\b", "the", text)
    return BRACKET_SLOT.sub(_bracket, text)


def raw_slots(text: str) -> list[str]:
    return RAW_SLOT.findall(text)
