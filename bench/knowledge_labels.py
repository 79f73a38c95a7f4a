"""The labelled retrieval set: questions a support engineer, a salesperson or an agent would ask,
and the seed documents (activities/knowledge_seed.py, tenant acme) that answer them.

Written for this project by hand. Questions are phrased the way people ask, mostly without the
documents' own words, so the set measures meaning, not keyword overlap. A query may have several
relevant documents; recall@k counts the share of them found in the top k.
"""

from __future__ import annotations

LABELLED_QUERIES: list[tuple[str, set[str]]] = [
    # product
    ("how do I connect Okta so people log in with their company account", {"prod-sso"}),
    ("can we use Azure Active Directory for login", {"prod-sso", "note-globex-kickoff"}),
    ("what happens when we call the API too often", {"prod-api-limits"}),
    ("our integration gets 429 too many requests", {"prod-api-limits", "note-initech-renewal"}),
    ("download my data as a csv file", {"prod-data-export"}),
    ("send files to our S3 bucket every day automatically", {"prod-data-export"}),
    (
        "columnar file format export for a data lake",
        {"prod-data-export", "note-soylent-trial", "prod-release-4-2"},
    ),
    ("embed a report in our intranet", {"prod-dashboards"}),
    ("get a weekly pdf of the kpis by email", {"prod-dashboards"}),
    ("too many notifications, how to reduce alert spam", {"prod-alerts", "note-wayne-churn"}),
    ("page the on-call engineer when revenue drops", {"prod-alerts"}),
    ("load data from our snowflake warehouse", {"prod-connectors", "note-stark-expansion"}),
    ("how often do connectors refresh", {"prod-connectors"}),
    ("what are the steps after a new customer signs", {"prod-onboarding-sequence"}),
    ("when is the kickoff call and the adoption review", {"prod-onboarding-sequence"}),
    ("difference between editor and viewer", {"prod-user-roles"}),
    ("automatically deactivate users who leave the company", {"prod-user-roles"}),
    ("how much does the business plan cost per user", {"prod-pricing-tiers"}),
    ("is there a surcharge for paying monthly", {"prod-pricing-tiers"}),
    ("who changed permissions in our workspace, can we see a log", {"prod-audit-log"}),
    ("send security events to Splunk", {"prod-audit-log", "note-globex-security"}),
    ("can I view dashboards on my phone without internet", {"prod-mobile"}),
    ("what's new in the latest version, forecasting of metrics", {"prod-release-4-2"}),
    # policies
    ("who must approve a 15 percent price reduction", {"pol-discounts"}),
    ("maximum rebate a salesperson may give alone", {"pol-discounts"}),
    ("does a three year commitment qualify for a lower price", {"pol-discounts"}),
    ("where is data of german customers hosted", {"pol-data-residency"}),
    ("can we process EU personal data in the United States", {"pol-data-residency"}),
    ("customer wants their money back after cancelling", {"pol-refunds"}),
    ("unused licences credit at renewal", {"pol-refunds", "note-initech-billing"}),
    ("we were hacked, whom do we notify and by when", {"pol-security-incident"}),
    ("how fast must support answer when production is down", {"pol-support-sla"}),
    ("response time for a minor question to support", {"pol-support-sla"}),
    ("are hardware keys required for administrators", {"pol-mfa"}),
    ("may we send a welcome email without marketing opt-in", {"pol-marketing-consent"}),
    ("newsletter unsubscribe requirements", {"pol-marketing-consent"}),
    ("does legal need to look at a large contract before signing", {"pol-contract-review"}),
    ("who can sign a deal worth 300k", {"pol-contract-review"}),
    ("how long do we keep data after a customer leaves", {"pol-data-retention"}),
    ("screening new customers against sanctions lists", {"pol-export-control"}),
    ("can I accept a bottle of wine from a supplier", {"pol-gifts"}),
    # customer notes
    ("what did Globex ask for in the sales call", {"note-globex-kickoff"}),
    ("Globex wants their data kept in Europe", {"note-globex-kickoff"}),
    ("ISO certificate and pen test requested by a prospect", {"note-globex-security"}),
    ("who is the champion at Globex", {"note-globex-champion"}),
    ("which customer threatens not to renew because of API limits", {"note-initech-renewal"}),
    ("customer where no dashboards load after the deployment", {"note-umbrella-outage"}),
    ("training sessions in French", {"note-umbrella-training"}),
    ("Stark wants a big discount to grow seats", {"note-stark-expansion"}),
    ("which account is at risk of churning", {"note-wayne-churn"}),
    ("liability cap negotiation with a customer's lawyers", {"note-hooli-legal"}),
    ("trial customer data scientists feedback", {"note-soylent-trial"}),
]
