"""Seed data of the knowledge layer: a small, realistic corpus and relation store for the demo,
the tests and the retrieval benchmark (bench/knowledge_labels.py holds the labelled queries).

Tenant ``acme`` sells "Acme Insights", a B2B analytics product: product docs, company policies
and CRM notes about its customers. A few documents of tenant ``globex`` exist only to show that a
tenant never retrieves another tenant's knowledge.

Must not: do anything at import time but build these lists.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from workflows.contracts.knowledge import Entity, IngestResult, KnowledgeDocument

if TYPE_CHECKING:
    from activities.knowledge import KnowledgeBase

TENANT = "acme"


def _doc(
    doc_id: str,
    kind: str,
    title: str,
    text: str,
    source: str,
    author: str,
    day: str,
    entity_id: str | None = None,
    tenant: str = TENANT,
) -> KnowledgeDocument:
    return KnowledgeDocument(
        doc_id=doc_id,
        tenant=tenant,
        title=title,
        text=text,
        kind=kind,
        source=source,
        author=author,
        created_at=datetime.fromisoformat(day).replace(tzinfo=UTC),
        entity_id=entity_id,
    )


PRODUCT = "product_doc"
POLICY = "policy"
NOTE = "customer_note"

SEED_DOCUMENTS: list[KnowledgeDocument] = [
    # -- product documentation --------------------------------------------------------------
    _doc(
        "prod-sso",
        PRODUCT,
        "Single sign-on (SAML and OIDC)",
        "Acme Insights supports single sign-on with any SAML 2.0 or OpenID Connect identity "
        "provider, including Okta, Microsoft Entra ID (Azure AD) and Google Workspace. A "
        "workspace admin uploads the IdP metadata under Settings > Security > SSO, maps the "
        "email attribute, and can enforce SSO for every member. Just-in-time provisioning "
        "creates users on their first login.",
        "docs:product/sso",
        "p.novak",
        "2026-03-02",
    ),
    _doc(
        "prod-api-limits",
        PRODUCT,
        "API rate limits",
        "Each API key may send 1,000 requests per minute and 50 concurrent requests. Above the "
        "limit the API answers HTTP 429 with a Retry-After header; clients should wait that "
        "many seconds and retry. Enterprise plans can raise the limit to 5,000 requests per "
        "minute. Bulk loads should use the batch endpoint instead of single-row calls.",
        "docs:product/api/limits",
        "l.schmidt",
        "2026-02-11",
    ),
    _doc(
        "prod-data-export",
        PRODUCT,
        "Exporting data",
        "Any dashboard or dataset can be exported as CSV or Apache Parquet. Scheduled exports "
        "deliver files daily or hourly to an Amazon S3 bucket, Google Cloud Storage or Azure "
        "Blob Storage that the customer owns. Exports larger than 5 GB are split into parts.",
        "docs:product/export",
        "p.novak",
        "2026-01-20",
    ),
    _doc(
        "prod-dashboards",
        PRODUCT,
        "Dashboards and sharing",
        "Dashboards combine charts, tables and KPI tiles on one page. Editors can share a "
        "dashboard with a team, embed it in an intranet page with a signed link, or schedule a "
        "PDF snapshot by email every Monday morning.",
        "docs:product/dashboards",
        "m.rossi",
        "2025-11-05",
    ),
    _doc(
        "prod-alerts",
        PRODUCT,
        "Alert rules and notifications",
        "An alert rule watches a metric and fires when it crosses a threshold or deviates from "
        "its forecast. Notifications go to email, Slack, Microsoft Teams or PagerDuty. To cut "
        "alert noise, set a minimum duration, group alerts by dimension, and mute rules during "
        "planned maintenance windows.",
        "docs:product/alerts",
        "m.rossi",
        "2026-04-14",
    ),
    _doc(
        "prod-connectors",
        PRODUCT,
        "Data connectors",
        "Built-in connectors load data from PostgreSQL, MySQL, Snowflake, Google BigQuery, "
        "Amazon Redshift and Salesforce. Connectors sync incrementally every 15 minutes; the "
        "first full sync of a large warehouse can take several hours. Credentials are stored "
        "encrypted and can be rotated without downtime.",
        "docs:product/connectors",
        "l.schmidt",
        "2026-05-09",
    ),
    _doc(
        "prod-onboarding-sequence",
        PRODUCT,
        "Standard customer onboarding sequence",
        "New customers follow a four-step onboarding sequence: (1) a kickoff call with the "
        "customer success manager in week one; (2) workspace setup: SSO, roles and the first "
        "data connector; (3) two admin and end-user training sessions in weeks two and three; "
        "(4) a 30-day adoption review with usage numbers and next goals. Enterprise customers "
        "also get a named technical account manager.",
        "docs:cs/onboarding-playbook",
        "s.okafor",
        "2026-06-01",
    ),
    _doc(
        "prod-user-roles",
        PRODUCT,
        "Roles, permissions and SCIM provisioning",
        "Members have one of three roles: admin (billing, security, members), editor (creates "
        "dashboards and datasets) and viewer (reads shared content). SCIM 2.0 provisioning "
        "creates, updates and deactivates members from the identity provider automatically.",
        "docs:product/roles",
        "p.novak",
        "2026-03-02",
    ),
    _doc(
        "prod-pricing-tiers",
        PRODUCT,
        "Plans and list prices",
        "Starter costs 15 EUR per seat per month (up to 25 seats). Business costs 35 EUR per "
        "seat per month and adds SSO and scheduled exports. Enterprise is priced per contract "
        "from 60,000 EUR per year and adds SCIM, audit logs, a dedicated region and a named "
        "technical account manager. Annual prepayment is the default; monthly billing adds 10%.",
        "docs:sales/pricing",
        "k.tanaka",
        "2026-01-05",
    ),
    _doc(
        "prod-audit-log",
        PRODUCT,
        "Workspace audit log",
        "Enterprise workspaces record every login, permission change, export and API key "
        "event in an audit log kept for 400 days. Admins can search it in the app or stream "
        "it to a SIEM such as Splunk over a webhook.",
        "docs:product/audit-log",
        "l.schmidt",
        "2026-02-27",
    ),
    _doc(
        "prod-mobile",
        PRODUCT,
        "Mobile app",
        "The iOS and Android apps show shared dashboards and push alert notifications. "
        "Dashboards marked for offline use are cached on the device for 7 days and are wiped "
        "when the member is deactivated.",
        "docs:product/mobile",
        "m.rossi",
        "2025-12-12",
    ),
    _doc(
        "prod-release-4-2",
        PRODUCT,
        "Release notes 4.2: anomaly detection",
        "Release 4.2 adds automatic anomaly detection: every metric gets a seasonal forecast, "
        "and points outside the forecast band are highlighted and can trigger alerts. It also "
        "adds Parquet exports to Azure Blob Storage and a dark theme.",
        "docs:product/releases/4.2",
        "k.tanaka",
        "2026-07-15",
    ),
    # -- policies ---------------------------------------------------------------------------
    _doc(
        "pol-discounts",
        POLICY,
        "Discount approval policy",
        "Sales representatives may grant up to 10% discount on list price on their own. "
        "Discounts above 10% and up to 20% need approval by a sales manager. Discounts above "
        "20% and up to 30% need approval by the CFO; above 30% none is granted. A multi-year "
        "commitment (three years, prepaid yearly) makes a customer eligible for up to 15% "
        "without extra justification, still subject to the approval thresholds above. "
        "Discounts never apply to professional services.",
        "confluence:policies/sales/discounts",
        "cfo.office",
        "2026-01-15",
    ),
    _doc(
        "pol-data-residency",
        POLICY,
        "Data residency policy",
        "Customer data of customers based in the European Union is stored and processed only "
        "in the EU region (Frankfurt). Customers in the United States are hosted in the US "
        "region (Virginia). Moving a customer's data to another region, or processing it with a "
        "vendor outside its region, requires a signed data processing agreement (DPA) with "
        "standard contractual clauses and the approval of the data protection officer.",
        "confluence:policies/privacy/residency",
        "dpo.office",
        "2025-10-01",
    ),
    _doc(
        "pol-refunds",
        POLICY,
        "Refund policy",
        "Customers can cancel within 30 days of the start of a new subscription for a full "
        "refund. After 30 days, unused prepaid seats are not refunded but can be credited "
        "against the next renewal. Refunds above 5,000 EUR need approval by finance.",
        "confluence:policies/finance/refunds",
        "finance.ops",
        "2025-09-18",
    ),
    _doc(
        "pol-security-incident",
        POLICY,
        "Security incident response",
        "Anyone who suspects a security incident reports it to security@ at once. The security "
        "team triages within one hour. If personal data of customers is affected, affected "
        "customers are informed without undue delay and the supervisory authority within 72 "
        "hours, as the GDPR requires.",
        "confluence:policies/security/incidents",
        "ciso.office",
        "2025-08-30",
    ),
    _doc(
        "pol-support-sla",
        POLICY,
        "Support service levels",
        "Priority 1 (production down for many users): first response within 1 hour, around "
        "the clock, for Enterprise. Priority 2 (major feature broken): first response within 4 "
        "business hours. Priority 3 (question or minor issue): within one business day. "
        "Missed SLAs earn service credits as set out in the contract.",
        "confluence:policies/support/sla",
        "support.lead",
        "2026-02-01",
    ),
    _doc(
        "pol-mfa",
        POLICY,
        "Passwords and multi-factor authentication",
        "Employees use a password manager and multi-factor authentication on every company "
        "system. Hardware security keys are mandatory for admins of production systems. "
        "Shared accounts are not allowed.",
        "confluence:policies/security/mfa",
        "ciso.office",
        "2025-07-07",
    ),
    _doc(
        "pol-marketing-consent",
        POLICY,
        "Marketing email and consent",
        "Marketing emails and newsletters go only to contacts who opted in; every email "
        "carries an unsubscribe link. Transactional and onboarding emails to a customer's named "
        "contacts (welcome, introductions, training invitations) are allowed without marketing "
        "consent but must not contain promotions. In the EU, consent records must be kept.",
        "confluence:policies/marketing/consent",
        "legal.team",
        "2026-03-20",
    ),
    _doc(
        "pol-contract-review",
        POLICY,
        "Contract review and signature authority",
        "Every customer contract with a total value above 100,000 EUR, or with non-standard "
        "liability, data protection or termination clauses, is reviewed by legal before "
        "signature. Only the CFO and the CEO may sign contracts above 250,000 EUR.",
        "confluence:policies/legal/contracts",
        "legal.team",
        "2026-01-28",
    ),
    _doc(
        "pol-data-retention",
        POLICY,
        "Customer data retention",
        "After a subscription ends, customer data is kept for 90 days so the customer can "
        "export it, then deleted from production and, within a further 35 days, from backups. "
        "A deletion certificate is available on request.",
        "confluence:policies/privacy/retention",
        "dpo.office",
        "2025-10-01",
    ),
    _doc(
        "pol-export-control",
        POLICY,
        "Sanctions and export control",
        "We do not sell to or onboard customers in embargoed countries or on sanctions lists. "
        "Every new customer is screened against the EU, UK and US sanctions lists before the "
        "contract is signed; a match stops the deal and goes to legal.",
        "confluence:policies/legal/export-control",
        "legal.team",
        "2025-11-11",
    ),
    _doc(
        "pol-gifts",
        POLICY,
        "Gifts and hospitality",
        "Employees may accept or give gifts worth up to 50 EUR. Anything above, and any gift to "
        "a public official, needs approval from compliance. Cash gifts are never allowed.",
        "confluence:policies/compliance/gifts",
        "compliance",
        "2025-06-16",
    ),
    # -- CRM notes about customers ------------------------------------------------------------
    _doc(
        "note-globex-kickoff",
        NOTE,
        "Globex GmbH: pre-sales call",
        "Globex GmbH (Munich) signs for 800 Enterprise seats. They use Microsoft Entra ID and "
        "want SSO and SCIM from day one. Their works council insists that all data stays in "
        "the EU. Procurement asks for 15% off list price in exchange for a three-year "
        "commitment.",
        "crm:salesforce/notes/0061",
        "j.meyer",
        "2026-09-03",
        entity_id="cust-globex",
    ),
    _doc(
        "note-globex-security",
        NOTE,
        "Globex GmbH: security questionnaire",
        "Globex's information security team sent a 120-question questionnaire and asked for "
        "our ISO 27001 certificate and the latest penetration test summary. They want audit "
        "logs streamed to their Splunk.",
        "crm:salesforce/notes/0064",
        "j.meyer",
        "2026-09-10",
        entity_id="cust-globex",
    ),
    _doc(
        "note-globex-champion",
        NOTE,
        "Globex GmbH: stakeholders",
        "Champion is Dr. Anna Keller, head of controlling; the executive sponsor is the CFO. "
        "Anna prefers German for training sessions and wants the kickoff call before the end "
        "of the quarter.",
        "crm:salesforce/notes/0066",
        "j.meyer",
        "2026-09-12",
        entity_id="cust-globex",
    ),
    _doc(
        "note-initech-renewal",
        NOTE,
        "Initech Ltd: renewal call",
        "Initech's nightly jobs keep failing with HTTP 429 errors from our API; they call the "
        "single-row endpoint half a million times a night. They threatened not to renew unless "
        "we raise their limit.",
        "crm:salesforce/notes/0102",
        "r.patel",
        "2026-08-21",
        entity_id="cust-initech",
    ),
    _doc(
        "note-initech-billing",
        NOTE,
        "Initech Ltd: billing dispute",
        "Initech asks for money back for 40 unused seats of their annual plan, four months "
        "into the term. Finance says the seats can be credited at renewal instead.",
        "crm:zendesk/tickets/88412",
        "finance.ops",
        "2026-08-29",
        entity_id="cust-initech",
    ),
    _doc(
        "note-umbrella-outage",
        NOTE,
        "Umbrella SAS: P1 escalation",
        "Umbrella SAS (Lyon) reported that none of their dashboards load since this morning's "
        "deployment; 300 users are affected. Escalated as priority 1 to the on-call engineer; "
        "the account manager keeps the customer updated hourly.",
        "crm:zendesk/tickets/88977",
        "support.oncall",
        "2026-10-02",
        entity_id="cust-umbrella",
    ),
    _doc(
        "note-umbrella-training",
        NOTE,
        "Umbrella SAS: training request",
        "Umbrella asks for end-user training in French for about 60 analysts, split over two "
        "afternoons, plus recordings they can keep on their intranet.",
        "crm:salesforce/notes/0140",
        "c.dubois",
        "2026-09-25",
        entity_id="cust-umbrella",
    ),
    _doc(
        "note-stark-expansion",
        NOTE,
        "Stark Industries: expansion",
        "Stark Industries (New York) wants to grow from 500 to 2,000 seats and connect their "
        "Snowflake warehouse. Their data must stay in the US region. They ask whether a 25% "
        "discount is possible for the expansion.",
        "crm:salesforce/notes/0150",
        "r.patel",
        "2026-10-06",
        entity_id="cust-stark",
    ),
    _doc(
        "note-wayne-churn",
        NOTE,
        "Wayne Enterprises: churn risk",
        "Wayne's operations team is unhappy: they receive hundreds of alert emails a day and "
        "ignore most of them. Usage dropped 40% this quarter; the renewal is in two months.",
        "crm:gainsight/risk/0021",
        "s.okafor",
        "2026-09-30",
        entity_id="cust-wayne",
    ),
    _doc(
        "note-hooli-legal",
        NOTE,
        "Hooli Inc: legal review",
        "Hooli's legal team asks for our data processing agreement with standard contractual "
        "clauses, and wants a liability cap of twice the annual fees instead of our standard "
        "one times.",
        "crm:salesforce/notes/0171",
        "legal.team",
        "2026-10-08",
        entity_id="cust-hooli",
    ),
    _doc(
        "note-soylent-trial",
        NOTE,
        "Soylent Corp: trial feedback",
        "Soylent is two weeks into a trial. Their data scientists want to pull everything into "
        "their lake as Parquet files every hour instead of building dashboards.",
        "crm:salesforce/notes/0180",
        "k.tanaka",
        "2026-10-10",
        entity_id="cust-soylent",
    ),
    # -- another tenant's knowledge: never visible to acme --------------------------------------
    _doc(
        "globex-pol-discounts",
        POLICY,
        "Globex discount rules",
        "At Globex, account executives may give up to 30% discount without any approval.",
        "confluence:globex/discounts",
        "globex.sales",
        "2026-01-01",
        tenant="globex",
    ),
    _doc(
        "globex-pol-residency",
        POLICY,
        "Globex hosting",
        "Globex hosts all customer data in the US region regardless of where customers are.",
        "confluence:globex/hosting",
        "globex.it",
        "2026-01-01",
        tenant="globex",
    ),
]

SEED_ENTITIES: list[Entity] = [
    Entity(entity_id="cust-globex", tenant=TENANT, kind="customer", name="Globex GmbH",
           attributes={"country": "DE", "region": "eu", "segment": "enterprise",
                       "contact": "anna.keller@globex.example", "language": "de"},
           source="crm:salesforce/accounts/0011"),
    Entity(entity_id="acct-globex-munich", tenant=TENANT, kind="account", parent_id="cust-globex",
           name="Globex GmbH - Munich HQ", attributes={"seats": 600, "billing": "annual"},
           source="crm:salesforce/accounts/0011"),
    Entity(entity_id="acct-globex-berlin", tenant=TENANT, kind="account", parent_id="cust-globex",
           name="Globex GmbH - Berlin office", attributes={"seats": 200, "billing": "annual"},
           source="crm:salesforce/accounts/0011"),
    Entity(entity_id="ctr-globex-2026", tenant=TENANT, kind="contract",
           parent_id="acct-globex-munich", name="Enterprise subscription 2026-2029",
           attributes={"plan": "enterprise", "annual_value_eur": 336000, "term_months": 36,
                       "requested_discount_pct": 15},
           source="crm:salesforce/contracts/C-7781"),
    Entity(entity_id="cust-stark", tenant=TENANT, kind="customer", name="Stark Industries",
           attributes={"country": "US", "region": "us", "segment": "enterprise",
                       "contact": "procurement@stark.example", "language": "en"},
           source="crm:salesforce/accounts/0042"),
    Entity(entity_id="acct-stark-ny", tenant=TENANT, kind="account", parent_id="cust-stark",
           name="Stark Industries - New York", attributes={"seats": 2000, "billing": "annual"},
           source="crm:salesforce/accounts/0042"),
    Entity(entity_id="ctr-stark-expansion", tenant=TENANT, kind="contract",
           parent_id="acct-stark-ny", name="Enterprise expansion 2026",
           attributes={"plan": "enterprise", "annual_value_eur": 840000, "term_months": 12,
                       "requested_discount_pct": 25},
           source="crm:salesforce/contracts/C-7802"),
    Entity(entity_id="cust-umbrella", tenant=TENANT, kind="customer", name="Umbrella SAS",
           attributes={"country": "FR", "region": "eu", "segment": "enterprise",
                       "contact": "it@umbrella.example", "language": "fr"},
           source="crm:salesforce/accounts/0031"),
    Entity(entity_id="acct-umbrella-lyon", tenant=TENANT, kind="account", parent_id="cust-umbrella",
           name="Umbrella SAS - Lyon", attributes={"seats": 300, "billing": "annual"},
           source="crm:salesforce/accounts/0031"),
    Entity(entity_id="ctr-umbrella-2025", tenant=TENANT, kind="contract",
           parent_id="acct-umbrella-lyon", name="Business subscription 2025",
           attributes={"plan": "business", "annual_value_eur": 126000, "term_months": 12,
                       "requested_discount_pct": 5},
           source="crm:salesforce/contracts/C-7650"),
    Entity(entity_id="cust-initech", tenant=TENANT, kind="customer", name="Initech Ltd",
           attributes={"country": "GB", "region": "eu", "segment": "mid-market",
                       "contact": "ops@initech.example", "language": "en"},
           source="crm:salesforce/accounts/0020"),
    Entity(entity_id="cust-wayne", tenant=TENANT, kind="customer", name="Wayne Enterprises",
           attributes={"country": "US", "region": "us", "segment": "enterprise",
                       "contact": "ops@wayne.example", "language": "en"},
           source="crm:salesforce/accounts/0050"),
    Entity(entity_id="cust-hooli", tenant=TENANT, kind="customer", name="Hooli Inc",
           attributes={"country": "US", "region": "us", "segment": "enterprise",
                       "contact": "legal@hooli.example", "language": "en"},
           source="crm:salesforce/accounts/0060"),
    Entity(entity_id="cust-soylent", tenant=TENANT, kind="customer", name="Soylent Corp",
           attributes={"country": "US", "region": "us", "segment": "trial",
                       "contact": "data@soylent.example", "language": "en"},
           source="crm:salesforce/accounts/0070"),
]  # fmt: skip


async def seed_knowledge(kb: KnowledgeBase) -> IngestResult:
    """Ingest the seed corpus and fill the relation store (idempotent: unchanged docs skipped)."""
    result = await kb.ingest(SEED_DOCUMENTS)
    await asyncio.to_thread(kb.store.upsert_entities, SEED_ENTITIES)
    return result


__all__ = [
    "NOTE",
    "POLICY",
    "PRODUCT",
    "SEED_DOCUMENTS",
    "SEED_ENTITIES",
    "TENANT",
    "seed_knowledge",
]
