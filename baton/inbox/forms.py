"""The amend form, generated from the JSON schema of the amendment contract (EntryAmendment).

One row per entry under review; one input per schema property other than the entry id, typed
from the schema (a number where the schema takes numbers, text with its max length otherwise).
What comes back is validated server-side with the same pydantic model before any Update is
sent, and an error names the entry and the field. A property added to the contract appears in
the form without a change here.

Must not: send anything (baton/inbox/app.py does, after validation).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from workflows.contracts import ApprovalRequest, EntryAmendment

ID_FIELD = "entry_id"


@dataclass(frozen=True)
class Field:
    name: str  # the schema property
    label: str
    input_type: str  # "number" | "text"
    max_length: int | None
    description: str


def schema_fields() -> list[Field]:
    """The editable properties of an amendment, from its JSON schema."""
    schema = EntryAmendment.model_json_schema()
    fields = []
    for name, prop in schema.get("properties", {}).items():
        if name == ID_FIELD:
            continue
        options = prop.get("anyOf", [prop])
        types = {o.get("type") for o in options}
        number = bool(types & {"number", "integer"})
        max_length = next((o["maxLength"] for o in options if "maxLength" in o), None)
        fields.append(
            Field(
                name=name,
                label=prop.get("title", name).lower(),
                input_type="number" if number else "text",
                max_length=max_length,
                description=prop.get("description", ""),
            )
        )
    return fields


def amendment_fields(request: ApprovalRequest) -> list[Field]:
    """The form's columns for ``request`` (none when it has no entries to amend)."""
    return schema_fields() if request.entries else []


def input_name(entry_id: str, field: str) -> str:
    return f"amend.{entry_id}.{field}"


def parse_amendments(
    request: ApprovalRequest, form: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The amendments the form asks for (entries whose values changed), validated; or errors
    by input name."""
    if not request.entries:
        return [], {"amend": "amend: this request has no entries to amend"}
    amendments: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    fields = schema_fields()
    for entry in request.entries:
        change: dict[str, Any] = {}
        for field in fields:
            raw = (form.get(input_name(entry.entry_id, field.name)) or [""])[0].strip()
            if raw == "":
                continue
            current = getattr(entry, field.name, None)
            if field.input_type == "number":
                try:
                    same = Decimal(raw) == Decimal(str(current))
                except InvalidOperation:
                    same = False
            else:
                same = raw == str(current)
            if not same:
                change[field.name] = raw
        if not change:
            continue
        try:
            amendments.append(
                EntryAmendment.model_validate({ID_FIELD: entry.entry_id, **change}).model_dump(
                    mode="json", exclude_none=True
                )
            )
        except ValidationError as err:
            for e in err.errors():
                name = str(e["loc"][0]) if e["loc"] else "amend"
                errors[input_name(entry.entry_id, name)] = (
                    f"{entry.entry_id} {name}: {e['msg'].removeprefix('Value error, ')}"
                )
    if not amendments and not errors:
        errors["amend"] = "amend: change at least one entry's value (nothing differs)"
    return amendments, errors
