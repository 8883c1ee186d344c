"""``shoptet-worker trash``: list, show, replay (optionally with an edited body), discard."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from worker.store import InstallStore

trash_app = typer.Typer(help="Messages that could not be processed.", no_args_is_help=True)


@asynccontextmanager
async def _opened_store() -> AsyncIterator[InstallStore]:
    from worker.cli import settings_from_env
    from worker.store import open_store

    store = await open_store(settings_from_env())
    try:
        yield store
    finally:
        await store.close()


@trash_app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, help="Entries at most, oldest first.")] = 100,
    after: Annotated[int | None, typer.Option(help="Only entries after this id (the next page).")] = None,
    user: Annotated[str | None, typer.Option(help="Only this install's entries.")] = None,
    node: Annotated[str | None, typer.Option(help="Only entries of this node type.")] = None,
    topology: Annotated[str | None, typer.Option(help="Only entries of this topology.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Oldest first: id, node, topology, user, error. A full page ends with how to get the next."""

    async def _list() -> None:
        async with _opened_store() as store:
            entries = await store.list_trash(limit, after_id=after, user=user, node_name=node, topology_name=topology)
            for entry in entries:
                if as_json:
                    typer.echo(entry.model_dump_json())
                else:
                    when = entry.created_at.isoformat(timespec="seconds") if entry.created_at else ""
                    typer.echo(
                        f"{entry.id:>6}  {when}  {entry.node_name or entry.topic:34} "
                        f"{entry.topology_name or '-':20} {entry.user or '-':12} {entry.error_message[:80]}"
                    )
            if len(entries) == limit and not as_json:
                typer.echo(f"(the first {limit}; next page: --after {entries[-1].id})", err=True)

    asyncio.run(_list())


@trash_app.command()
def show(entry_id: int) -> None:
    """Everything kept about one entry, as JSON."""

    async def _show() -> None:
        async with _opened_store() as store:
            entry = await store.get_trash(entry_id)
            if entry is None:
                typer.echo(f"no trash entry {entry_id}", err=True)
                raise typer.Exit(1)
            typer.echo(entry.model_dump_json(indent=2))

    asyncio.run(_show())


@trash_app.command()
def replay(
    entry_id: int,
    body: Annotated[str | None, typer.Option(help="Replace the body (JSON) before replaying.")] = None,
    drop_cursor: Annotated[
        bool, typer.Option(help="Start the node over: drop the cursor (where the failed attempt stopped).")
    ] = False,
    cursor: Annotated[
        str | None,
        typer.Option(help='Go on from here instead (JSON, e.g. {"skip": 1201} past a bad line a node names).'),
    ] = None,
    current_version: Annotated[
        bool,
        typer.Option(help="Run it on its topology's current version (after a fix to the topology), not its own."),
    ] = False,
) -> None:
    """Send the message back to its node with its original headers, then remove it from trash."""
    from worker.trash import STORED

    edited: Any = STORED
    if body is not None:
        try:
            edited = json.loads(body)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--body is not JSON: {exc}") from exc
    new_cursor: dict[str, Any] | None = None
    if cursor is not None:
        if drop_cursor:
            raise typer.BadParameter("give --cursor or --drop-cursor, not both")
        try:
            new_cursor = json.loads(cursor)
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--cursor is not JSON: {exc}") from exc
        if not isinstance(new_cursor, dict):
            raise typer.BadParameter("--cursor is a JSON object")

    async def _replay() -> None:
        from worker.cli import settings_from_env
        from worker.control import control_client
        from worker.envelope import H
        from worker.trash import NothingToReplay, ReplayedNotRemoved
        from worker.trash import replay as do_replay

        async with _opened_store() as store:
            entry = await store.get_trash(entry_id)
            if entry is None:
                typer.echo(f"no trash entry {entry_id}", err=True)
                raise typer.Exit(1)
            if body is not None and not drop_cursor and new_cursor is None and H.CURSOR in entry.headers:
                typer.echo(
                    f"note: entry {entry_id} carries a cursor (where its node stopped), which applies to the "
                    "edited body as well; --drop-cursor starts the node over",
                    err=True,
                )
            async with control_client(settings_from_env()) as control:
                try:
                    await do_replay(
                        store,
                        control,
                        entry,
                        edited,
                        drop_cursor=drop_cursor,
                        cursor=new_cursor,
                        current_version=current_version,
                    )
                except (NothingToReplay, ReplayedNotRemoved) as exc:
                    typer.echo(str(exc), err=True)
                    raise typer.Exit(1) from exc
            typer.echo(f"replayed {entry_id} (trashed from {entry.topic})")

    asyncio.run(_replay())


@trash_app.command()
def discard(entry_id: int) -> None:
    """Delete an entry for good."""

    async def _discard() -> None:
        from worker.trash import NothingToReplay
        from worker.trash import discard as do_discard

        async with _opened_store() as store:
            try:
                found = await do_discard(store, entry_id)
            except NothingToReplay as exc:
                typer.echo(str(exc), err=True)
                raise typer.Exit(1) from exc
            if not found:
                typer.echo(f"no trash entry {entry_id}", err=True)
                raise typer.Exit(1)
            typer.echo(f"discarded {entry_id}")

    asyncio.run(_discard())
