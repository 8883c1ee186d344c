"""``shoptet-worker secrets rotate``: re-encrypt every stored secret under a new ``SECRET_KEY``.

Mounted by the main CLI with ``app.add_typer(secrets_app, name="secrets")``. Giving ``NEW,OLD``
makes workers read both and write with NEW; secrets written once (premium tokens, OAuth tokens,
signature keys) stay under OLD until this command re-encrypts them, and only then can OLD go.
"""

from __future__ import annotations

import asyncio

import typer

from worker.settings import Settings
from worker.store import open_store
from worker.store.sql import SecretRotation, SqlInstallStore

secrets_app = typer.Typer(help="Stored secrets (encrypted at rest with SECRET_KEY).", no_args_is_help=True)


@secrets_app.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored secret with the first key of SECRET_KEY (run with NEW,OLD).

    Run it once every worker has NEW,OLD; afterwards SECRET_KEY=NEW alone reads everything.
    """

    async def main() -> SecretRotation:
        store = await open_store(Settings())
        try:
            assert isinstance(store, SqlInstallStore)
            return await store.rotate_secrets()
        finally:
            await store.close()

    done = asyncio.run(main())
    typer.echo(
        f"re-encrypted {done.secrets} install secret(s) and {done.tokens} cached token(s)"
        + (f"; deleted {done.dropped_tokens} cached token(s) no key decrypts" if done.dropped_tokens else "")
    )
    if done.unreadable:
        typer.echo("no key decrypts these install secrets (left as they are):", err=True)
        for name in done.unreadable:
            typer.echo(f"  {name}", err=True)
        raise typer.Exit(1)
