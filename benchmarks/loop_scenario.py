"""The learning-loop benchmark's shop: three policies no model knows, what customers asked
(the replies agents correct), and held-out paraphrases that only the benchmark asks.

Nothing in the app reads this file: the app's thresholds and training settings were chosen
on the seed corpus (benchmarks/calibrate_memory.py) and never on these questions.
"""

import re
from dataclasses import dataclass

SHOP_NAME = "Fjord & Pine Outdoor"
# Deliberately silent on the three topics: the facts must come from the agents.
SHOP_POLICIES = "Support answers by email and chat from 9am to 5pm on weekdays."


@dataclass(frozen=True)
class Topic:
    name: str
    policy: str  # what agents write as the correction
    facts: tuple[str, ...]  # regexes a reply must all match to "state the corrected facts"
    asked: tuple[str, ...]  # customers' questions whose replies agents correct
    held_out: tuple[str, ...]  # paraphrases asked only to measure

    def states_facts(self, reply: str) -> bool:
        return all(re.search(fact, reply, re.I) for fact in self.facts)


TOPICS = (
    Topic(
        name="returns",
        policy=(
            "You can return unused items within 45 days of delivery. Start the return on the "
            "Orders page of your account and we email you a prepaid return label; the refund "
            "reaches you within 5 business days after the parcel arrives."
        ),
        facts=(r"\b45\b|forty[- ]five",),
        asked=(
            "How long do I have to return something?",
            "What is your return policy?",
            "can i send back a jacket i don't like",
            "How many days after delivery can I return an item?",
            "I want to return my boots, is it too late? I got them three weeks ago.",
            "Do you accept returns?",
            "How much time do I get to return an order?",
        ),
        held_out=(
            "What's the deadline for sending an item back?",
            "Is there a time limit on returns?",
            "how many days is the return window",
            "Can I still return a tent I received a month ago?",
            "If I change my mind, how long can I wait before returning it?",
            "How do returns work at your shop?",
            "Until when can I bring back a product I ordered?",
            "What's the return period for unused items?",
        ),
    ),
    Topic(
        name="delivery",
        policy=(
            "Standard delivery takes 3 to 5 business days with GLS and is free from 60 euros. "
            "Express delivery with GLS arrives the next business day for 9 euros."
        ),
        facts=(r"\bGLS\b", r"\b3\s*(?:to|-|–)\s*5\b|three to five"),
        asked=(
            "How long does delivery take?",
            "Which carrier do you use for shipping?",
            "when will my order arrive",
            "How many days does standard shipping take?",
            "Who delivers your parcels?",
            "Is shipping fast? I need my order soon.",
            "How long is the shipping time?",
        ),
        held_out=(
            "How soon will my package get to me?",
            "What shipping company do you work with?",
            "how long until my parcel arrives",
            "How many business days is standard delivery?",
            "Which courier brings the orders?",
            "I ordered today, when can I expect it?",
            "What is the delivery time for normal shipping?",
            "Do you ship with DHL or someone else?",
        ),
    ),
    Topic(
        name="warranty",
        policy=(
            "Every jacket and pair of boots we sell has a 3-year warranty. Email a photo of the "
            "defect to our support team and we repair or replace the item for free."
        ),
        facts=(r"\b(?:3|three)[- ]years?\b",),
        asked=(
            "Do your jackets have a warranty?",
            "My boot sole came off after a year, what can I do?",
            "How long is the warranty on your products?",
            "Is there a guarantee on the jackets?",
            "The zipper on my jacket broke, can you fix it?",
            "what does your warranty cover",
            "Are your boots covered by a warranty?",
        ),
        held_out=(
            "What guarantee do I get on a jacket?",
            "How many years of warranty do your boots have?",
            "My jacket's seam ripped after six months, is that covered?",
            "Do you repair defective products?",
            "what is the warranty period",
            "Is a broken zipper covered by the warranty?",
            "How long are your products guaranteed for?",
            "My boots fell apart, can I get them replaced?",
        ),
    ),
)

# Questions on other subjects (some close to the topics): no approved answer should be given.
CONTROL = (
    "How do I reset my password?",
    "Do you sell gift cards?",
    "Can I change the address on my order?",
    "Which payment methods do you accept?",
    "How do I unsubscribe from the newsletter?",
    "Can I cancel my order?",
    "Where can I find my invoice?",
    "Do you have a physical store?",
    "How do I track my order?",
    "When will I get my refund?",
)
