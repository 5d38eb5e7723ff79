"""YAML syntax errors: said in our words, where the mistake starts, with its line and a caret.

Each test makes one mistake in the seed registry (``events.yaml`` at the root of the repository)
and states the place it means with :func:`at` ("the quote after 'subject: '"): PyYAML alone
reports most of these a line late, in the terms of its grammar.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailevents.errors import Problem, RegistryError, excerpt
from emailevents.registry import parse_registry
from tests.conftest import examples
from tests.test_registry import at, edit

FILE = "events.yaml"
SEED = (Path(__file__).parent.parent / "events.yaml").read_text()
SUBJECT = 'subject: "New model in {org.name}: {inventory_model.name}"'
TEMPLATE = "    template: inventory-model-created\n"


def problem_of(text: str) -> Problem:
    with pytest.raises(RegistryError) as caught:
        parse_registry(text, filename=FILE)
    (problem,) = caught.value.problems
    return problem


def syntax_error(text: str) -> Problem:
    problem = problem_of(text)
    assert problem.code == "EE002", problem
    assert problem.message.startswith("invalid YAML: "), problem
    return problem


def said(problem: Problem) -> tuple[int, int, str, str]:
    return (
        problem.line,
        problem.column,
        problem.message.removeprefix("invalid YAML: "),
        problem.hint,
    )


# --- quotes -------------------------------------------------------------------------------


def test_an_unclosed_double_quote_is_reported_where_it_opens_not_where_yaml_gave_up() -> None:
    text = edit(SEED, SUBJECT, SUBJECT[:-1])
    problem = syntax_error(text)
    line, column = at(text, '"New model')
    assert (line, column) == (28, 14)  # PyYAML: 29:10, "expected <block end>, but found '{'"
    assert str(problem) == (
        f"{FILE}:28:14: invalid YAML: unclosed double quote that starts at 28:14 "
        '(close it with " on the same line)\n'
        '        subject: "New model in {org.name}: {inventory_model.name}\n'
        "                 ^"
    )


def test_an_unclosed_single_quote_is_reported_where_it_opens() -> None:
    text = edit(SEED, SUBJECT, SUBJECT.replace('"', "'")[:-1])
    line, column = at(text, "'New model")
    assert said(syntax_error(text)) == (
        line,
        column,
        f"unclosed single quote that starts at {line}:{column}",
        "close it with ' on the same line",
    )


def test_an_unclosed_quote_closed_by_a_later_lines_quote_is_reported_where_it_opens() -> None:
    text = edit(SEED, "    template: inventory-model-created\n", "    template: 'inventory\n")
    text = edit(
        text, '    to: "{inventory_model.owner.email}"', "    to: '{inventory_model.owner.email}'"
    )
    problem = syntax_error(text)
    assert (problem.line, problem.column) == at(text, "'inventory\n")
    assert problem.message == "invalid YAML: unclosed single quote that starts at 26:15"


def test_a_quote_inside_a_quoted_value_is_reported_where_it_ends_the_value() -> None:
    text = edit(SEED, SUBJECT, 'subject: "New "{inventory_model.name}" model"')
    # PyYAML: 28:20, "expected <block end>, but found '{'".
    assert said(syntax_error(text)) == (
        *at(text, '"{inventory_model.name}" model'),
        "this quote ends the value, and more follows it on the line",
        'write a quote inside "..." as \\", or put the value in single quotes',
    )


def test_an_unknown_escape_in_double_quotes_is_reported_at_its_backslash() -> None:
    text = edit(SEED, SUBJECT, r'subject: "C:\models {inventory_model.name}"')
    assert said(syntax_error(text)) == (
        *at(text, "\\models"),
        "'\\m' is not an escape sequence of a double-quoted string",
        "write \\\\ for a backslash, or put the value in single quotes",
    )


# --- indentation --------------------------------------------------------------------------


def test_a_key_indented_more_than_the_keys_above_it_is_reported_on_its_own_line() -> None:
    text = edit(SEED, TEMPLATE, " " + TEMPLATE)
    # PyYAML: 26:14, "mapping values are not allowed here" (it read the key into toggle's value).
    assert said(syntax_error(text)) == (
        *at(text, "template: inventory-model-created"),
        "this key is indented more than the keys above it",
        "line it up with 'toggle' on line 25",
    )


def test_a_key_indented_less_than_the_keys_above_it_is_reported_on_its_own_line() -> None:
    text = edit(SEED, TEMPLATE, TEMPLATE[1:])
    assert said(syntax_error(text)) == (
        *at(text, "template: inventory-model-created"),
        "this key is indented less than the keys above it",
        "line it up with 'toggle' on line 25",
    )


def test_a_key_indented_like_its_parent_between_its_siblings_is_the_one_reported() -> None:
    text = edit(SEED, TEMPLATE, TEMPLATE[2:])
    # PyYAML: 27:13, at the `entities:` after it, which YAML read as part of template's value.
    assert said(syntax_error(text)) == (
        *at(text, "template: inventory-model-created"),
        "this key is indented less than the keys above and below it",
        "line it up with 'toggle' on line 25",
    )


def test_a_first_key_indented_more_than_the_keys_below_it_is_the_one_reported() -> None:
    old = (
        '      org_name: "{org.name}"\n      actor_name: "{user.full_name}"\n      model_name: "{i'
    )
    text = edit(SEED, old, "   " + old)
    # PyYAML: 32:7, "expected <block end>, but found '<block mapping start>'" at actor_name.
    assert said(syntax_error(text)) == (
        *at(text, 'org_name: "{org.name}"', nth=1),
        "this key is indented more than the keys below it",
        "line it up with 'actor_name' on line 32",
    )


def test_a_first_key_indented_less_than_the_keys_below_it_is_the_one_reported() -> None:
    old = (
        '      org_name: "{org.name}"\n      actor_name: "{user.full_name}"\n      model_name: "{i'
    )
    text = edit(SEED, old, old[1:])
    # PyYAML: 32:7, "expected <block end>, but found '<block mapping start>'" at actor_name.
    assert said(syntax_error(text)) == (
        *at(text, 'org_name: "{org.name}"', nth=1),
        "this key is indented less than the keys below it",
        "line it up with 'actor_name' on line 32",
    )


def test_a_tab_in_the_indentation_is_reported_where_it_is() -> None:
    text = edit(SEED, TEMPLATE, "\t" + TEMPLATE.lstrip(" "))
    problem = syntax_error(text)
    assert said(problem) == (
        *at(text, "\ttemplate"),
        "a tab in the indentation",
        "YAML indents with spaces only",
    )
    # The caret line keeps the tab, so that the caret stands under it in a terminal too.
    assert str(problem).endswith("\n    \ttemplate: inventory-model-created\n    ^")


# --- flow collections ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "opener"),
    [
        (
            "entities: {user: User, org: Organization, inventory_model: InventoryModel}",
            "entities: {user: User, org: Organization, inventory_model: InventoryModel",
            "{",
        ),
        ('to: "{inventory_model.owner.email}"', 'to: ["{inventory_model.owner.email}"', "["),
    ],
)
def test_an_unclosed_flow_collection_is_reported_where_it_opens(
    old: str, new: str, opener: str
) -> None:
    text = edit(SEED, old, new)
    line, column = at(text, opener, after=new.split(opener, maxsplit=1)[0])
    closer = {"{": "}", "[": "]"}[opener]
    assert said(syntax_error(text)) == (
        line,
        column,
        f"unclosed '{opener}' that starts at {line}:{column}",
        f"close it with '{closer}'",
    )


def test_an_unclosed_flow_collection_at_the_end_of_the_file_is_reported_where_it_opens() -> None:
    text = SEED.rstrip("\n")
    text = text[: text.rindex("\n")] + "\n    extra: [one, two\n"
    assert said(syntax_error(text))[:3] == (
        *at(text, "[one"),
        "unclosed '[' that starts at {}:{}".format(*at(text, "[one")),
    )


# --- keys and values ----------------------------------------------------------------------


def test_a_first_key_missing_its_colon_is_reported_where_the_colon_goes() -> None:
    text = edit(
        SEED, "    toggle: inventory_model_created\n", "    toggle inventory_model_created\n"
    )
    # PyYAML: 26:13, "mapping values are not allowed here", at the next line's colon.
    assert said(syntax_error(text)) == (
        *at(text, " inventory_model_created\n"),
        "missing ':' after the key 'toggle'",
        "write `toggle: inventory_model_created`",
    )


def test_a_later_key_missing_its_colon_is_reported_where_the_colon_goes() -> None:
    text = edit(SEED, TEMPLATE, "    template inventory-model-created\n")
    # PyYAML: 27:5, "could not find expected ':'", on the next line.
    assert said(syntax_error(text)) == (
        *at(text, " inventory-model-created\n"),
        "missing ':' after the key 'template'",
        "write `template: inventory-model-created`",
    )


def test_a_colon_without_a_space_after_a_key_is_reported_at_the_colon() -> None:
    text = edit(SEED, TEMPLATE, "    template:inventory-model-created\n")
    assert said(syntax_error(text)) == (
        *at(text, ":inventory-model-created"),
        "a ':' after a key must be followed by a space",
        "write `template: inventory-model-created`",
    )


def test_a_colon_inside_an_unquoted_value_is_reported_with_the_value_quoted() -> None:
    text = edit(SEED, SUBJECT, "subject: Note: {inventory_model.name} was created")
    assert said(syntax_error(text)) == (
        *at(text, ": {inventory_model.name} was"),
        "a ':' inside an unquoted value, which YAML takes for the ':' after a key",
        'quote the value: `subject: "Note: {inventory_model.name} was created"`',
    )


def test_an_unquoted_expression_followed_by_text_is_reported_at_its_brace() -> None:
    text = edit(SEED, SUBJECT, "subject: {org.name} has a new model")
    # PyYAML: 28:25, "expected <block end>, but found '<scalar>'".
    assert said(syntax_error(text)) == (
        *at(text, "{org.name} has"),
        "YAML reads {org.name} unquoted as a mapping, not an expression",
        'quote expressions: `subject: "{org.name} has a new model"`',
    )


@pytest.mark.parametrize(
    ("old", "new", "field", "quoted"),
    [
        (SUBJECT, "subject: {inventory_model.name}", "subject", '"{inventory_model.name}"'),
        (
            'to: "{inventory_model.owner.email}"',
            "to: [{inventory_model.owner.email}]",
            "to",
            '["{inventory_model.owner.email}"]',
        ),
    ],
)
def test_an_unquoted_expression_alone_is_a_mapping_and_said_to_be_quoted(
    old: str, new: str, field: str, quoted: str
) -> None:
    text = edit(SEED, old, new)
    problem = problem_of(text)  # valid YAML: the registry's schema finds a mapping
    expression = quoted.strip('["]')
    assert (problem.code, problem.line, problem.column) == (
        "EE007",
        *at(text, new[len(field) + 2 :]),
    )
    assert problem.message == (
        f"events.inventory_model_created.{field}: YAML reads {expression} unquoted as a mapping, "
        "not an expression"
    )
    assert problem.hint == f"quote expressions: `{field}: {quoted}`"


def test_other_mistakes_keep_pyyamls_words_at_its_position() -> None:
    text = edit(SEED, "    toggle: inventory_model_created\n", "    toggle: [a]]\n")
    problem = syntax_error(text)
    assert (problem.line, problem.column) == at(text, "]\n")
    assert problem.message == (
        "invalid YAML: while parsing a block mapping expected <block end>, but found ']'"
    )
    assert problem.source_line == "    toggle: [a]]"


# --- how it is printed --------------------------------------------------------------------


def test_the_registry_error_indents_the_line_and_caret_under_their_problem() -> None:
    with pytest.raises(RegistryError) as caught:
        parse_registry(edit(SEED, SUBJECT, SUBJECT[:-1]), filename=FILE)
    assert str(caught.value).splitlines()[1:] == [
        (
            f"  {FILE}:28:14: invalid YAML: unclosed double quote that starts at 28:14 "
            '(close it with " on the same line)'
        ),
        '          subject: "New model in {org.name}: {inventory_model.name}',
        "                   ^",
    ]


def test_an_excerpt_of_a_long_line_is_cut_around_its_column() -> None:
    line = "x: " + "a" * 200 + "!" + "b" * 200
    shown, caret = excerpt(line, line.index("!") + 1).splitlines()[1:]
    assert shown.startswith("    ...a")
    assert shown.endswith("b...")
    assert len(shown) == 4 + 3 + 100 + 3
    assert shown[caret.index("^")] == "!"


def test_an_excerpt_shows_characters_a_terminal_would_not_print_as_question_marks() -> None:
    assert excerpt("a: b\x1b[2Jc", 5) == "\n    a: b?[2Jc\n        ^"
    assert excerpt("   ", 1) == ""
    assert excerpt("a: b", 0) == ""


# --- robustness (hypothesis) --------------------------------------------------------------


def _loads_or_raises_registry_error(text: str) -> None:
    """A Registry, or a RegistryError whose problems stand on lines of ``text``."""
    try:
        parse_registry(text, filename=FILE)
    except RegistryError as exc:
        problems = exc.problems
    else:
        return
    assert problems
    lines = re.split("\r\n|[\n\r\x85\u2028\u2029]", text)
    for problem in problems:
        assert 1 <= problem.line <= len(lines), problem
        assert problem.column >= 1, problem
        if problem.source_line:
            assert problem.source_line == lines[problem.line - 1], problem
        str(problem)  # prints, whatever the line holds


@st.composite
def _one_character_edits(draw: st.DrawFn) -> str:
    """The seed registry with one to three characters deleted or inserted."""
    text = SEED
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text) - 1))
        if draw(st.booleans()):
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + draw(st.sampled_from(list("\"'{}[]:,-#&*!|> \t\nx"))) + text[i:]
    return text


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_one_character_edits())
def test_any_small_edit_of_the_seed_registry_loads_or_raises_registry_error(text: str) -> None:
    _loads_or_raises_registry_error(text)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="{}[]:,-'\"#\n\t xy.\\", max_size=120))
def test_any_yaml_punctuation_loads_or_raises_registry_error(text: str) -> None:
    _loads_or_raises_registry_error(text)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_text_loads_or_raises_registry_error(text: str) -> None:
    _loads_or_raises_registry_error(text)
