"""``shoptet-worker status``: running and recent processes, read from the process ledger.

The ledger topic is the only source: it is written by every worker in the same delivery as the
outputs, so what this shows is what the cluster acknowledged, whichever replica did the work. The
command joins no consumer group (it must never steal partitions from the process tracker).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from worker.processes import ProcessBook, ProcessCounts
from worker.settings import Settings


def state_of(p: ProcessCounts) -> str:
    """``settling``: nothing in flight, but the tracker has not yet seen it stay quiet (or is not running).
    ``failed``: finished with messages in trash (it showed "finished" in green, like a clean run)."""
    if p.finished:
        return "failed" if p.trashed > 0 else "finished"
    return "running" if p.in_flight > 0 else "settling"


def progress_of(p: ProcessCounts) -> tuple[int, int | None]:
    """``(completed, total)``; ``total`` None means "running, nothing to count against".

    With items, an item has ended when it reached a terminal node (``done``), a sink
    (``delivered``) or trash. A node that publishes to a sink and has no node followers is counted
    both as done and as delivered, so the two are not added: the larger one stands for the items
    that ended cleanly (an item path ending in a sink, one ending in a writer, or a batch writing
    items straight to a sink all come out right). Capped at ``emitted`` because the batch's own last
    page and fan-out also count as done.
    """
    if p.emitted > 0:
        total = p.emitted
        ended = total if p.finished else min(total, max(p.done, p.delivered) + p.trashed)
        return ended, total
    if p.finished:
        return 1, 1
    return 0, None


def select(book: ProcessBook, limit: int) -> list[ProcessCounts]:
    """Unfinished processes first (newest first), then finished ones, most recently finished first."""
    running = sorted((p for p in book.processes.values() if not p.finished), key=lambda p: -p.started_at)
    done = sorted((p for p in book.processes.values() if p.finished), key=lambda p: -(p.finished_at or 0))
    return [*running, *done][: max(limit, 0)]


def as_json(p: ProcessCounts, now: float) -> dict[str, Any]:
    completed, total = progress_of(p)
    end = p.finished_at if p.finished_at is not None else now
    return {
        **p.summary(),
        "state": state_of(p),
        "progress": None if total is None else round(completed / total, 4),
        "age_seconds": round(now - p.started_at, 3),
        "duration_seconds": round(end - p.started_at, 3),
    }


def _age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render(processes: list[ProcessCounts], now: float) -> Table | Text:
    if not processes:
        return Text("no processes in the ledger yet", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True)
    table.add_column("process", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=len("finished"))
    table.add_column("topology", overflow="ellipsis", no_wrap=True)
    table.add_column("user", overflow="ellipsis", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    for column in ("emitted", "done", "delivered", "retries", "trashed", "in flight", "age"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    styles = {"finished": "green", "failed": "red", "running": "cyan", "settling": "yellow"}
    for p in processes:
        completed, total = progress_of(p)
        progress = Table.grid(padding=(0, 1))
        progress.add_row(
            ProgressBar(total=total, completed=completed, width=12, pulse=total is None),
            f"{completed}/{total}" if total is not None and p.emitted else "",
        )
        state = state_of(p)
        table.add_row(
            p.root[:12],
            Text(state, style=styles[state]),
            p.topology,
            p.user or "-",
            progress,
            str(p.emitted),
            str(p.done),
            str(p.delivered),
            str(p.retries),
            Text(str(p.trashed), style="red" if p.trashed else ""),
            str(p.in_flight),
            _age(now - p.started_at),
        )
    return table


async def load_book(settings: Settings) -> ProcessBook:
    """The whole ledger once (``read_book``), without a consumer group.

    A missing ledger topic (nothing ever started) is an empty book. It is checked first because
    aiokafka 0.14 raises CancelledError when a group-less consumer is stopped right after start,
    which is what ``read_book`` does when the topic has no partitions.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from worker.control import resolve_bootstrap
    from worker.kafka import client_options, make_consumer
    from worker.processes import read_book
    from worker.topics import TopicNames

    bootstrap = resolve_bootstrap(settings)
    topic = TopicNames(settings.kafka_topic_prefix).processes
    admin = AIOKafkaAdminClient(**client_options(settings, bootstrap))
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return ProcessBook()
    finally:
        await admin.close()
    return await read_book(make_consumer(settings, bootstrap, group_id=None), topic)


async def watch_ledger(
    settings: Settings, limit: int, interval: float, console: Console, *, ticks: int | None = None
) -> None:
    """Follow the ledger and redraw; ``ticks`` bounds the loop (tests), None runs until Ctrl-C.

    Incremental rather than re-reading the ledger every tick: the ledger grows with every handled
    message. Subscribing without a group gets every partition and picks the topic up if it is
    created after the command started.
    """
    from worker.control import resolve_bootstrap
    from worker.kafka import ensure_topics, make_consumer
    from worker.topics import TopicNames

    topic = TopicNames(settings.kafka_topic_prefix).processes
    bootstrap = resolve_bootstrap(settings)
    # created as a worker creates it: subscribed to before any worker ran, the broker made it with
    # its own default partitions, which the workers then kept (one process tracker for all)
    await ensure_topics(settings, bootstrap, [topic])
    consumer = make_consumer(settings, bootstrap, topic, group_id=None)
    book = ProcessBook()

    def view() -> Group:
        heading = Text(f"{topic} — {time.strftime('%H:%M:%S')} — Ctrl-C to stop", style="dim")
        return Group(heading, render(select(book, limit), time.time()))

    await consumer.start()
    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            tick = 0
            while ticks is None or tick < ticks:
                batches = await consumer.getmany(timeout_ms=int(interval * 1000))
                for records in batches.values():
                    for record in records:
                        book.apply_value(record.value)
                live.update(view(), refresh=True)
                tick += 1
    finally:
        await consumer.stop()


def status_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON list (for scripts).")] = False,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many processes.")] = 20,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep following the ledger until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between redraws with --watch.")] = 2.0,
) -> None:
    """Running and recent processes: progress, counts, topology, user and age (from the process ledger)."""
    from worker.cli import settings_from_env

    if json_output and watch:
        raise typer.BadParameter("--json and --watch do not go together; poll `status --json` instead")
    from worker.control import resolve_bootstrap

    settings = settings_from_env()
    try:
        resolve_bootstrap(settings)
    except RuntimeError as exc:  # no KAFKA_BOOTSTRAP_SERVERS and no local `up`
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        if watch:
            asyncio.run(watch_ledger(settings, limit, interval, Console()))
            return
        book = asyncio.run(load_book(settings))
    except KeyboardInterrupt:
        return
    now = time.time()
    processes = select(book, limit)
    if json_output:
        typer.echo(json.dumps([as_json(p, now) for p in processes], indent=2))
    else:
        Console().print(render(processes, now))
