"""Generate the labelled support-ticket set of bench/router_bench.py (written for this repo).

    python bench/data/generate_tickets.py      # writes bench/data/support_tickets.jsonl

Tickets are built from templates per category and difficulty, with varied openers, products,
amounts, dates and closers, from a fixed seed (the output is committed as data; re-running
reproduces it byte for byte).

Difficulty:
- easy: the ticket names its topic outright ("refund", "password", "tracking number" ...);
- medium: paraphrased, without the obvious keyword ("my payment went through twice");
- hard: indirect, or mentions other topics on the way (a late parcel AND a charge, where the
  customer actually wants to cancel).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("support_tickets.jsonl")
PER_CATEGORY = 70
MIX = [("easy", 28), ("medium", 24), ("hard", 18)]

OPENERS = [
    "Hi,", "Hello team,", "Good morning,", "Hey there,", "Dear support,", "Hi folks,", "",
    "Hello,", "To whom it may concern,", "Quick question:",
]  # fmt: skip
CLOSERS = [
    "Thanks.", "Thank you!", "Regards, Dana", "Cheers", "Please advise.", "Best, M. Rossi",
    "Appreciate the help.", "", "Kind regards", "Waiting for your answer.",
]  # fmt: skip
PRODUCTS = ["Pro plan", "Team plan", "starter kit", "desk lamp", "annual licence", "headset",
            "Basic plan", "mobile app", "dashboard", "smart plug"]  # fmt: skip
DAYS = ["Monday", "Tuesday", "last week", "yesterday", "on the 3rd", "two days ago", "this morning"]

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "billing": {
        "easy": [
            "I need a refund for the {product}, it was billed {day}.",
            "Can you send me the invoice for order {num}?",
            "I was charged twice for the {product} {day}.",
            "Where can I download a receipt for my {product} purchase?",
            "Our billing contact changed, please update the invoice address.",
            "Please add our VAT number to the next invoice.",
        ],
        "medium": [
            "The amount on my card is {amount} but the price on the site was lower.",
            "My payment for the {product} went through two times {day}.",
            "I used the discount coupon but the full price was taken.",
            "There is a fee of {amount} on my statement that I do not recognise.",
            "I paid {amount} {day} and want the money back, the {product} was never used.",
            "The credit card was debited {amount} more than the quoted price.",
        ],
        "hard": [
            "Something is off with what you took from my account {day}, it does not match.",
            "My bank shows {amount} from you and I never agreed to that amount.",
            "The {product} arrived fine but I paid for the bigger one, can you fix the difference?",
            "Since the upgrade my monthly cost doubled and nobody told me.",
            "The renewal notice says {amount}; last year it was half, is that right?",
        ],
    },
    "technical": {
        "easy": [
            "The {product} crashes every time I open settings.",
            "I get error code {num} when I sync.",
            "Your API returns 500 for every request since {day}.",
            "Found a bug: the export button does nothing in the {product}.",
            "Requests to the API time out after 30 seconds, timeout every time.",
            "The {product} crashed {day} and now shows a stack trace.",
        ],
        "medium": [
            "The {product} freezes when I upload a file bigger than 10 MB.",
            "The page keeps spinning and never loads the {product}.",
            "Install fails halfway on my laptop, it just stops.",
            "Since {day} the {product} is really slow and sometimes goes blank.",
            "The sync is broken, my changes do not show up on the other device.",
            "Notifications stopped working in the {product} {day}.",
        ],
        "hard": [
            "Nothing happens when I press save, I tried two browsers.",
            "My colleague sees the new data and I still see last month's numbers.",
            "The charts are empty although the data is there, weird.",
            "After the update the {product} opens and closes immediately.",
            "It worked {day}, today the screen is just white.",
        ],
    },
    "account": {
        "easy": [
            "I forgot my password and the reset link has expired.",
            "I am locked out of my account after too many attempts.",
            "How do I turn on two-factor authentication?",
            "Please change my username, it has a typo.",
            "My 2FA device was stolen, I cannot sign in.",
            "The password reset email never arrives.",
        ],
        "medium": [
            "I cannot log in since {day}, it says the credentials are wrong.",
            "The verification code from the authenticator is not accepted.",
            "I want to change the email address on my profile.",
            "My colleague left, how do I take over her login?",
            "Sign in fails on the mobile app but works on the web.",
            "The access my account link in your email does not work.",
        ],
        "hard": [
            "It keeps asking me who I am and then rejects me.",
            "I got married and my name should be different everywhere.",
            "Someone else may have used my details, I see sessions I do not know.",
            "My old company address is still on file and I need to get in with the new one.",
            "The app says my identity could not be confirmed.",
        ],
    },
    "shipping": {
        "easy": [
            "Where is my parcel? The tracking number shows nothing.",
            "The courier says delivered but I have no {product}.",
            "When will the shipment of order {num} leave?",
            "Can I change the delivery address for order {num}?",
            "My tracking number has not updated since {day}.",
            "The delivery of the {product} is late by a week.",
        ],
        "medium": [
            "The {product} has not arrived and it was dispatched {day}.",
            "The package came damaged, the box was crushed.",
            "Can you ship to Norway? I need the {product} there.",
            "My order is stuck at the warehouse according to the site.",
            "The postal service returned my {product} to you.",
            "I was not home and the {product} went back, how do I get it?",
        ],
        "hard": [
            "I am still waiting for the {product} I ordered {day}.",
            "The neighbour got something that was meant for me, I think it is from you.",
            "Half of the order is here, the rest is missing.",
            "The {product} should have been here for the weekend, now it is Tuesday.",
            "Nothing showed up at my doorstep although I paid extra for express.",
        ],
    },
    "cancellation": {
        "easy": [
            "Please cancel my subscription at the end of the month.",
            "I want to cancel my plan, the {product} is not for us.",
            "How do I unsubscribe from the {product}?",
            "Terminate our contract effective {day}, please.",
            "Please close my account and delete my data.",
            "Cancel the subscription for the {product} before it renews.",
        ],
        "medium": [
            "I no longer need the {product}, please stop the renewal.",
            "Turn off auto-renew on the {product}, we are switching to another tool.",
            "We would like to end the Team plan after this billing period.",
            "Please make sure the {product} does not renew next year.",
            "I want to opt out of the yearly plan.",
            "We are moving to a competitor and want to leave your service.",
        ],
        "hard": [
            "I keep paying for something we stopped using months ago, make it end.",
            "We are shutting down the team, nothing should continue after {day}.",
            "I do not want to be billed any more for the {product}.",
            "Is it possible to just stop everything? We have no use for it.",
            "My father passed away; his plan with you should finish.",
        ],
    },
}


def generate(seed: int = 20261124) -> list[dict[str, object]]:
    rng = random.Random(seed)
    tickets = []
    n = 0
    for category, by_level in TEMPLATES.items():
        for level, count in MIX:
            for _ in range(count):
                n += 1
                body = rng.choice(by_level[level]).format(
                    product=rng.choice(PRODUCTS),
                    day=rng.choice(DAYS),
                    num=rng.randint(1000, 99999),
                    amount=f"{rng.randint(5, 900)}.{rng.randint(0, 99):02d} EUR",
                )
                text = " ".join(p for p in (rng.choice(OPENERS), body, rng.choice(CLOSERS)) if p)
                subject = " ".join(body.split()[:5]).rstrip(",.?!")
                tickets.append(
                    {
                        "id": f"T{n:04d}",
                        "subject": subject,
                        "body": text,
                        "category": category,
                        "difficulty": level,
                    }
                )
    rng.shuffle(tickets)
    return tickets


def main() -> None:
    tickets = generate()
    OUT.write_text("".join(json.dumps(t, sort_keys=True) + "\n" for t in tickets))
    print(f"wrote {len(tickets)} tickets to {OUT}")


if __name__ == "__main__":
    main()
