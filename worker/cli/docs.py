"""``shoptet-worker docs``: write the AsyncAPI document of the worker's topics and messages.

Offline on purpose: it needs no broker, so CI and a docs site can build it from a checkout. It
documents the topologies in a directory (default ``TOPOLOGY_DIR``, the shipped ones); the HTTP
app's ``GET /asyncapi.json`` documents what is actually deployed instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def docs_command(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", dir_okay=False, help="Write here instead of stdout.")
    ] = None,
    topology_dir: Annotated[
        Path | None,
        typer.Option(exists=True, file_okay=False, help="Topologies to document (default: TOPOLOGY_DIR)."),
    ] = None,
) -> None:
    """Print the AsyncAPI 3.0 document (JSON) of every topic and message the worker uses."""
    from worker.asyncapi import build_asyncapi
    from worker.registry import default_registry
    from worker.settings import Settings
    from worker.topology import TopologyError, load_topology_dir

    settings = Settings()
    registry = default_registry()
    try:
        # a TOPOLOGY_DIR that is not there documents none, as `up` deploys none from it
        directory = topology_dir or settings.topology_dir
        topologies = load_topology_dir(directory, registry, missing_ok=topology_dir is None)
    except TopologyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    text = json.dumps(build_asyncapi(settings, registry, topologies), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
