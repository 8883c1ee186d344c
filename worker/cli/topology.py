"""``shoptet-worker topology``: validate, deploy, list, show, diff, enable, disable."""

from __future__ import annotations

import asyncio
import difflib
from pathlib import Path
from typing import Annotated

import typer

from worker.registry import default_registry
from worker.topics import TopicNames
from worker.topology import TopologyError, TopologyVersion, check_unique_names, load_topology_file

topology_app = typer.Typer(help="Topology files: validate and deploy them, inspect what runs.", no_args_is_help=True)

Files = Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="Topology YAML files.")]


def _load_all(files: list[Path]) -> list[TopologyVersion]:
    from worker.cli import settings_from_env

    registry = default_registry()
    topics = TopicNames(settings_from_env().kafka_topic_prefix)  # what no start or sink may be
    loaded, failed = [], False
    for path in files:
        try:
            loaded.append(load_topology_file(path, registry, topics=topics))
        except TopologyError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed = True
    if not failed:
        try:
            check_unique_names(zip(files, loaded, strict=True))
        except TopologyError as exc:
            typer.echo(f"error: {exc}", err=True)
            failed = True
    if failed:
        raise typer.Exit(1)
    return loaded


@topology_app.command()
def validate(files: Files) -> None:
    """Check files without deploying; prints file:line: reason for each bad one."""
    for tv in _load_all(files):
        typer.echo(f"ok  {tv.name}@{tv.version}")


@topology_app.command()
def deploy(files: Files) -> None:
    """Validate every file, then make each one the current version on every worker.

    Nothing is deployed when any file is bad, so the running versions stay. A disabled topology
    stays disabled (as at `up`): deploying a fix is not the decision to run it again.
    """
    versions = _load_all(files)

    async def _deploy() -> None:
        from worker.catalog import publish_deployment
        from worker.cli import settings_from_env
        from worker.control import control_client
        from worker.kafka import ensure_topics

        settings = settings_from_env()
        async with control_client(settings) as control:
            # before the pointer moves: running workers start using the version at once
            # and the node topics: a custom node type new to the cluster needs one before a start
            own = sorted(
                {topic for tv in versions for topic in tv.own_topics()}
                | {control.topics.node(node) for tv in versions for node in tv.topology.node_types()}
            )
            await ensure_topics(settings, control.bootstrap_servers, own)
            for tv in versions:
                current = control.catalog.deployed.get(tv.name)
                enabled = current.enabled if current is not None else True
                crons_since = control.catalog.crons_since(tv, enabled)
                await publish_deployment(control.producer, control.topics.control, tv, enabled, crons_since)
                note = "" if enabled else f" (disabled: `shoptet-worker topology enable {tv.name}` runs it)"
                typer.echo(f"deployed {tv.name}@{tv.version}{note}")

    asyncio.run(_deploy())


@topology_app.command("list")
def list_() -> None:
    """Deployed topologies: current version, enabled, versions known."""

    async def _list() -> None:
        from worker.cli import settings_from_env
        from worker.control import control_client

        async with control_client(settings_from_env()) as control:
            for name, dep in sorted(control.catalog.deployed.items()):
                state = "enabled" if dep.enabled else "disabled"
                versions = len(control.catalog.history.get(name, []))
                unloadable = "" if control.catalog.get(name, dep.version) else "  (cannot be loaded here)"
                typer.echo(
                    f"{name:28} {dep.version}  {state:8}  {versions} version(s)  deployed {dep.deployed_at}{unloadable}"
                )

    asyncio.run(_list())


@topology_app.command()
def show(name: str, version: Annotated[str | None, typer.Option(help="Default: current.")] = None) -> None:
    """Print the YAML of a deployed version."""

    async def _show() -> None:
        from worker.cli import settings_from_env
        from worker.control import control_client

        async with control_client(settings_from_env()) as control:
            # as deployed: a version this shell cannot load (a custom node's module not on its
            # path) is still the one shown, not the one before it
            found = control.catalog.deployed_source(name, version)
            if found is None:
                typer.echo(f"no deployed topology {name!r}" + (f"@{version}" if version else ""), err=True)
                raise typer.Exit(1)
            shown, source = found
            if control.catalog.get(name, shown) is None:
                typer.echo(f"note: {name}@{shown} cannot be loaded here (its imports?)", err=True)
            typer.echo(source)

    asyncio.run(_show())


@topology_app.command()
def diff(name: str, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Unified diff between the deployed version and a file."""

    async def _diff() -> None:
        from worker.cli import settings_from_env
        from worker.control import control_client

        async with control_client(settings_from_env()) as control:
            found = control.catalog.deployed_source(name)  # as deployed, loadable here or not
            old = found[1] if found else ""
            new = file.read_text()
            label = f"{name}@{found[0]}" if found else f"{name} (not deployed)"
            typer.echo("".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), label, str(file))))

    asyncio.run(_diff())


def _set_enabled(name: str, enabled: bool) -> None:
    async def _go() -> None:
        from worker.catalog import publish_enabled
        from worker.cli import settings_from_env
        from worker.control import control_client

        async with control_client(settings_from_env()) as control:
            deployment = control.catalog.deployed.get(name)  # as deployed, whether loadable here or not
            if deployment is None:
                typer.echo(f"no deployed topology {name!r}", err=True)
                raise typer.Exit(1)
            await publish_enabled(control.producer, control.topics.control, deployment, enabled)
            typer.echo(f"{name}: {'enabled' if enabled else 'disabled'}")

    asyncio.run(_go())


@topology_app.command()
def enable(name: str) -> None:
    """Let the topology start processes again."""
    _set_enabled(name, True)


@topology_app.command()
def disable(name: str) -> None:
    """Start nothing new; messages in flight drain on their version."""
    _set_enabled(name, False)
