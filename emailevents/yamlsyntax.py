"""A YAML syntax error in our words, where the mistake starts.

PyYAML reports where it gave up, which is often a line after the mistake, in the terms of its
grammar ("expected <block end>, but found '{'"). Here its error and the tokens its own scanner
read before it are matched against the mistakes people make in a registry (an unclosed quote,
a key indented one space too far, a missing ':', an unquoted expression) and said in words at
the place to fix; anything else keeps PyYAML's words, at PyYAML's position.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import Problem

__all__ = ["source_lines", "syntax_problem"]

# Line breaks as PyYAML counts them (yaml/reader.py, Reader.forward).
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")
_QUOTES = {'"': "double", "'": "single"}
_CLOSERS = {"{": "}", "[": "]"}
# What an expression left unquoted looks like: `{org.name}`.
_EXPRESSION = re.compile(r"\{\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}\Z")
# Wider keys are cut when a hint names them.
_NAME_WIDTH = 40


def source_lines(text: str) -> list[str]:
    """``text`` split into lines the way PyYAML numbers them (its marks index this list)."""
    return _LINE_BREAK.split(text)


@dataclass(frozen=True)
class _Said:
    """A diagnosis: what to say, and where (0-based, as PyYAML's marks)."""

    line: int
    column: int
    message: str
    hint: str = ""


def syntax_problem(text: str, filename: str, exc: yaml.MarkedYAMLError) -> Problem:
    """The :class:`Problem` (EE002) for a scanner or parser error PyYAML raised on ``text``."""
    lines = source_lines(text)
    said = _Diagnosis(text, lines, exc).run()
    line = min(max(said.line, 0), len(lines) - 1)
    return Problem(
        f"invalid YAML: {said.message}",
        filename,
        line + 1,
        max(said.column, 0) + 1,
        hint=said.hint,
        code="EE002",
        source_line=lines[line],
    )


class _Diagnosis:
    def __init__(self, text: str, lines: list[str], exc: yaml.MarkedYAMLError) -> None:
        self.lines = lines
        self.exc = exc
        self.context = str(exc.context or "")
        self.what = str(exc.problem or "")
        mark = exc.problem_mark or exc.context_mark
        self.line = mark.line if mark else 0
        self.column = mark.column if mark else 0
        # A composer error (an undefined alias, a second document) is said well by PyYAML.
        self.diagnose = isinstance(exc, yaml.scanner.ScannerError | yaml.parser.ParserError)
        self.tokens = (
            _tokens_before(text, mark.index if mark else len(text)) if self.diagnose else []
        )

    def run(self) -> _Said:
        rules: tuple[Callable[[], _Said | None], ...] = (
            self._unclosed_quote,
            self._unknown_escape,
            self._after_quoted_value,
            self._unclosed_flow,
            self._unquoted_expression,
            self._tab,
            self._reserved,
            self._missing_colon,
            self._after_plain_value,
            self._misindented_block,
        )
        for rule in rules if self.diagnose else ():
            said = rule()
            if said is not None:
                return said
        words = " ".join(part for part in (self.context, self.what) if part)
        return _Said(self.line, self.column, words or "not valid YAML")

    # -- the rules, each None when its mistake is not the one made --

    def _unclosed_quote(self) -> _Said | None:
        """A quote left open runs on to the next quote, often on a later line, and on from there."""
        for token in self.tokens:
            if not isinstance(token, yaml.ScalarToken) or token.style not in _QUOTES:
                continue
            start, end = token.start_mark, token.end_mark
            # A quoted value may go on over lines; one with more written after its end does not.
            if start.line < end.line and _code(self._line(end.line)[end.column :]):
                return self._unclosed(start, token.style)
        if self.context == "while scanning a quoted scalar" and self.exc.context_mark:
            mark = self.exc.context_mark
            return self._unclosed(mark, self._line(mark.line)[mark.column : mark.column + 1])
        return None

    def _unclosed(self, mark: Any, quote: str) -> _Said:
        kind = f"{_QUOTES[quote]} " if quote in _QUOTES else ""
        where = f"{mark.line + 1}:{mark.column + 1}"
        return _Said(
            mark.line,
            mark.column,
            f"unclosed {kind}quote that starts at {where}",
            f"close it with {quote} on the same line",
        )

    def _after_quoted_value(self) -> _Said | None:
        """``subject: "He said "hi""``: a quote ends the value, and the line goes on."""
        if not isinstance(self.exc, yaml.parser.ParserError) or not self.tokens:
            return None
        last = self.tokens[-1]
        if not isinstance(last, yaml.ScalarToken) or last.style not in _QUOTES:
            return None
        end = last.end_mark
        if end.line != self.line or end.column > self.column:
            return None
        quote = last.style
        return _Said(
            end.line,
            end.column - 1,
            "this quote ends the value, and more follows it on the line",
            'write a quote inside "..." as \\", or put the value in single quotes'
            if quote == '"'
            else "write a quote inside '...' as ''",
        )

    def _unknown_escape(self) -> _Said | None:
        if not self.what.startswith(("found unknown escape character", "expected escape")):
            return None
        backslash = self._line(self.line).rfind("\\", 0, self.column + 1)
        column = backslash if backslash >= 0 else self.column
        escape = self._line(self.line)[column : column + 2]
        return _Said(
            self.line,
            column,
            f"'{escape}' is not an escape sequence of a double-quoted string",
            "write \\\\ for a backslash, or put the value in single quotes",
        )

    def _unclosed_flow(self) -> _Said | None:
        """A ``{`` or ``[`` whose entries run into the next key, or to the end of the file."""
        if not self.context.startswith(
            ("while parsing a flow mapping", "while parsing a flow seq")
        ):
            return None
        start = self.exc.context_mark
        if start is None:
            return None
        opener = self._line(start.line)[start.column : start.column + 1]
        at_end = "<stream end>" in self.what
        # The next line of a collection written over several lines is indented past its key.
        runs_on = self.line > start.line and _indent(self._line(self.line)) <= _indent(
            self._line(start.line)
        )
        if opener not in _CLOSERS or not (at_end or runs_on):
            return None
        where = f"{start.line + 1}:{start.column + 1}"
        return _Said(
            start.line,
            start.column,
            f"unclosed '{opener}' that starts at {where}",
            f"close it with '{_CLOSERS[opener]}'",
        )

    def _unquoted_expression(self) -> _Said | None:
        """``subject: {org.name} has a new model``: YAML reads a mapping, then more text."""
        opened = None
        for i, token in enumerate(self.tokens):
            if (
                isinstance(token, yaml.FlowMappingStartToken)
                and i > 0
                and isinstance(self.tokens[i - 1], yaml.ValueToken)
                and self.tokens[i - 1].start_mark.line == token.start_mark.line
            ):
                opened = token
            elif isinstance(token, yaml.FlowMappingEndToken) and opened is not None:
                closed = token
                braces = self._line(self.line)[opened.start_mark.column : closed.end_mark.column]
                if (
                    closed.end_mark.line == self.line == opened.start_mark.line
                    and i == len(self.tokens) - 1
                    and _EXPRESSION.match(braces)
                ):
                    return self._expression_at(opened.start_mark, closed.end_mark)
                opened = None
        return None

    def _expression_at(self, start: Any, end: Any) -> _Said:
        line = self._line(start.line)
        return _Said(
            start.line,
            start.column,
            f"YAML reads {line[start.column : end.column]} unquoted as a mapping, not an "
            "expression",
            f"quote expressions: `{_key_of(line)}: {_quoted(_code(line[start.column :]))}`",
        )

    def _tab(self) -> _Said | None:
        if not self.what.startswith("found character '\\t'"):
            return None
        if not self._line(self.line)[: self.column].strip(" \t"):
            return _Said(
                self.line, self.column, "a tab in the indentation", "YAML indents with spaces only"
            )
        return _Said(self.line, self.column, "a tab where YAML needs a space", "use spaces")

    def _reserved(self) -> _Said | None:
        found = re.match(r"found character '(.)' that cannot start any token", self.what)
        if not found:
            return None
        return _Said(
            self.line,
            self.column,
            f"'{found[1]}' cannot start an unquoted value",
            "quote the value",
        )

    def _missing_colon(self) -> _Said | None:
        """A line that should be ``key: value`` but has no ``:``.

        Within a mapping PyYAML looks for the ':' up to the next line ("while scanning a simple
        key"); as the first key of a mapping the line is read as a value and goes on into the
        next one, whose ':' is then out of place.
        """
        if self.what.startswith("could not find expected ':'") and self.exc.context_mark:
            start = self.exc.context_mark
            return self._no_colon(start.line, start.column)
        scalar = self._plain_before_colon()
        if scalar is None or scalar.start_mark.line == self.line:
            return None
        before = self.tokens[self.tokens.index(scalar) - 1]
        if isinstance(before, yaml.ValueToken) and before.start_mark.line == scalar.start_mark.line:
            return None  # a value, not a key: see _after_plain_value
        return self._no_colon(scalar.start_mark.line, scalar.start_mark.column)

    def _no_colon(self, line: int, column: int) -> _Said:
        text = _code(self._line(line)[column:])
        key, _, rest = text.partition(" ")
        if ":" in key.rstrip(":"):
            colon = column + key.index(":")
            name, _, value = key.partition(":")
            return _Said(
                line,
                colon,
                "a ':' after a key must be followed by a space",
                f"write `{name}: {value}`",
            )
        rest = rest.strip()
        return _Said(
            line,
            column + len(key),
            f"missing ':' after the key '{key}'",
            f"write `{key}: {rest}`" if rest else f"write `{key}:` and its value",
        )

    def _after_plain_value(self) -> _Said | None:
        """A ':' after an unquoted value: in the value itself, or a key indented too far."""
        scalar = self._plain_before_colon()
        if scalar is None:
            return None
        index = self.tokens.index(scalar)
        before = self.tokens[index - 1]
        if not isinstance(before, yaml.ValueToken):
            return None
        if scalar.start_mark.line == self.line:
            line = self._line(self.line)
            value = _code(line[scalar.start_mark.column :])
            where = "at the end of" if not _code(line[self.column + 1 :]) else "inside"
            return _Said(
                self.line,
                self.column,
                f"a ':' {where} an unquoted value, which YAML takes for the ':' after a key",
                f"quote the value: `{_key_of(line)}: {_quoted(value)}`",
            )
        # A key indented too far, read as more of the value above it.
        return self._out_of_line(before.start_mark.line, between=[])

    def _misindented_block(self) -> _Said | None:
        """A key that starts a mapping of its own because it is not in line with its siblings."""
        found = re.search(r"but found '<block (mapping|sequence) start>'", self.what)
        parent = self.exc.context_mark
        if not found or parent is None:
            return None
        owner = next(
            (
                i
                for i in range(self.line - 1, -1, -1)
                if self._is_content(i) and _indent(self._line(i)) <= parent.column
            ),
            None,
        )
        if owner is None:
            return None
        between = [i for i in range(owner + 1, self.line) if self._is_content(i)]
        return self._out_of_line(owner, between)

    def _out_of_line(self, owner: int, between: list[int]) -> _Said | None:
        """Which of the key on the error line and the keys before it is out of line.

        ``owner`` is the nearest line above at most as far right as the mapping PyYAML was in;
        ``between`` the lines after it. PyYAML reports the first key out of line with the keys
        before it; the mistake is where fewer keys line up: when more keys line up with the
        reported one than with those before it, the ones before are the mistake.
        """
        line = self._line(self.line)
        indent = _indent(line)
        if between:  # the keys above are further right, below a key at the mapping's column
            sibling = min(_indent(self._line(i)) for i in between)
            above = [i for i in between if _indent(self._line(i)) == sibling]
        else:  # the key above is the previous value's own key
            sibling = _indent(self._line(owner))
            before = self._content_line_before(owner)
            if sibling < indent and before is not None and _indent(self._line(before)) == indent:
                # The keys above and below line up with each other: the owner is the odd one.
                return _Said(
                    owner,
                    sibling,
                    f"this {_noun(self._line(owner))} is indented less than the "
                    f"{_noun(line)}s above and below it",
                    f"line it up with '{_key_of(self._line(before))}' on line {before + 1}",
                )
            above = self._aligned(owner, sibling, -1)[::-1]
        if sibling == indent or not above:
            return None
        below = self._aligned(self.line, indent, 1)
        if len(below) > len(above):
            return _Said(
                above[0],
                sibling,
                f"this {_noun(self._line(above[0]))} is indented "
                f"{'more' if sibling > indent else 'less'} than the {_noun(line)}s below it",
                f"line it up with '{_key_of(line)}' on line {self.line + 1}",
            )
        return _Said(
            self.line,
            indent,
            f"this {_noun(line)} is indented {'less' if indent < sibling else 'more'} than the "
            f"{_noun(line)}s above it",
            f"line it up with '{_key_of(self._line(above[-1]))}' on line {above[-1] + 1}",
        )

    def _aligned(self, start: int, column: int, step: int) -> list[int]:
        """The lines from ``start`` on (by ``step``) at ``column``, until one further left."""
        lines = []
        i = start
        while 0 <= i < len(self.lines):
            if self._is_content(i):
                indent = _indent(self._line(i))
                if indent < column:
                    break
                if indent == column:
                    lines.append(i)
            i += step
        return lines

    # -- helpers --

    def _line(self, number: int) -> str:
        return self.lines[number] if 0 <= number < len(self.lines) else ""

    def _is_content(self, number: int) -> bool:
        return bool(_code(self._line(number)))

    def _content_line_before(self, number: int) -> int | None:
        return next((i for i in range(number - 1, -1, -1) if self._is_content(i)), None)

    def _plain_before_colon(self) -> Any:
        """The unquoted value right before a ':' PyYAML found out of place, if that is the error."""
        if self.what != "mapping values are not allowed here" or not self.tokens:
            return None
        last = self.tokens[-1]
        if isinstance(last, yaml.ScalarToken) and last.plain and len(self.tokens) > 1:
            return last
        return None


def _tokens_before(text: str, index: int) -> list[Any]:
    """The tokens PyYAML's scanner reads from ``text`` before ``index``."""
    scanner = yaml.SafeLoader(text)
    tokens: list[Any] = []
    try:
        while scanner.check_token():
            token: Any = scanner.get_token()  # type: ignore[no-untyped-call]
            if token.start_mark.index >= index:
                break
            tokens.append(token)
    except yaml.YAMLError:
        # Tokens read ahead while the scanner still weighed a possible key.
        tokens.extend(t for t in scanner.tokens if t.start_mark.index < index)
    finally:
        scanner.dispose()
    return tokens


def _code(text: str) -> str:
    """``text`` without a trailing comment (a '#' after a space) or surrounding blanks."""
    match = re.search(r"(^|[ \t])#", text)
    return (text[: match.start()] if match else text).strip(" \t")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _key_of(line: str) -> str:
    """The key a line starts with, for naming it: ``  toggle: x`` -> ``toggle``."""
    text = _code(line).removeprefix("- ")
    return _short(re.split(r":(?:\s|$)", text, maxsplit=1)[0])


def _short(text: str) -> str:
    return text if len(text) <= _NAME_WIDTH else text[: _NAME_WIDTH - 3] + "..."


def _noun(line: str) -> str:
    return "list item" if line.lstrip(" ").startswith("- ") else "key"


def _quoted(value: str) -> str:
    if '"' in value and "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
