"""``shoptet-worker``: the command line (Typer). Each group lives in its own module."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from worker.cli.secrets import secrets_app
from worker.cli.topology import topology_app
from worker.cli.trash import trash_app
from worker.logging import configure_logging
from worker.settings import Settings

app = typer.Typer(
    help="Run Orchesty-style Shoptet integration processes on Kafka.",
    no_args_is_help=True,
    # a crash's traceback must not print its frames' variables: `install add` holds the token in one
    # (typer 0.12, which our floor allows, printed them by default)
    pretty_exceptions_show_locals=False,
)
app.add_typer(topology_app, name="topology")
app.add_typer(trash_app, name="trash")
app.add_typer(secrets_app, name="secrets")


def _mount_optional() -> None:
    """Groups owned by optional parts are mounted when their module is present."""
    try:
        from worker.cli.install import install_app
    except ImportError:  # pragma: no cover - the install group ships with the project
        return
    app.add_typer(install_app, name="install")


_mount_optional()


@app.callback()
def _configure_logging() -> None:
    """Every command logs as LOG_FORMAT and LOG_LEVEL say, to stderr (stdout is the command's own
    output: ``install list --json | jq`` got console log lines mixed into it)."""
    try:
        settings = Settings()
    except ValidationError:  # `--help` and the commands that read no settings still work; the
        configure_logging()  # others refuse the bad one in one line (see ``main``)
        return
    configure_logging(settings.log_format, settings.log_level)


def settings_from_env() -> Settings:
    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return settings


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Start the simulator with a seeded shop and run order-import.")] = False,
    http: Annotated[bool, typer.Option(help="Serve the HTTP app (webhooks, health, metrics).")] = True,
) -> None:
    """Start the worker: broker (embedded unless KAFKA_BOOTSTRAP_SERVERS), every node consumer, HTTP."""
    from worker.serve import PortInUse, WorkerFailed, serve

    try:
        asyncio.run(serve(settings_from_env(), demo=demo, http=http))
    except PortInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except WorkerFailed as exc:
        typer.echo(f"error: the worker stopped working, so it stopped: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def ingress() -> None:
    """Serve only the HTTP ingress (webhooks, manual runs, install callback) against KAFKA_BOOTSTRAP_SERVERS."""
    from worker.ingress import serve_ingress
    from worker.serve import PortInUse

    try:
        asyncio.run(serve_ingress(settings_from_env()))
    except PortInUse as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def nodes() -> None:
    """Every registered node type with its kind."""
    from worker.registry import default_registry

    for name, cls in default_registry().items():
        flags = [cls.kind.value] + (["ordered"] if cls.ordered else [])
        typer.echo(f"{name:40} {' '.join(flags)}")


@app.command()
def run(
    topology: str,
    user: Annotated[str, typer.Option(help="The install's user (key of every message).")],
    body: Annotated[str, typer.Option(help="JSON body for the start node.")] = "{}",
    application: Annotated[
        str | None,
        typer.Option(help="Whose install the user is (shoptet-premium, shoptet), for a topology naming none."),
    ] = None,
) -> None:
    """Start a process of a deployed topology by hand (its `manual` start)."""
    try:
        payload: Any = json.loads(body)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--body is not JSON: {exc}") from exc
    whose = _application_name(application)

    async def _run() -> None:
        from worker.control import control_client
        from worker.errors import OutputTooLarge
        from worker.starter import ApplicationNeeded, InstallMissing, TopologyNotRunnable, run_manual
        from worker.store import open_store

        settings = settings_from_env()
        store = await open_store(settings)
        try:
            async with control_client(settings) as control:
                installs = store.get_install  # a mistyped --user is refused, not sent to trash
                message = await run_manual(
                    control, topology, user=user, body=payload, application=whose, strict=True, installs=installs
                )
        except (TopologyNotRunnable, ApplicationNeeded, InstallMissing, OutputTooLarge) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
        finally:
            await store.close()
        typer.echo(json.dumps({"process-id": message.process_id, "correlation-id": message.correlation_id}))

    asyncio.run(_run())


def _application_name(value: str | None) -> str | None:
    """``premium`` and ``addon`` as ``install`` takes them, or the real names."""
    from applications.installs import application_name

    if value is None:
        return None
    try:
        return application_name(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def simulator(
    port: int = 8090,
    host: str = "127.0.0.1",
    orders: int = 1000,
    products: int = 200,
    eshops: int = 1,
    seed: int = 1,
    latency_ms: float = 0.0,
    fault_rate: float = 0.0,
) -> None:
    """Serve the Shoptet API simulator (demo, tests, benchmarks)."""
    from simulator.cli import run_simulator

    run_simulator(
        port=port,
        host=host,
        orders=orders,
        products=products,
        eshops=eshops,
        seed=seed,
        latency_ms=latency_ms,
        fault_rate=fault_rate,
    )


def main() -> None:
    from aiokafka.errors import KafkaConnectionError

    from worker.app import UnknownNodeType
    from worker.broker import BrokerStartFailed
    from worker.control import NoKafka
    from worker.errors import StoreOpenFailed, StoreUnavailable
    from worker.kafka import TopicsNotCreated
    from worker.store.crypto import SecretKeyError
    from worker.topology import TopologyError

    one_line = (
        NoKafka,
        SecretKeyError,
        TopologyError,
        UnknownNodeType,
        BrokerStartFailed,
        StoreOpenFailed,
        StoreUnavailable,
        TopicsNotCreated,
    )
    try:
        app()
    except ValidationError as exc:  # a setting from the environment: which one, and why
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        typer.echo(f"error: invalid setting: {problems}", err=True)
        raise SystemExit(2) from None
    except one_line as exc:
        # no Kafka, a SECRET_KEY that does not fit, a bad file in TOPOLOGY_DIR, a typo in NODES, an
        # embedded broker that would not start, a store that cannot be opened or stopped answering,
        # topics the cluster refused: one line each
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except KafkaConnectionError as exc:
        typer.echo(f"error: cannot reach Kafka ({exc}); is KAFKA_BOOTSTRAP_SERVERS right?", err=True)
        raise SystemExit(2) from None


__all__ = ["Path", "app", "main"]

# operator tooling (issue 8); imported here, after `app` exists, because status reads settings_from_env
from worker.cli.docs import docs_command  # noqa: E402
from worker.cli.status import status_command  # noqa: E402

app.command("status")(status_command)
app.command("docs")(docs_command)
