"""The safe expression language of process definitions: ``${steps.reconcile.output.unmatched}``.

A small tokenizer and recursive-descent parser; evaluation walks the parsed tree over plain JSON
data (dicts, lists, strings, numbers, booleans, null). There is no ``eval``, no attribute access on
Python objects (``a.b`` is a dict key lookup, ``a[0]`` a list index) and only the functions in
:data:`FUNCTIONS`. Pure and deterministic: used by the validator and by the interpreter workflow.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | cmp
    cmp     := add (('=='|'!='|'<'|'<='|'>'|'>=') add)?
    add     := mul (('+'|'-') mul)*
    mul     := unary (('*'|'/') unary)*
    unary   := '-' unary | postfix
    postfix := primary ('.' NAME | '[' expr ']')*
    primary := NUMBER | STRING | 'true' | 'false' | 'null' | NAME '(' args ')' | NAME
             | '(' expr ')' | '[' args ']'
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from workflows.errors import BatonError

Node = tuple[Any, ...]
TEMPLATE = re.compile(r"\$\{([^}]*)\}")  # expressions contain no braces
MAX_DEPTH = 60


class ExpressionError(BatonError, ValueError):
    """An expression that cannot be parsed or evaluated; ``offset`` is within the expression."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class Token:
    kind: str  # num | str | name | op | end
    text: str
    value: Any
    offset: int


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<num>\d+(?:\.\d+)?)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|[<>+\-*/()\[\],.])
    )""",
    re.X,
)
KEYWORDS = {"and", "or", "not", "true", "false", "null"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            at = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise ExpressionError(f"unexpected character {text[at]!r}", at)
        kind = m.lastgroup or "op"
        raw = m.group(kind)
        start = m.start(kind)
        value: Any = raw
        if kind == "num":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "str":
            value = re.sub(r"\\(.)", r"\1", raw[1:-1])
        tokens.append(Token(kind, raw, value, start))
        pos = m.end()
    tokens.append(Token("end", "", None, len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> Token:
        tok = self.take()
        if tok.text != text or tok.kind == "str":
            found = "the end" if tok.kind == "end" else repr(tok.text)
            raise ExpressionError(f"expected {text!r}, found {found}", tok.offset)
        return tok

    def at(self, *texts: str) -> bool:
        tok = self.peek()
        return tok.kind in ("op", "name") and tok.text in texts

    def parse(self) -> Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r} after the expression", tok.offset)
        return node

    def deeper(self) -> None:
        """One level of nesting more: past MAX_DEPTH, an ExpressionError (the parse is bounded)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError("expression nests too deeply", self.peek().offset)

    def expr(self) -> Node:
        self.deeper()
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Node:
        return self._logical("or", self.and_)

    def and_(self) -> Node:
        return self._logical("and", self.not_)

    def _logical(self, word: str, operand: Callable[[], Node]) -> Node:
        """``operand (word operand)*`` for ``or`` and ``and``, left-associative."""
        node = operand()
        while self.at(word):
            self.take()
            node = (word, node, operand())
        return node

    def not_(self) -> Node:
        return self._prefix("not", "not", self.cmp)

    def cmp(self) -> Node:
        node = self.add()
        if self.at("==", "!=", "<", "<=", ">", ">="):
            op = self.take().text
            node = ("cmp", op, node, self.add())
        return node

    def add(self) -> Node:
        return self._arith(("+", "-"), self.mul)

    def mul(self) -> Node:
        return self._arith(("*", "/"), self.unary)

    def _arith(self, ops: tuple[str, ...], operand: Callable[[], Node]) -> Node:
        """One precedence level of arithmetic: ``operand (op operand)*``, left-associative."""
        node = operand()
        while self.at(*ops):
            op = self.take().text
            node = ("arith", op, node, operand())
        return node

    def unary(self) -> Node:
        return self._prefix("-", "neg", self.postfix)

    def _prefix(self, op: str, kind: str, operand: Callable[[], Node]) -> Node:
        """``op* operand``: each ``op`` wraps what follows in a ``kind`` node, one level of
        nesting deeper (see :meth:`deeper`)."""
        if not self.at(op):
            return operand()
        self.take()
        self.deeper()
        return (kind, self._prefix(op, kind, operand))

    def postfix(self) -> Node:
        node = self.primary()
        while self.at(".", "["):
            if self.take().text == ".":
                tok = self.take()
                if tok.kind != "name":
                    raise ExpressionError("expected a field name after '.'", tok.offset)
                node = ("get", node, ("lit", tok.text))
            else:
                index = self.expr()
                self.expect("]")
                node = ("get", node, index)
        return node

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind in ("num", "str"):
            return ("lit", tok.value)
        if tok.kind == "name":
            if tok.text in ("true", "false", "null"):
                return ("lit", {"true": True, "false": False, "null": None}[tok.text])
            if tok.text in KEYWORDS:
                raise ExpressionError(f"unexpected {tok.text!r}", tok.offset)
            if self.at("("):
                self.take()
                if tok.text not in FUNCTIONS:
                    raise ExpressionError(
                        f"unknown function {tok.text!r} (known: {', '.join(sorted(FUNCTIONS))})",
                        tok.offset,
                    )
                return ("call", tok.text, *self.args(")"))
            return ("var", tok.text, tok.offset)
        if tok.text == "(" and tok.kind == "op":
            node = self.expr()
            self.expect(")")
            return node
        if tok.text == "[" and tok.kind == "op":
            return ("list", *self.args("]"))
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise ExpressionError(f"expected a value, found {found}", tok.offset)

    def args(self, close: str) -> list[Node]:
        items: list[Node] = []
        if self.at(close):
            self.take()
            return items
        while True:
            items.append(self.expr())
            if self.at(","):
                self.take()
                continue
            self.expect(close)
            return items


def parse(text: str) -> Node:
    if not text.strip():
        raise ExpressionError("empty expression", 0)
    return _Parser(text).parse()


# -- templates: strings with ${...} ------------------------------------------------------------


def pieces(text: str) -> Iterator[tuple[str, int]]:
    """The expressions inside ``text`` with their offsets in it."""
    for m in TEMPLATE.finditer(text):
        yield m.group(1), m.start(1)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def whole_expression(text: str) -> str | None:
    """The expression when ``text`` is exactly one ``${...}`` (its value keeps its type)."""
    m = TEMPLATE.fullmatch(text.strip())
    return m.group(1) if m else None


def check_template(text: str) -> None:
    """Raise ExpressionError (offset within ``text``) when a ``${...}`` does not parse."""
    if text.count("${") != len(TEMPLATE.findall(text)):
        raise ExpressionError("'${' without a closing '}'", text.find("${"))
    for expr, start in pieces(text):
        try:
            parse(expr)
        except ExpressionError as err:
            raise ExpressionError(err.message, start + err.offset) from None


# -- evaluation ---------------------------------------------------------------------------------


def render(value: Any, scope: dict[str, Any]) -> Any:
    """Evaluate every template inside ``value`` (recursively through dicts and lists)."""
    if isinstance(value, dict):
        return {k: render(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, scope) for v in value]
    if not is_template(value):
        return value
    whole = whole_expression(value)
    if whole is not None:
        return evaluate(parse(whole), scope)
    return TEMPLATE.sub(lambda m: as_text(evaluate(parse(m.group(1)), scope)), value)


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def evaluate(node: Node, scope: dict[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "var":
        if node[1] not in scope:
            raise ExpressionError(
                f"undefined variable {node[1]!r} (known: {', '.join(sorted(scope))})", node[2]
            )
        return scope[node[1]]
    if kind == "get":
        base = evaluate(node[1], scope)
        key = evaluate(node[2], scope)
        if isinstance(base, dict):
            if not isinstance(key, str) or key not in base:
                known = ", ".join(sorted(str(k) for k in base)) or "none"
                raise ExpressionError(f"no field {key!r} (fields: {known})")
            return base[key]
        if isinstance(base, list):
            if not isinstance(key, int) or isinstance(key, bool):
                raise ExpressionError(f"a list index must be an integer, not {key!r}")
            if not -len(base) <= key < len(base):
                raise ExpressionError(f"index {key} is out of range (length {len(base)})")
            return base[key]
        raise ExpressionError(f"cannot look up {key!r} in {type_name(base)}")
    if kind == "list":
        return [evaluate(n, scope) for n in node[1:]]
    if kind == "not":
        return not truthy(evaluate(node[1], scope))
    if kind == "and":
        return truthy(evaluate(node[1], scope)) and truthy(evaluate(node[2], scope))
    if kind == "or":
        return truthy(evaluate(node[1], scope)) or truthy(evaluate(node[2], scope))
    if kind == "neg":
        return -_number(evaluate(node[1], scope), "-")
    if kind == "cmp":
        return _compare(node[1], evaluate(node[2], scope), evaluate(node[3], scope))
    if kind == "arith":
        return _arith(node[1], evaluate(node[2], scope), evaluate(node[3], scope))
    if kind == "call" and node[1] == "if":  # lazy: only the chosen branch is evaluated
        if len(node) != 5:
            raise ExpressionError(f"if() takes 3 arguments, got {len(node) - 2}")
        return evaluate(node[3] if truthy(evaluate(node[2], scope)) else node[4], scope)
    if kind == "call":
        args = [evaluate(n, scope) for n in node[2:]]
        fn = FUNCTIONS[node[1]]
        if not fn.min_args <= len(args) <= fn.max_args:
            raise ExpressionError(f"{node[1]}() takes {fn.arity_text()}, got {len(args)}")
        return fn.call(*args)
    raise ExpressionError(f"unknown expression node {kind!r}")


def truthy(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


def _number(value: Any, op: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{op} needs numbers, got {type_name(value)}")
    return value


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return bool(a == b and type_name(a) == type_name(b))
    if op == "!=":
        return not (a == b and type_name(a) == type_name(b))
    if type_name(a) != type_name(b) or type_name(a) not in ("number", "string"):
        raise ExpressionError(f"cannot compare {type_name(a)} {op} {type_name(b)}")
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if op == "+" and isinstance(a, list) and isinstance(b, list):
        return a + b
    x, y = _number(a, op), _number(b, op)
    if op == "/":
        if y == 0:
            raise ExpressionError("division by zero")
        return x / y
    return {"+": x + y, "-": x - y, "*": x * y}[op]


# -- functions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Function:
    call: Callable[..., Any]
    min_args: int
    max_args: int
    returns: str  # JSON Schema type of the result ("any" when it depends)
    doc: str

    def arity_text(self) -> str:
        if self.min_args == self.max_args:
            return f"{self.min_args} argument(s)"
        return f"{self.min_args} to {self.max_args} arguments"


def _need_list(value: Any, fn: str) -> list[Any]:
    if not isinstance(value, list):
        raise ExpressionError(f"{fn}() needs a list, got {type_name(value)}")
    return value


def _field(item: Any, name: str, fn: str) -> Any:
    if not isinstance(item, dict) or name not in item:
        raise ExpressionError(f"{fn}(): an item has no field {name!r}")
    return item[name]


def _len(value: Any) -> int:
    if not isinstance(value, list | dict | str):
        raise ExpressionError(f"len() needs a list, object or string, got {type_name(value)}")
    return len(value)


def _to_number(value: Any) -> float | int:
    if isinstance(value, bool):
        raise ExpressionError("number() cannot convert a boolean")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ExpressionError(f"number(): {value!r} is not a number") from None
        return float(parsed)
    raise ExpressionError(f"number() cannot convert {type_name(value)}")


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _head(value: Any, n: Any) -> Any:
    if not isinstance(value, str | list) or not isinstance(n, int) or isinstance(n, bool):
        raise ExpressionError("head() needs a string or list and an integer")
    return value[: max(n, 0)]


def _sum(value: Any) -> Any:
    total: Any = 0
    for item in _need_list(value, "sum"):
        total += _to_number(item)
    return total


FUNCTIONS: dict[str, Function] = {
    "if": Function(lambda c, a, b: a if truthy(c) else b, 3, 3, "any", "a if c else b (lazy)"),
    "len": Function(_len, 1, 1, "integer", "length of a list, object or string"),
    "number": Function(_to_number, 1, 1, "number", "a number from a number or decimal string"),
    "string": Function(as_text, 1, 1, "string", "text of a value"),
    "digest": Function(_digest, 1, 1, "string", "sha256 of the value's canonical JSON"),
    "head": Function(_head, 2, 2, "any", "the first n characters or items"),
    "sum": Function(_sum, 1, 1, "number", "sum of a list of numbers / decimal strings"),
    "pluck": Function(
        lambda xs, f: [_field(x, f, "pluck") for x in _need_list(xs, "pluck")],
        2,
        2,
        "array",
        "the field f of every item",
    ),
    "where": Function(
        lambda xs, f, v: [x for x in _need_list(xs, "where") if _field(x, f, "where") == v],
        3,
        3,
        "array",
        "the items whose field f equals v",
    ),
    "where_not": Function(
        lambda xs, f, v: [x for x in _need_list(xs, "where_not") if _field(x, f, "where_not") != v],
        3,
        3,
        "array",
        "the items whose field f differs from v",
    ),
    "contains": Function(
        lambda xs, v: v in (xs if isinstance(xs, str) else _need_list(xs, "contains")),
        2,
        2,
        "boolean",
        "whether a list (or string) contains v",
    ),
}


def variables(node: Node) -> Iterator[tuple[tuple[str, ...], int]]:
    """Every variable path read by ``node`` (``steps.x.output.y`` -> ('steps','x','output','y'))
    with the offset of its root name. Computed indexes end the path."""
    kind = node[0]
    if kind == "var":
        yield (node[1],), node[2]
        return
    if kind == "get":
        path = static_path(node)
        if path is not None:
            yield path
            if node[2][0] != "lit":
                yield from variables(node[2])
            return
        yield from variables(node[1])
        yield from variables(node[2])
        return
    for child in node[1:]:
        if isinstance(child, tuple):
            yield from variables(child)


def static_path(node: Node) -> tuple[tuple[str, ...], int] | None:
    """The variable path ``node`` reads (with its root's offset), None when it is computed."""
    if node[0] == "var":
        return (node[1],), node[2]
    if node[0] != "get":
        return None
    inner = static_path(node[1])
    if inner is None:
        return None
    path, offset = inner
    key = node[2]
    if key[0] == "lit" and isinstance(key[1], str):
        return (*path, key[1]), offset
    return (*path, "[]"), offset  # any index into a list


__all__ = [
    "ExpressionError",
    "FUNCTIONS",
    "Function",
    "KEYWORDS",
    "MAX_DEPTH",
    "Node",
    "TEMPLATE",
    "Token",
    "as_text",
    "check_template",
    "evaluate",
    "is_template",
    "parse",
    "pieces",
    "render",
    "static_path",
    "tokenize",
    "truthy",
    "type_name",
    "variables",
    "whole_expression",
]
