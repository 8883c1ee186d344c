"""``shoptet-worker install ...``: connect e-shops, list them, enable, disable or remove them.

Mounted by the main CLI with ``app.add_typer(install_app, name="install")``. Addon installs normally
arrive through the install callback (``GET /shoptet/install?code=...`` on the worker's HTTP app,
the URL registered with Shoptet as the addon's install URL); ``install add addon`` is for an e-shop
whose OAuth token was obtained elsewhere. Secrets are never printed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import httpx
import typer

from applications.installs import application_name, install_addon_with_token, install_premium
from applications.premium import InvalidPremiumToken, ShoptetNotReachable
from worker.envelope import H
from worker.settings import Settings, get_settings
from worker.store import Install, InstallStore, open_store

T = TypeVar("T")

install_app = typer.Typer(help="Manage e-shop installs (premium tokens and addon installs).", no_args_is_help=True)
add_app = typer.Typer(help="Connect an e-shop.", no_args_is_help=True)
install_app.add_typer(add_app, name="add")


def _run(work: Callable[[InstallStore, httpx.AsyncClient, Settings], Awaitable[T]]) -> T:
    """Open the store and an HTTP client, run ``work``, close both (typer commands are sync)."""
    settings = get_settings()

    async def main() -> T:
        store = await open_store(settings)
        try:
            async with httpx.AsyncClient(timeout=settings.shoptet_timeout_seconds) as http:
                return await work(store, http, settings)
        finally:
            await store.close()

    return asyncio.run(main())


def _start_installed(install: Install, settings: Settings) -> None:
    """Run the deployed topologies' ``installed`` starts for the install (e.g. webhooks-subscribe).

    The install is stored either way: without a reachable Kafka this says what to run later.
    """
    from aiokafka.errors import KafkaError

    from worker.control import NoKafka, control_client
    from worker.starter import start_installed, unread_installed_starts

    async def main() -> tuple[list[str], list[str]]:
        async with control_client(settings) as control:
            started = await start_installed(control, install)
            return [m.headers.get(H.TOPOLOGY_NAME, "") for m in started], unread_installed_starts(control, install)

    try:
        names, unloadable = asyncio.run(main())
    except (NoKafka, KafkaError, OSError) as exc:
        typer.echo(
            f"its `installed` starts did not run ({exc or type(exc).__name__}); once a worker runs: "
            f"shoptet-worker run webhooks-subscribe --user {install.user}",
            err=True,
        )
        return
    for name in names:
        typer.echo(f"started {name} for {install.user}")
    if unloadable:
        typer.echo(
            f"not read here, so their `installed` starts did not run: {', '.join(unloadable)}; put the "
            "modules they import on PYTHONPATH and run them by hand (`shoptet-worker run NAME --user "
            f"{install.user}`)",
            err=True,
        )


StartOption = Annotated[
    bool, typer.Option("--start/--no-start", help="Run the deployed topologies' `installed` starts for it.")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(code=1)


@add_app.command("premium")
def add_premium(
    user: Annotated[str, typer.Option(help="Name of the install (the message key).")],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="SHOPTET_PRIVATE_API_TOKEN",
            help="Premium private API token (default: SHOPTET_PRIVATE_API_TOKEN, from the environment or .env).",
            show_default=False,
        ),
    ] = None,
    api_url: Annotated[str | None, typer.Option(help="Shoptet API URL (default: SHOPTET_API_URL).")] = None,
    start: StartOption = True,
) -> None:
    """Verify a premium token against GET /api/eshop and store it with the e-shop's id."""
    configured = get_settings().shoptet_private_api_token
    # typer reads the process environment only; `make run` and the settings read .env as well
    token = token or (configured.get_secret_value() if configured is not None else None)
    if not token:
        raise typer.BadParameter("give --token, or SHOPTET_PRIVATE_API_TOKEN in the environment or .env")

    async def work(store: InstallStore, http: httpx.AsyncClient, settings: Settings) -> Install:
        assert token is not None
        return await install_premium(store, http, api_url=api_url or settings.shoptet_api_url, user=user, token=token)

    try:
        install = _run(work)
    except InvalidPremiumToken as exc:
        raise _fail(f"token refused by Shoptet: {exc}") from None
    except ShoptetNotReachable as exc:
        raise _fail(f"cannot check the token: {exc}") from None
    typer.echo(f"installed {install.user} (shoptet-premium, eshopId {install.eshop_id})")
    if start:
        _start_installed(install, get_settings())


@add_app.command("addon")
def add_addon(
    user: Annotated[str, typer.Option(help="Name of the install (the message key).")],
    eshop_id: Annotated[str, typer.Option(help="The e-shop's Shoptet id.")],
    oauth_token: Annotated[
        str,
        typer.Option(envvar="SHOPTET_OAUTH_TOKEN", help="The e-shop's permanent OAuth token.", show_default=False),
    ],
    eshop_url: Annotated[str | None, typer.Option(help="The e-shop's URL.")] = None,
    oauth_server_url: Annotated[
        str | None, typer.Option(help="OAuth server for this e-shop (default: SHOPTET_OAUTH_SERVER_URL).")
    ] = None,
    start: StartOption = True,
) -> None:
    """Store an addon install whose OAuth token you already have.

    Normally Shoptet installs the addon by calling the worker's GET /shoptet/install?code=...
    """

    async def work(store: InstallStore, http: httpx.AsyncClient, settings: Settings) -> Install:
        return await install_addon_with_token(
            store,
            user=user,
            eshop_id=eshop_id,
            oauth_token=oauth_token,
            eshop_url=eshop_url,
            oauth_server_url=oauth_server_url,
        )

    install = _run(work)
    typer.echo(f"installed {install.user} (shoptet, eshopId {install.eshop_id})")
    if start:
        _start_installed(install, get_settings())


@install_app.command("list")
def list_installs(
    application: Annotated[str | None, typer.Option("--application", "-a", help="premium or addon")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List installs with their plain settings; secrets show by name only."""
    name = _application(application) if application else None

    async def work(store: InstallStore, http: httpx.AsyncClient, settings: Settings) -> list[Install]:
        return await store.list_installs(name)

    for install in _run(work):
        # one the key cannot decrypt shows with a mark: the operator sees which install to fix
        secret_names = sorted([*install.secrets, *(f"{k}(undecryptable)" for k in install.unreadable_secrets)])
        row = {
            "user": install.user,
            "application": install.application,
            "eshopId": install.eshop_id,
            "enabled": install.enabled,
            "settings": install.settings,
            "secrets": secret_names,
        }
        if as_json:
            typer.echo(json.dumps(row, default=str))
        else:
            state = "enabled" if install.enabled else "disabled"
            typer.echo(
                f"{install.user}\t{install.application}\teshopId={install.eshop_id}\t{state}\t"
                f"settings={json.dumps(install.settings, default=str)}\tsecrets={','.join(secret_names)}"
            )


ApplicationOption = Annotated[
    str | None, typer.Option("--application", "-a", help="premium or addon; needed when the user has both.")
]


def _application(value: str) -> str:
    try:
        return application_name(value)
    except ValueError as exc:
        raise _fail(str(exc)) from None


async def _resolve(store: InstallStore, user: str, application: str | None) -> str | None:
    """The install's application: as given, or the user's only install's."""
    if application is not None:
        return application
    mine = [i.application for i in await store.list_installs() if i.user == user]
    if len(mine) > 1:
        raise _fail(f"{user} has installs of {', '.join(mine)}: choose one with --application")
    return mine[0] if mine else None


def _change(user: str, application: str | None, change: Callable[[InstallStore, str], Awaitable[bool]]) -> None:
    name = _application(application) if application else None

    async def work(store: InstallStore, http: httpx.AsyncClient, settings: Settings) -> str | None:
        resolved = await _resolve(store, user, name)
        if resolved is None or not await change(store, resolved):
            return None
        return resolved

    done = _run(work)
    if done is None:
        raise _fail(f"no install {user}" + (f" of {name}" if name else ""))
    typer.echo(f"{user} ({done}): ok")


@install_app.command("enable")
def enable(user: str, application: ApplicationOption = None) -> None:
    """Enable an install: cron starts and webhooks run for it again."""
    _change(user, application, lambda store, app: store.set_enabled(user, app, True))


@install_app.command("disable")
def disable(user: str, application: ApplicationOption = None) -> None:
    """Disable an install without forgetting it."""
    _change(user, application, lambda store, app: store.set_enabled(user, app, False))


@install_app.command("remove")
def remove(
    user: str,
    application: ApplicationOption = None,
    keep_webhooks: Annotated[
        bool, typer.Option(help="Remove it although webhooks it registered are still registered at Shoptet.")
    ] = False,
) -> None:
    """Remove an install with its settings, secrets, webhook registrations and cached tokens.

    Refused while it has webhooks registered at Shoptet: removed, Shoptet went on calling them, and
    ``webhooks-unsubscribe``, which needs the install, could no longer take them off."""

    async def remove_unless_registered(store: InstallStore, app: str) -> bool:
        registered = await store.list_webhooks(user, app)
        if registered and not keep_webhooks:
            how = f"shoptet-worker run webhooks-unsubscribe --user {user}"
            if app != "shoptet-premium":  # the shipped topology serves premium: an addon copy of it
                how = f"a copy of webhooks-unsubscribe with `application: {app}`, run for {user}"
            raise _fail(
                f"{user} has {len(registered)} webhook(s) registered at Shoptet: take them off first "
                f"({how}), or remove it with --keep-webhooks"
            )
        return await store.remove_install(user, app)

    _change(user, application, remove_unless_registered)


@install_app.command("renew-signature-key")
def renew_key(user: str, application: ApplicationOption = None) -> None:
    """Ask Shoptet for a new webhook signature key for the install's e-shop (the old one is still
    accepted for SIGNATURE_KEY_GRACE_SECONDS): for webhooks refused with 401, or a key to rotate."""
    from worker.app import build_limiter, configured_applications
    from worker.errors import NodeError, StoreUnavailable
    from worker.webhook_keys import SignatureKeyError, renew_signature_key

    name = _application(application) if application else None

    async def work(store: InstallStore, http: httpx.AsyncClient, settings: Settings) -> str:
        from applications.client import ShoptetClient

        resolved = await _resolve(store, user, name)
        install = await store.get_install(user, resolved) if resolved else None
        if install is None:
            raise _fail(f"no install {user}" + (f" of {name}" if name else ""))
        limiter = build_limiter(settings)  # the workers' one (Redis): the call takes one of the token's 3
        client = ShoptetClient(
            http=http,
            application=configured_applications(settings, store, http)[install.application],
            install=install,
            limiter=limiter,
            base_url=settings.shoptet_api_url,
        )
        try:
            await renew_signature_key(client, store, install)
        except StoreUnavailable as exc:  # Shoptet signs with the new key now: run it again soon
            raise _fail(f"Shoptet renewed the key, but the store did not take it ({exc}): run this again") from None
        except (NodeError, SignatureKeyError) as exc:
            raise _fail(f"Shoptet did not renew the key: {exc}") from None
        finally:
            close = getattr(limiter, "close", None)
            if close is not None:
                await close()
        return install.application

    done = _run(work)
    typer.echo(f"{user} ({done}): webhook signature key renewed")
