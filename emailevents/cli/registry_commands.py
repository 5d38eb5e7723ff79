"""The commands that read the registry: ``list``, ``stubs``, ``lint`` and ``preview``."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigurationError, RegistryError
from .common import (
    APP_VARIABLE,
    COLOURS,
    complete_events,
    echo_json,
    format_option,
    importable_cwd,
    load_app,
    optional_app_option,
    table,
)

if TYPE_CHECKING:
    from ..engine import EmailEvents
    from ..lint import LintReport
    from ..preview import Preview, Rendered
    from ..registry import Registry
    from ..senders.postmark import PostmarkSender


def _registry(path: str) -> Registry:
    from ..registry import load_registry  # noqa: PLC0415

    importable_cwd()
    try:
        return load_registry(path)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("list")
@click.argument("registry", default="events.yaml", type=click.Path(exists=True, dir_okay=False))
@format_option(
    "markdown",
    "json",
    help="A plain aligned table, a Markdown table for docs, or one JSON document.",
)
def list_events(registry: str, fmt: str) -> None:
    """The table of events: task, toggle key, template, entities, batching (and category, when
    any)."""
    loaded = _registry(registry)
    if fmt == "json":
        document = {
            "registry": registry,
            "events": [
                {
                    "key": event.key,
                    "task": event.task_name,
                    "toggle": event.toggle,
                    "template": event.template,
                    "entities": {name: etype.name for name, etype in event.entities},
                    "category": event.category,
                    "critical": event.critical,
                    "batch": None
                    if event.batch is None
                    else {"window_ms": _ms(event.batch.window_ms), "max": event.batch.max},
                }
                for event in loaded.events.values()
            ],
            "categories": {
                key: {
                    "title": category.title,
                    "description": category.description,
                    "default": category.default,
                }
                for key, category in loaded.categories.items()
            },
        }
        echo_json(document)
        return
    header: tuple[str, ...] = ("Task", "Toggle Key", "Template", "Entities", "Batching")
    rows: list[tuple[str, ...]] = [
        (
            event.task_name,
            event.toggle or "(always enabled)",
            str(event.template),
            ", ".join(f"{name}: {etype.name}" for name, etype in event.entities),
            "off"
            if event.batch is None
            else f"{_ms(event.batch.window_ms)} ms, max {event.batch.max}",
        )
        for event in loaded.events.values()
    ]
    # A registry that declares no categories and no critical mail keeps the table it had.
    if loaded.categories or any(event.critical for event in loaded.events.values()):
        header = (*header, "Category")
        rows = [
            (*row, "critical" if event.critical else event.category or "")
            for row, event in zip(rows, loaded.events.values(), strict=True)
        ]
    click.echo(table(header, rows, markdown=fmt == "markdown"))


def _ms(window_ms: float) -> int | float:
    """Milliseconds as written: whole ones without a fraction."""
    return int(window_ms) if window_ms == int(window_ms) else round(window_ms, 3)


@click.command()
@click.argument("registry", default="events.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The module to write, e.g. myapp/emails.py.",
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 when OUTPUT is out of date.")
def stubs(registry: str, output: Path, check: bool) -> None:
    """Write a typed emit() for the registry's events (one overload per event)."""
    from ..stubs import render_stubs  # noqa: PLC0415

    text = render_stubs(_registry(registry), source=registry, target=output.as_posix())
    if not check:
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}: emit() typed for {registry}")
        return
    if not output.is_file() or output.read_text(encoding="utf-8") != text:
        click.echo(
            f"{output} does not match {registry}: run `emailevents stubs {registry} -o {output}`",
            err=True,
        )
        raise SystemExit(1)
    click.echo(f"{output} matches {registry}")


# --- lint and preview ------------------------------------------------------------------------

FAIL_ON = ("error", "warning", "info")

token_option = click.option(
    "--token",
    default=None,
    help="Postmark's Server API token (default: the POSTMARK_SERVER_TOKEN environment variable).",
)
api_url_option = click.option(
    "--api-url",
    default=None,
    help="Postmark's API URL (default: POSTMARK_API_URL, else Postmark's own).",
)


class _ConfigurationProblem(click.ClickException):
    """A setting is wrong or missing: exit status 2, like a usage error."""

    exit_code = 2


def _postmark_sender(
    token: str | None, api_url: str | None, app: EmailEvents | None
) -> PostmarkSender | None:
    """The sender to reach Postmark with: the options' (or the environment's), else the app's.

    With no token anywhere, None: the checks against Postmark are skipped.
    """
    from ..senders.postmark import TOKEN_VARIABLE, PostmarkSender  # noqa: PLC0415

    if token or api_url or os.environ.get(TOKEN_VARIABLE, "").strip():
        try:
            sender = PostmarkSender(token, api_url=api_url)
            sender.check()
        except ConfigurationError as exc:
            raise _ConfigurationProblem(str(exc)) from None
        return sender
    if app is not None and isinstance(app.sender, PostmarkSender):
        try:
            app.sender.check()
        except ConfigurationError:
            # The environment has no token (checked above): the app's sender was given none.
            return None
        return app.sender
    return None


def _secret(token: str | None) -> str:
    from ..senders.postmark import TOKEN_VARIABLE  # noqa: PLC0415

    return (token or os.environ.get(TOKEN_VARIABLE, "")).strip()


def _scrub(text: str, secret: str) -> str:
    # Nothing lint prints comes from the token, but what a server answered might repeat it.
    return text.replace(secret, "<hidden>") if secret else text


def _app_for_lint(app_ref: str | None) -> tuple[EmailEvents | None, str]:
    """The application, or None with the reason when its own registry keeps it from loading."""
    if app_ref is None:
        return None, ""
    try:
        return load_app(app_ref), ""
    except click.UsageError as exc:
        cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
        if isinstance(cause, RegistryError):
            return None, "the application's registry does not load: linted without the app"
        raise


def _app_context(app: EmailEvents) -> dict[str, Any]:
    """The context values the application gave EmailEvents (those its events use)."""
    from ..introspect import Callee  # noqa: PLC0415

    context: dict[str, Any] = {}
    for values in app.runtime.context.values():
        for name, value in values.items():
            context[name] = value.func if isinstance(value, Callee) else value
    return context


def _org_settings(app: EmailEvents) -> tuple[dict[str, int] | None, str]:
    """The engine's org settings, by toggle key; None (and why) when they cannot be read."""
    import sqlalchemy as sa  # noqa: PLC0415

    from ..lint import org_settings_toggles  # noqa: PLC0415

    if app.registry.toggles is not None:
        return None, ""  # the application keeps its toggles itself: they cannot be listed
    try:
        with app.session_factory() as session:
            return org_settings_toggles(session), ""
    except sa.exc.SQLAlchemyError as exc:
        return None, f"the org settings could not be read: {str(exc).splitlines()[0]}"


@click.command("lint")
@click.argument("registry", required=False, type=click.Path(dir_okay=False))
@optional_app_option
@token_option
@api_url_option
@click.option("--offline", is_flag=True, help="Skip the checks against Postmark.")
@click.option(
    "--no-import",
    "no_import",
    is_flag=True,
    help="Import nothing the registry names, so that none of its code runs; skip the checks "
    "that need it.",
)
@format_option("json", help="One finding per line, or one JSON document.")
@click.option(
    "--fail-on",
    type=click.Choice(FAIL_ON),
    default="error",
    show_default=True,
    help="The lowest severity that makes the exit status 1.",
)
def lint_command(  # noqa: PLR0917 - one parameter per option
    registry: str | None,
    app_ref: str | None,
    token: str | None,
    api_url: str | None,
    offline: bool,
    no_import: bool,
    fmt: str,
    fail_on: str,
) -> None:
    """Check the registry offline and, given a Postmark token, its templates at Postmark.

    Exit status: 0 clean, 1 findings at or above --fail-on, 2 usage or configuration problems.
    Finding codes are explained in docs/lint.md.
    """
    from ..lint import PostmarkAPIError, Severity, lint_report  # noqa: PLC0415

    notes: list[str] = []
    if no_import:
        app_ref, notes = _without_app(app_ref)
    else:
        importable_cwd()
    app, note = _app_for_lint(app_ref)
    notes += [note] if note else []
    path = registry or (app.registry.source if app is not None else "events.yaml")
    if not Path(path).is_file():
        raise click.UsageError(f"no registry file at {path}: give its path, or --app")
    sender = None if offline else _postmark_sender(token, api_url, app)
    context = _app_context(app) if app is not None else None
    toggle_keys, note = _org_settings(app) if app is not None else (None, "")
    notes += [note] if note else []
    secret = _secret(token)
    try:
        report = lint_report(
            path,
            context_names=context,
            toggle_keys=toggle_keys,
            sender=sender,
            resolve=not no_import,
        )
    except (ConfigurationError, PostmarkAPIError) as exc:
        raise _ConfigurationProblem(_scrub(str(exc), secret)) from None
    if fmt == "json":
        document = {
            "registry": path,
            "events": report.events,
            "findings": [f.to_dict() for f in report.findings],
            "counts": report.counts(),
            "shared_toggles": {k: list(v) for k, v in report.shared_toggles.items()},
            "postmark": report.postmark,
            "templates_checked": report.templates_checked,
            "skipped": list(report.skipped),
            "notes": notes,
        }
        click.echo(_scrub(json.dumps(document, indent=2), secret))
    else:
        for finding in report.findings:
            # The code in its severity's colour: red errors, yellow warnings, cyan infos.
            code = click.style(finding.code, fg=COLOURS[finding.severity.value])
            line = _scrub(str(finding), secret)
            click.echo(line.replace(f": {finding.code} ", f": {code} ", 1))
        for line in [*notes, *_lint_summary(path, report)]:
            click.echo(_scrub(line, secret), err=True)
    threshold = Severity(fail_on).rank
    if any(f.severity.rank >= threshold for f in report.findings):
        raise SystemExit(1)


def _without_app(app_ref: str | None) -> tuple[None, list[str]]:
    """``lint --no-import`` takes no application: importing it would run the application."""
    if app_ref is None:
        return None, []
    source = click.get_current_context().get_parameter_source("app_ref")
    if source is not click.core.ParameterSource.ENVIRONMENT:
        raise click.UsageError(
            "--no-import imports nothing, and --app imports the application: give one of them"
        )
    return None, [f"{APP_VARIABLE} is not used with --no-import: the application is not imported"]


def _lint_summary(path: str, report: LintReport) -> list[str]:
    counts = report.counts()
    found = [f"{n} {kind}{'s' if n != 1 and kind != 'info' else ''}" for kind, n in counts.items()]
    events = f"{report.events} event{'s' if report.events != 1 else ''}"
    lines = [
        f"{', '.join(found)} in {path} ({events})"
        if report.findings
        else f"no findings in {path} ({events})"
    ]
    if report.postmark is not None:
        lines.append(
            f"templates checked at Postmark ({report.postmark}): {report.templates_checked}"
        )
    else:
        lines.append(
            "templates not checked at Postmark: give --token, or set POSTMARK_SERVER_TOKEN"
        )
    if report.skipped:
        lines.append(f"not checked, to import nothing (--no-import): {'; '.join(report.skipped)}")
    lines += [
        f"toggle '{key}' switches {len(keys)} events: {', '.join(keys)}"
        for key, keys in report.shared_toggles.items()
    ]
    return lines


@click.command("preview")
@click.argument("event_key", metavar="EVENT", shell_complete=complete_events)
@click.option(
    "--cuid",
    "cuids",
    multiple=True,
    metavar="NAME=CUID",
    help="An entity of the event and its CUID, like org=c123 (one per entity).",
)
@optional_app_option
@click.option(
    "--sample",
    is_flag=True,
    help="Sample values from the column types instead of the database (no --app needed).",
)
@click.option(
    "--registry",
    "registry_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --sample: the registry (default: the app's, else events.yaml).",
)
@click.option(
    "--digest",
    is_flag=True,
    help="The event's digest message instead, with sample items (each this TemplateModel).",
)
@token_option
@api_url_option
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the rendered HTML body to this file instead of printing it.",
)
@format_option("json", help="Readable sections, or one JSON document.")
def preview_command(  # noqa: PLR0917 - one parameter per option
    event_key: str,
    cuids: tuple[str, ...],
    app_ref: str | None,
    sample: bool,
    registry_path: str | None,
    digest: bool,
    token: str | None,
    api_url: str | None,
    html_file: Path | None,
    fmt: str,
) -> None:
    """Build EVENT's TemplateModel as its task would, and render it where Postmark is reachable.

    With --app, the entities are loaded from the application's database by their CUIDs; with
    --sample, values are samples of their columns' types, no database needed.
    """
    importable_cwd()
    if not sample and app_ref is None:
        raise click.UsageError(
            f"preview needs the application (--app or {APP_VARIABLE}) to load the entities, "
            "or --sample for sample values"
        )
    if sample and cuids:
        raise click.UsageError("--sample makes up the values: leave out --cuid")
    if registry_path and not sample:
        raise click.UsageError("--registry is for --sample; with --app, the app's registry is used")
    app = load_app(app_ref) if app_ref is not None else None
    shown = _build_preview(
        app, event_key, cuids, sample=sample, registry_path=registry_path, digest=digest
    )
    secret = _secret(token)
    rendered, not_rendered = _render(_postmark_sender(token, api_url, app), shown, secret)
    if rendered is not None and rendered.html is not None and html_file is not None:
        html_file.write_text(rendered.html, encoding="utf-8")
    if fmt == "json":
        document = shown.to_dict()
        document["rendered"] = rendered.to_dict() if rendered is not None else None
        if rendered is None:
            document["not_rendered"] = not_rendered
        click.echo(_scrub(json.dumps(document, indent=2), secret))
        return
    click.echo(_scrub(_preview_text(shown, rendered, not_rendered, html_file), secret))


def _build_preview(
    app: EmailEvents | None,
    event_key: str,
    cuids: Sequence[str],
    *,
    sample: bool,
    registry_path: str | None,
    digest: bool = False,
) -> Preview:
    """The preview from the app's database, or with ``sample`` values; with ``digest``, the
    digest message it would go out in."""
    from .. import preview as previews  # noqa: PLC0415
    from ..engine import find_event  # noqa: PLC0415
    from ..errors import EmitError  # noqa: PLC0415

    try:
        if sample or app is None:
            source = registry_path or (app.registry.source if app else "events.yaml")
            registry = _registry(source)
            shown = previews.preview_sample(registry, event_key)
        else:
            registry = app.registry
            shown = previews.preview(app, event_key, _named_cuids(cuids))
        if not digest:
            return shown
        return previews.as_digest(find_event(registry, event_key), shown)
    except EmitError as exc:
        raise click.UsageError(str(exc)) from None
    except previews.PreviewError as exc:
        raise click.ClickException(str(exc)) from None


def _render(
    sender: PostmarkSender | None, shown: Preview, secret: str
) -> tuple[Rendered | None, str]:
    """Postmark's rendering of the preview, or None and why not."""
    from .. import preview as previews  # noqa: PLC0415
    from ..lint import PostmarkUnreachableError  # noqa: PLC0415

    if sender is None:
        return None, "no Postmark server configured (give --token and --api-url)"
    try:
        return previews.render(sender, shown.template, shown.template_model), ""
    except PostmarkUnreachableError as exc:
        return None, _scrub(str(exc), secret)
    except previews.PreviewError as exc:
        raise click.ClickException(_scrub(str(exc), secret)) from None
    except ConfigurationError as exc:
        raise _ConfigurationProblem(_scrub(str(exc), secret)) from None


def _named_cuids(pairs: Sequence[str]) -> dict[str, str]:
    cuids: dict[str, str] = {}
    for pair in pairs:
        name, sep, cuid = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r} is not NAME=CUID", param_hint="--cuid")
        if name.strip() in cuids:
            raise click.BadParameter(f"'{name.strip()}' is given twice", param_hint="--cuid")
        cuids[name.strip()] = cuid.strip()
    return cuids


def _preview_text(
    shown: Preview, rendered: Rendered | None, not_rendered: str, html_file: Path | None
) -> str:
    values = "sample values" if shown.sample else "loaded from the database"
    lines = [
        f"event {shown.event_key}, template {shown.template!r} ({values})",
        f"to: {', '.join(shown.recipients) or '(nobody)'}",
        *(f"note: {note}" for note in shown.notes),
        "TemplateModel:",
        json.dumps(dict(shown.template_model), indent=2, ensure_ascii=False),
    ]
    if rendered is None:
        lines.append(f"not rendered: {not_rendered}")
        return "\n".join(lines)
    lines += [f"note: {note}" for note in rendered.notes]
    lines.append(f"Subject: {rendered.subject}")
    if rendered.text is not None:
        lines += ["TextBody:", rendered.text.rstrip("\n")]
    if rendered.html is not None:
        if html_file is not None:
            lines.append(f"HtmlBody: written to {html_file} ({len(rendered.html)} characters)")
        else:
            lines += ["HtmlBody:", rendered.html.rstrip("\n")]
    return "\n".join(lines)
