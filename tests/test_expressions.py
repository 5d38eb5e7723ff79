"""The ``{entity.attr}`` language: parsing, its errors, and rendering that cannot be abused."""

from __future__ import annotations

import datetime as dt
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emailevents.errors import EmailEventsError, ExpressionError
from emailevents.expressions import Path, RenderError, Template, parse
from tests.conftest import examples

# --- parsing ------------------------------------------------------------------------------


def test_literal_text_parses_to_one_literal_part() -> None:
    assert parse("Hello there").parts == ("Hello there",)


def test_an_empty_template_has_no_parts() -> None:
    assert parse("").parts == ()


def test_paths_and_literals_alternate_in_order_with_their_offsets() -> None:
    template = parse("New in {org.name}: {finding.owner.email}!")
    assert template.parts == (
        "New in ",
        Path("org", ("name",), 7),
        ": ",
        Path("finding", ("owner", "email"), 19),
        "!",
    )
    assert [str(p) for p in template.paths] == ["org.name", "finding.owner.email"]


def test_a_template_that_is_one_path_has_a_single_path() -> None:
    assert parse("{org.name}").single_path == Path("org", ("name",), 0)
    assert parse("{site_url}").single_path == Path("site_url", (), 0)
    assert parse("x{org.name}").single_path is None
    assert parse("{org.name}{org.name}").single_path is None
    assert parse("{{org.name}}").single_path is None


def test_double_braces_stand_for_literal_braces() -> None:
    template = parse("{{literal}} and {{{org.name}}}")
    assert template.parts == ("{literal} and {", Path("org", ("name",), 18), "}")


@pytest.mark.parametrize(
    ("source", "offset", "reason"),
    [
        ("a } b", 2, "unmatched '}' (write '}}' for a literal brace)"),
        ("a { b", 2, "'{' is never closed (write '{{' for a literal brace)"),
        ("x {}", 2, "empty '{}'; name a value like {org.name}"),
        ("{org._secret}", 5, "'_secret' starts with '_'; private attributes cannot be used"),
        ("{org.__class__}", 5, "'__class__' starts with '_'; private attributes cannot be used"),
        ("{_org.name}", 1, "'_org' starts with '_'; private attributes cannot be used"),
        ("{org.name()}", 9, "unexpected '(' in {org.name()}"),
        ("{org.members[0]}", 12, "unexpected '[' in {org.members[0]}"),
        ("{ org.name}", 1, "unexpected ' ' in { org.name}"),
        ("{org.name + 1}", 9, "unexpected ' ' in {org.name + 1}"),
        ("{org.1st}", 5, "unexpected '1' in {org.1st}"),
        ("{org-name}", 4, "unexpected '-' in {org-name}"),
        ("{org.näme}", 6, "unexpected 'ä' in {org.näme}"),
        ("{.name}", 1, "unexpected '.' in {.name}"),
        ("{org..name}", 4, "unexpected '.' in {org..name}"),
        ("{org.}", 4, "unexpected '.' in {org.}"),
        ("{org{name}", 4, "unexpected '{' in {org{name}"),
        ("{0.__class__}", 1, "unexpected '0' in {0.__class__}"),
    ],
)
def test_invalid_templates_are_rejected_at_the_offending_character(
    source: str, offset: int, reason: str
) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(source)
    assert caught.value.offset == offset
    assert caught.value.reason.startswith(reason)
    assert str(caught.value).endswith(f" at column {offset + 1} of {source!r}")


def test_expression_errors_are_emailevents_errors_and_value_errors() -> None:
    assert issubclass(ExpressionError, EmailEventsError)
    assert issubclass(ExpressionError, ValueError)
    assert issubclass(RenderError, EmailEventsError)


def test_a_source_that_is_not_a_string_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        parse(42)  # type: ignore[arg-type]


def parsed(source: str) -> Template | ExpressionError:
    """The template, or the ExpressionError that parsing raised (anything else propagates)."""
    try:
        return parse(source)
    except ExpressionError as exc:
        return exc


def check_parsed(source: str) -> None:
    result = parsed(source)
    if isinstance(result, ExpressionError):
        assert 0 <= result.offset < len(source)
        assert result.source == source
        return
    for path in result.paths:
        assert source[path.offset] == "{"
        assert not any(name.startswith("_") for name in (path.root, *path.attrs))


@settings(max_examples=examples(500))
@given(st.text())
def test_any_string_parses_or_raises_expression_error(source: str) -> None:
    check_parsed(source)


@settings(max_examples=examples(500))
@given(st.text(alphabet=st.sampled_from("{}._ aZ0(")))
def test_brace_heavy_strings_parse_or_raise_expression_error(source: str) -> None:
    check_parsed(source)


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@settings(max_examples=examples(300))
@given(st.text())
def test_escaped_text_round_trips_to_itself(text: str) -> None:
    template = parse(escape(text))
    assert template.paths == ()
    assert template.render_text({}) == text
    assert template.render({}) == text


_IDENTIFIERS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)


@st.composite
def _template_pieces(draw: st.DrawFn) -> list[str | tuple[str, ...]]:
    """Literal texts and dotted names, in order: what a valid template is made of."""
    pieces: list[str | tuple[str, ...]] = []
    for piece in draw(
        st.lists(st.one_of(st.text(min_size=1), st.lists(_IDENTIFIERS, min_size=1, max_size=4)))
    ):
        if isinstance(piece, str) and pieces and isinstance(pieces[-1], str):
            pieces[-1] += piece  # adjacent literals are one literal part
        else:
            pieces.append(piece if isinstance(piece, str) else tuple(piece))
    return pieces


@settings(max_examples=examples(300))
@given(_template_pieces())
def test_templates_built_from_text_and_names_parse_back_to_them(
    pieces: list[str | tuple[str, ...]],
) -> None:
    source = "".join(escape(p) if isinstance(p, str) else "{" + ".".join(p) + "}" for p in pieces)
    template = parse(source)
    assert [p if isinstance(p, str) else (p.root, *p.attrs) for p in template.parts] == pieces


# --- rendering ----------------------------------------------------------------------------


class Obj:
    """An entity stand-in with the given attributes."""

    def __init__(self, **attrs: Any) -> None:
        self.__dict__.update(attrs)


class Failing:
    """An attribute that raises when read, like a lazy load on a closed session."""

    @property
    def name(self) -> str:
        raise RuntimeError("detached instance")


class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text for you")


def test_rendering_joins_literals_and_values_as_text() -> None:
    org = Obj(name="Acme", seats=12)
    assert parse("{org.name} has {org.seats} seats").render_text({"org": org}) == (
        "Acme has 12 seats"
    )


def test_a_lone_path_keeps_its_value_and_its_type() -> None:
    org = Obj(seats=12, tags=["a"], founded=dt.date(2020, 1, 2))
    assert parse("{org.seats}").render({"org": org}) == 12
    assert parse("{org.tags}").render({"org": org}) == ["a"]
    assert parse("{org.founded}").render({"org": org}) == dt.date(2020, 1, 2)
    assert parse("{org}").render({"org": org}) is org


def test_dates_and_times_render_as_iso_8601_in_text() -> None:
    values = {"d": dt.date(2024, 5, 1), "t": dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)}
    assert parse("{d} / {t}").render_text(values) == "2024-05-01 / 2024-05-01T09:30:00+00:00"


def test_a_none_on_the_way_gives_none_and_empty_text() -> None:
    values = {"project": Obj(reviewer=None)}
    assert parse("{project.reviewer.email}").render(values) is None
    assert parse("by {project.reviewer.email}.").render_text(values) == "by ."


def test_a_missing_attribute_is_a_render_error_naming_the_path() -> None:
    with pytest.raises(RenderError) as caught:
        parse("{org.nmae}").render({"org": Obj(name="Acme")})
    assert caught.value.path == Path("org", ("nmae",), 0)
    assert str(caught.value).startswith("reading {org.nmae} failed: AttributeError")


def test_an_attribute_that_raises_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"reading \{org.name\} failed: RuntimeError: detached"):
        parse("Hi {org.name}").render_text({"org": Failing()})


def test_a_value_that_cannot_be_text_is_a_render_error() -> None:
    with pytest.raises(RenderError, match=r"rendering \{org.logo\} failed: ValueError"):
        parse("Logo: {org.logo}").render_text({"org": Obj(logo=Unprintable())})


@pytest.mark.parametrize(
    ("source", "values", "kind"),
    [
        ("{site_url.upper}", {"site_url": "https://acme.test"}, "a built-in function or method"),
        ("{org.describe}", {"org": Obj(describe=Obj)}, "a class"),
        ("{org.describe}", {"org": Obj(describe=lambda: "Acme")}, "a function"),
        ("{org.render_text}", {"org": parse("x")}, "a method"),
        ("{helper}", {"helper": len}, "a built-in function or method"),
        ("{helper.name}", {"helper": Obj}, "a class"),
    ],
    ids=["builtin method", "class", "function", "method", "builtin function", "through a class"],
)
@pytest.mark.parametrize("single_line", [False, True])
def test_a_path_to_a_callable_is_a_render_error_never_its_repr(
    source: str, values: dict[str, Any], kind: str, single_line: bool
) -> None:
    path = parse(source).paths[0]
    message = (
        f"{{{path}}} is {kind}, not a value; expressions never call what they name (give the "
        "value itself, from a context callable or `build:`)"
    )
    with pytest.raises(RenderError) as alone:
        parse(source).render(values)
    with pytest.raises(RenderError) as in_text:
        parse(f"Re: {source}").render_text(values, single_line=single_line)
    assert str(alone.value) == str(in_text.value) == message
    assert alone.value.path == path


@pytest.mark.parametrize(
    "value", ["{0.__class__}", "{x}", "{org.name}", "{{", "%(x)s", "{0!r:>10}"]
)
def test_values_are_never_formatted_only_inserted(value: str) -> None:
    values = {"org": Obj(name=value), "x": "X"}
    assert parse("Hi {org.name}!").render_text(values) == f"Hi {value}!"
    assert parse("Hi {org.name}!").render_text(values, single_line=True) == f"Hi {value}!"


@settings(max_examples=examples(300))
@given(st.text(), st.text(), st.text())
def test_a_single_line_rendering_has_no_line_breaks_whatever_the_values(
    before: str, value: str, after: str
) -> None:
    source = f"{escape(before)}{{item.title}}{escape(after)}"
    subject = parse(source).render_text({"item": Obj(title=value)}, single_line=True)
    assert subject.splitlines() in ([subject], [])
    assert "\r" not in subject
    assert "\n" not in subject
    assert subject == subject.strip()


def test_a_single_line_rendering_folds_each_run_of_line_breaks_to_one_space() -> None:
    value = "Line one\r\n\r\nline\u2028two\x85three\x1cfour\n"
    rendered = parse("Re: {t}").render_text({"t": value}, single_line=True)
    assert rendered == "Re: Line one line two three four"


# --- rendering never reaches private attributes (hypothesis) ------------------------------


class PrivateTouched(BaseException):
    """Raised when rendering reads a private attribute; a BaseException so nothing catches it."""


class Guarded:
    """An entity whose every attribute read goes through ``__getattribute__``.

    Public names come from ``attrs``; a name starting with '_' is recorded in ``touched`` and
    raises :class:`PrivateTouched`. Python itself reads dunders through the type, never through
    this method, so anything recorded was read by the code under test.
    """

    def __init__(self, attrs: dict[str, Any], touched: list[str]) -> None:
        object.__setattr__(self, "_Guarded__attrs", attrs)
        object.__setattr__(self, "_Guarded__touched", touched)

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_"):
            object.__getattribute__(self, "_Guarded__touched").append(name)
            raise PrivateTouched(name)
        attrs = object.__getattribute__(self, "_Guarded__attrs")
        if name not in attrs:
            raise AttributeError(name)
        value = attrs[name]
        if issubclass(type(value), Exception):  # not isinstance(): it reads `__class__`
            raise value
        return value


_NAMES = ["name", "email", "owner", "org", "items", "title", "upper", "x"]
_LEAVES = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.dates(),
    st.datetimes(),
    st.sampled_from(["{0.__class__}", "{x}", "\r\nBcc: x@y.test"]),
    st.builds(Unprintable),
    st.builds(RuntimeError, st.text(max_size=5)),  # read: the attribute raises this
)


def _graphs(touched: list[str]) -> st.SearchStrategy[Any]:
    return st.recursive(
        _LEAVES,
        lambda children: st.builds(
            Guarded,
            st.dictionaries(st.sampled_from(_NAMES), children, max_size=4),
            st.just(touched),
        ),
        max_leaves=12,
    )


_SOURCES = st.one_of(
    st.text(),
    st.lists(
        st.one_of(
            st.text(alphabet=string.ascii_letters + " {}", max_size=5),
            st.lists(st.sampled_from(["root", *_NAMES]), min_size=1, max_size=4).map(
                lambda names: "{" + ".".join(names) + "}"
            ),
        ),
        max_size=5,
    ).map("".join),
)


@settings(max_examples=examples(400), deadline=None)
@given(st.data(), _SOURCES, st.booleans())
def test_rendering_never_touches_a_private_attribute_and_raises_only_render_error(
    data: st.DataObject, source: str, single_line: bool
) -> None:
    template = parsed(source)
    if isinstance(template, ExpressionError):
        return
    touched: list[str] = []
    values = {p.root: data.draw(_graphs(touched)) for p in template.paths}
    try:
        template.render(values)
        template.render_text(values, single_line=single_line)
    except RenderError:
        pass
    assert touched == []


def test_the_guard_notices_a_private_read() -> None:
    touched: list[str] = []
    guarded = Guarded({"name": "x"}, touched)
    with pytest.raises(PrivateTouched):
        getattr(guarded, "_sa_instance_state")  # noqa: B009 - exactly what rendering must not do
    assert touched == ["_sa_instance_state"]


def test_an_enum_in_text_renders_as_its_value_as_a_lone_path_is_sent() -> None:
    import enum  # noqa: PLC0415

    class Stage(enum.Enum):
        LIVE = "live"

    assert parse("stage: {s}").render({"s": Stage.LIVE}) == "stage: live"
