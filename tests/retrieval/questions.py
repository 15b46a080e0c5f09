"""Paraphrased customer questions with the demo article that answers each (file stem).

Written for chatbot/demo/knowledge; used for the recall@3 test and `make bench-retrieval`.
"""

QUESTIONS: list[tuple[str, str]] = [
    # shipping
    ("How soon after I order will you send my package out?", "shipping"),
    ("When does my stuff leave the warehouse?", "shipping"),
    ("how many days does delivery take", "shipping"),
    ("Is shipping free if I spend enough?", "shipping"),
    ("What does express delivery cost?", "shipping"),
    ("Where can I see where my parcel is right now?", "shipping"),
    ("The tracking link shows nothing yet, is that normal?", "shipping"),
    ("Do you deliver to Norway or the UK?", "shipping"),
    ("Will I have to pay customs fees when ordering from Switzerland?", "shipping"),
    ("My package never showed up, it's been two weeks", "shipping"),
    # returns
    ("Can I still send back a jacket I got three weeks ago?", "returns"),
    ("How many days do I have to return something?", "returns"),
    ("What are the steps to send an item back?", "returns"),
    ("Do I need to pay for the return label?", "returns"),
    ("Can I return swimwear?", "returns"),
    ("I want these shoes in a bigger size instead", "returns"),
    ("Can I swap my t-shirt for a different colour?", "returns"),
    ("The mug was broken when it arrived", "returns"),
    ("You sent me the wrong product", "returns"),
    ("Is it possible to return worn clothes without the tags?", "returns"),
    # refunds
    ("When will I get my money back?", "refunds"),
    ("How long does a refund take after you get my return?", "refunds"),
    ("Can you refund me to a different card?", "refunds"),
    ("I paid with a gift card, how am I refunded?", "refunds"),
    ("Do I get the shipping fee back as well?", "refunds"),
    ("My refund still hasn't appeared on my bank statement", "refunds"),
    ("Will the refund go to my PayPal?", "refunds"),
    ("it's been two weeks since you confirmed my refund and nothing", "refunds"),
    # payment
    ("Which payment methods do you take?", "payment"),
    ("Can I pay with Apple Pay?", "payment"),
    ("Do you offer cash on delivery?", "payment"),
    ("When is the money taken from my card?", "payment"),
    ("I see two charges for one purchase", "payment"),
    ("Why was my credit card declined?", "payment"),
    ("Where do I find my invoice?", "payment"),
    ("I need a VAT number on my bill", "payment"),
    ("Can I buy now and pay later with Klarna?", "payment"),
    # account
    ("I forgot my password", "account"),
    ("I can't log in, my account seems locked", "account"),
    ("The reset email never arrived", "account"),
    ("How do I change the email address on my account?", "account"),
    ("Where can I update my saved address?", "account"),
    ("How do I stop getting your newsletter?", "account"),
    ("Please delete my account and my data", "account"),
    ("Do I need an account to order?", "account"),
    # order changes
    ("How do I cancel my order?", "order-changes"),
    ("I ordered an hour ago and want to cancel", "order-changes"),
    ("Can I change the shipping address after ordering?", "order-changes"),
    ("I typed the wrong delivery address", "order-changes"),
    ("Can I add another item to my existing order?", "order-changes"),
    ("How do I remove something from an order I placed?", "order-changes"),
    ("It already shipped, can I still cancel it?", "order-changes"),
    # contact
    ("What are your opening hours for support?", "contact-support"),
    ("Can I talk to a real person?", "contact-support"),
    ("What's your support email address?", "contact-support"),
    ("I want to make a complaint about how I was treated", "contact-support"),
]

# Questions the demo knowledge base does not cover: no passage should pass the threshold.
UNRELATED: list[str] = [
    "What is the capital of Australia?",
    "Can you write me a poem about the sea?",
    "Who won the football world cup in 2014?",
    "How do I bake sourdough bread?",
]
