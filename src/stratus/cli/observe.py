"""``stratus usage`` and ``stratus logs``: what the cluster metered and what functions said."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from stratus import _exceptions as exc
from stratus.client import usage as usage_mod
from stratus.protocol import messages as m

WithClient = Callable[[str | None, str | None, Any], Any]
Option = Callable[[Any], Any]

_FOLLOW_POLL = 0.5  # seconds between reads of new log lines
_DEFAULT = usage_mod.Prices()


def register(
    cli: click.Group,
    with_client: WithClient,
    console: Console,
    address_option: Option,
    data_dir_option: Option,
) -> None:
    """Add the commands to the ``stratus`` group (``with_client`` opens a connection)."""

    @cli.command()
    @click.option("--function", "-f", default=None, help="Only this function.")
    @click.option("--since", default="", help="A span back (15m, 2h, 7d) or a date (2026-11-27).")
    @click.option(
        "--period",
        type=click.Choice(["day", "hour", "all"]),
        default="day",
        show_default=True,
        help="Rows per UTC day, hour, or one row per function.",
    )
    @click.option(
        "--per-million-requests",
        type=float,
        default=_DEFAULT.per_million_requests,
        show_default=True,
        help="Price of a million requests.",
    )
    @click.option(
        "--per-gb-second",
        type=float,
        default=_DEFAULT.per_gb_second,
        show_default=True,
        help="Price of a GB-second.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
    @address_option
    @data_dir_option
    def usage(
        function: str | None,
        since: str,
        period: usage_mod.Period,
        per_million_requests: float,
        per_gb_second: float,
        as_json: bool,
        address: str | None,
        data_dir: str | None,
    ) -> None:
        """Metered totals per function and period, with their cost."""
        try:
            since_ns = usage_mod.parse_since(since) if since else 0
        except exc.ConfigurationError as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
        prices = usage_mod.Prices(per_million_requests, per_gb_second)

        def fetch(client: Any) -> list[Any]:
            with Progress(
                TextColumn("reading metering batches"),
                BarColumn(),
                MofNCompleteColumn(),
                console=console,
                transient=True,
                disable=as_json,
            ) as bar:
                task = bar.add_task("batches", total=None)
                report = partial(_advance, bar, task)
                return usage_mod.fetch(client, progress=report)

        records = with_client(address, data_dir, fetch)
        result = usage_mod.aggregate(
            records, function=function, since_ns=since_ns, period=period, prices=prices
        )
        if as_json:
            click.echo(msgspec.json.encode(result).decode())
            return
        console.print(_usage_table(result))
        console.print(
            f"prices: {prices.per_million_requests:g} {prices.currency} per 1M requests, "
            f"{prices.per_gb_second:g} per GB-s ({prices.source})"
        )

    @cli.command()
    @click.argument("function")
    @click.option("--invocation", "invocation_id", default="", help="Only this invocation.")
    @click.option("--lines", "-n", default=100, show_default=True, help="How many to show.")
    @click.option("--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
    @address_option
    @data_dir_option
    def logs(
        function: str,
        invocation_id: str,
        lines: int,
        follow: bool,
        address: str | None,
        data_dir: str | None,
    ) -> None:
        """Print what a function's invocations printed and logged."""

        def show(client: Any) -> None:
            if function not in {f.name for f in client.status().functions}:
                raise exc.FunctionNotFound(function)
            cursor: dict[str, int] | None = None
            while True:
                build = partial(
                    m.LogsRead,
                    function=function,
                    invocation_id=invocation_id,
                    cursor=cursor,
                    limit=lines if cursor is None else 100_000,
                )
                page = client.request(build)
                for line in page.lines:
                    click.echo(_format_line(line))
                if not follow:
                    return
                cursor = page.cursor
                time.sleep(_FOLLOW_POLL)

        with contextlib.suppress(KeyboardInterrupt):
            with_client(address, data_dir, show)


def _advance(bar: Progress, task: Any, done: int, total: int) -> None:
    bar.update(task, completed=done, total=total)


def _usage_table(result: usage_mod.Usage) -> Table:
    table = Table(
        "function", "period", "calls", "errors", "lost", "billed ms", "GB-s", "CPU ms", "cost"
    )
    for r in [*result.rows, result.total]:
        table.add_row(
            "[bold]total[/bold]" if r is result.total else r.function,
            "" if r is result.total else r.period,
            str(r.calls),
            str(r.errors),
            str(r.lost),
            str(r.billed_ms),
            f"{r.gb_seconds:.6f}",
            f"{r.cpu_ms:.1f}",
            f"${r.cost:.8f}",
        )
    return table


def _format_line(line: m.LogLine) -> str:
    when = dt.datetime.fromtimestamp(line.time_ns / 1e9, dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    return f"{when} {line.invocation_id} {line.stream}: {line.text}"
