"""How an agent call asks a model for JSON, and how the answer is read back, per server kind.

OpenAI-compatible servers disagree on how to ask for structured output. The model catalogue
(config/models.json, activities/router.py ``ModelSpec``) says per model which way its server
takes (``structured_output``):

* ``json_schema``: OpenAI / Azure OpenAI strict mode,
  ``response_format={"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``;
* ``json_object_schema``: llama-cpp-python's server,
  ``response_format={"type": "json_object", "schema": <schema>}``;
* ``tool_call``: one function whose parameters are the schema, forced by ``tool_choice``; the
  answer is the tool call's ``arguments``;
* ``prompt``: no server-side constraint; the schema goes into the system prompt and the reply is
  parsed leniently (code fences and prose around the JSON are tolerated) and then validated.

Every request carries ``max_tokens`` and a per-request ``timeout``; ``seed`` and ``temperature``
only when the catalogue says the model accepts them.

The schema sent is generated from the agent's wire model: ``$ref``s inlined (not every server's
grammar compiler follows them), titles and defaults dropped, every property required and no
extra keys (what OpenAI's strict mode demands), and ``pattern`` removed when the server cannot
take one (llama-cpp-python 0.3.36 crashes on a decimal regex).

Must not: do I/O, or know about agents, policy or routing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)

StructuredOutput = Literal["json_schema", "json_object_schema", "tool_call", "prompt"]
STRUCTURED_OUTPUT_MODES: tuple[str, ...] = (
    "json_schema",
    "json_object_schema",
    "tool_call",
    "prompt",
)

#: A decimal amount as a string: sign, digits, optional fraction (no cent is lost to floats).
DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"


@dataclass(frozen=True)
class RequestOptions:
    """How one model is asked (the catalogue entry's request fields). Defaults suit OpenAI."""

    structured_output: StructuredOutput = "json_schema"
    max_tokens: int = 2048
    timeout_s: float = 60.0
    accepts_seed: bool = True
    accepts_temperature: bool = True
    schema_pattern: bool = True
    seed: int = 7
    temperature: float = 0.0


# -- the schema --------------------------------------------------------------------------------


def wire_schema(wire: type[BaseModel], *, pattern: bool = True) -> dict[str, Any]:
    """The JSON schema of ``wire`` as sent to a model (see the module docstring)."""
    raw = wire.model_json_schema()
    defs = raw.pop("$defs", {})
    return _clean(raw, defs, pattern)


def _clean(node: Any, defs: dict[str, Any], pattern: bool) -> Any:
    if isinstance(node, list):
        return [_clean(n, defs, pattern) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, defs, pattern)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default") or (key == "pattern" and not pattern):
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _clean(v, defs, pattern) for name, v in value.items()}
        else:
            out[key] = _clean(value, defs, pattern)
    if out.get("type") == "object" and "properties" in out:
        out["required"] = list(out["properties"])
        out["additionalProperties"] = False
    if "const" in out and "enum" not in out:  # Literal of one value: some servers know only enum
        out["enum"] = [out.pop("const")]
    return out


def schema_has_pattern(schema: Any) -> bool:
    """Whether ``pattern`` occurs anywhere in ``schema`` (for tests and checks)."""
    if isinstance(schema, dict):
        return "pattern" in schema or any(schema_has_pattern(v) for v in schema.values())
    if isinstance(schema, list):
        return any(schema_has_pattern(v) for v in schema)
    return False


# -- the request -------------------------------------------------------------------------------

PROMPT_MODE_INSTRUCTIONS = (
    "\n\nAnswer with ONE JSON document and nothing else (no prose, no code fence). It must "
    "match this JSON schema exactly (every property present, no other properties):\n"
)


def request_kwargs(
    opts: RequestOptions,
    *,
    model: str,
    agent: str,
    system: str,
    content: str,
    schema: dict[str, Any],
    repair: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``client.chat.completions.create`` for one agent call.

    ``repair``: (the refused answer, why it was refused): the request becomes the repair turn,
    the same conversation plus the refused answer and the validation errors."""
    if opts.structured_output == "prompt":
        system = system + PROMPT_MODE_INSTRUCTIONS + json.dumps(schema, separators=(",", ":"))
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        {"role": "user", "content": content},
    ]
    if repair is not None:
        answer, problems = repair
        messages += [
            {"role": "assistant", "content": answer[:4000] or "(empty answer)"},
            {"role": "user", "content": repair_message(problems)},
        ]
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": opts.max_tokens,
        "timeout": opts.timeout_s,
    }
    if opts.accepts_seed:
        kwargs["seed"] = opts.seed
    if opts.accepts_temperature:
        kwargs["temperature"] = opts.temperature
    mode = opts.structured_output
    if mode == "json_schema":
        kwargs["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": agent, "schema": schema, "strict": True},
        }
    elif mode == "json_object_schema":
        kwargs["response_format"] = {"type": "json_object", "schema": schema}
    elif mode == "tool_call":
        kwargs["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": agent,
                    "description": f"Submit the {agent}'s answer.",
                    "parameters": schema,
                },
            }
        ]
        kwargs["tool_choice"] = {"type": "function", "function": {"name": agent}}
    return kwargs


def repair_message(problems: str) -> str:
    return (
        "Your answer was refused: " + problems + "\nAnswer again with the complete JSON document "
        "that fixes every problem listed, following the same instructions and schema."
    )


# -- the answer --------------------------------------------------------------------------------


def answer_text(response: Any, mode: StructuredOutput) -> str:
    """The answer's JSON text: the forced tool call's arguments, or the message content."""
    if not getattr(response, "choices", None):
        return ""
    message = response.choices[0].message
    if mode == "tool_call":
        for call in getattr(message, "tool_calls", None) or []:
            function = getattr(call, "function", None)
            if function is not None and function.arguments:
                return str(function.arguments)
    return str(message.content or "")


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def extract_json(text: str) -> str:
    """The JSON document in a reply that may wrap it in a code fence or prose (prompt mode):
    the fenced block if there is one, else the first balanced ``{...}``; else ``text``."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        return text.strip()
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:].strip()


def parse_answer(text: str, wire: type[T], mode: StructuredOutput) -> T:
    """``text`` as ``wire`` (pydantic ValidationError if it does not fit). Only prompt mode
    tolerates prose and code fences: the other modes are constrained by the server."""
    if mode == "prompt":
        text = extract_json(text)
    return wire.model_validate_json(text or "")


__all__ = [
    "DECIMAL_PATTERN",
    "PROMPT_MODE_INSTRUCTIONS",
    "RequestOptions",
    "STRUCTURED_OUTPUT_MODES",
    "StructuredOutput",
    "answer_text",
    "extract_json",
    "parse_answer",
    "repair_message",
    "request_kwargs",
    "schema_has_pattern",
    "wire_schema",
]
