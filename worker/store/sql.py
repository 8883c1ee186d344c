"""The install store on SQL: a SQLite file by default, PostgreSQL when ``DATABASE_URL`` says so.

One implementation serves both engines through SQLAlchemy Core. Every write is one statement or one
short transaction that starts with a write, and per-key upserts (``INSERT ... ON CONFLICT``) do the
atomic work, so two workers never lose each other's updates and SQLite never has to upgrade a read
lock (the usual source of "database is locked").
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Table, and_, delete, event, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    NotSupportedError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from worker.errors import StoreOpenFailed, StoreUnavailable
from worker.store import schema as t
from worker.store.base import Install, TrashEntry, WebhookRegistration
from worker.store.crypto import SecretBox, SecretKeyError
from worker.store.keys import token_key_prefix
from worker.store.migrations import SQLITE_BEGIN_OPTION, migrate

log = structlog.get_logger("store")

#: Seconds a SQLite connection waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT = 30.0


def async_database_url(url: str) -> str:
    """Map the operator's URL (``sqlite:///...``, ``postgres://...``) to an async driver URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in ("postgresql", "postgres"):
        query = dict(parsed.query)
        if "sslmode" in query and "ssl" not in query:
            # libpq's name, in most managed databases' URLs; asyncpg takes the same values as `ssl`
            query["ssl"] = query.pop("sslmode")
        return parsed.set(drivername="postgresql+asyncpg", query=query).render_as_string(hide_password=False)
    raise ValueError(f"unsupported scheme {parsed.drivername!r}: use sqlite or postgresql")


def _now() -> float:
    return time.time()


class SqlInstallStore:
    """:class:`worker.store.base.InstallStore` on SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        dialect = engine.dialect.name
        self._insert: Callable[..., Any] = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def __repr__(self) -> str:
        return f"SqlInstallStore({self._engine.url.render_as_string(hide_password=True)!r})"

    @classmethod
    async def open(cls, database_url: str, box: SecretBox, *, schema: str | None = None) -> SqlInstallStore:
        """Connect, create or migrate the schema, and return the store.

        ``schema`` (PostgreSQL only) puts the tables in that schema, creating it: tests use a fresh
        one per run so that they never see another run's rows.
        """
        try:
            url = make_url(async_database_url(database_url))
        except (ValueError, ArgumentError) as exc:
            raise StoreOpenFailed(f"DATABASE_URL: {exc}") from None
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                try:
                    Path(url.database).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreOpenFailed(f"cannot open the install store {url.database}: {_first_line(exc)}") from None
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
        elif schema:
            kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
        engine = create_async_engine(url, **kwargs)
        try:
            if url.get_backend_name() == "sqlite":
                _sqlite_transactions(engine)
            elif schema:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await migrate(engine)
        except (OSError, SQLAlchemyError) as exc:
            await engine.dispose()
            where = url.render_as_string(hide_password=True)
            raise StoreOpenFailed(f"cannot open the install store {where}: {_first_line(exc)}") from exc
        return cls(engine, box)

    async def close(self) -> None:
        await self._engine.dispose()

    def _tx(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction; a database that does not answer raises :class:`StoreUnavailable`."""
        return _answering(self._engine.begin())

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A connection for reads; a database that does not answer raises :class:`StoreUnavailable`."""
        return _answering(self._engine.connect())

    # installs ---------------------------------------------------------------------------------
    async def add_install(self, install: Install, *, managed: Collection[str] = ()) -> None:
        key = {"user": install.user, "application": install.application}
        rows = [{**key, "key": k, "encrypted": False, "value": json.dumps(v)} for k, v in install.settings.items()] + [
            {**key, "key": k, "encrypted": True, "value": self._box.encrypt(v)} for k, v in install.secrets.items()
        ]
        row = {**key, "enabled": install.enabled, "eshop_id": install.eshop_id, "created_at": _now()}
        head = self._insert(t.installs).values(row)
        head = head.on_conflict_do_update(
            index_elements=["user", "application"],
            # created_at: when it was installed last (see ``Install.installed_at``)
            set_={"enabled": head.excluded.enabled, "eshop_id": head.excluded.eshop_id, "created_at": _now()},
        )
        async with self._tx() as conn:
            # a no-op write that returns the e-shop before: it takes the write lock first (see above)
            before = await conn.scalar(
                update(t.installs)
                .where(*self._install_where(t.installs, **key))
                .values(eshop_id=t.installs.c.eshop_id)
                .returning(t.installs.c.eshop_id)
            )
            await conn.execute(head)
            settings = self._install_where(t.install_settings, **key)
            if before is None or before != install.eshop_id:  # new, or another e-shop: nothing carries over
                await conn.execute(delete(t.install_settings).where(*settings))
            elif managed:  # the install command's own keys: what it did not give this time goes
                await conn.execute(delete(t.install_settings).where(*settings, t.install_settings.c.key.in_(managed)))
            if rows:
                stmt = self._insert(t.install_settings).values(rows)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["user", "application", "encrypted", "key"], set_={"value": stmt.excluded.value}
                )
                await conn.execute(stmt)

    async def get_install(self, user: str, application: str) -> Install | None:
        found = await self._load(and_(t.installs.c.user == user, t.installs.c.application == application))
        return found[0] if found else None

    async def find_by_eshop(self, eshop_id: str, application: str) -> Install | None:
        found = await self.installs_of_eshop(eshop_id, application)
        return found[0] if found else None

    async def installs_of_eshop(self, eshop_id: str, application: str) -> list[Install]:
        found = await self._load(and_(t.installs.c.eshop_id == str(eshop_id), t.installs.c.application == application))
        return sorted(found, key=lambda install: not install.enabled)  # stable: by user within each

    async def list_installs(self, application: str | None = None, *, enabled_only: bool = False) -> list[Install]:
        conditions = []
        if application is not None:
            conditions.append(t.installs.c.application == application)
        if enabled_only:
            conditions.append(t.installs.c.enabled.is_(True))
        return await self._load(and_(literal(True), *conditions))

    async def set_setting(self, user: str, application: str, key: str, value: Any) -> None:
        await self._upsert_setting(user, application, key, json.dumps(value), encrypted=False)

    async def set_secret(self, user: str, application: str, key: str, value: str) -> None:
        await self._upsert_setting(user, application, key, self._box.encrypt(value), encrypted=True)

    async def set_enabled(self, user: str, application: str, enabled: bool) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                update(t.installs)
                .where(*self._install_where(t.installs, user=user, application=application))
                .values(enabled=enabled)
            )
        return result.rowcount > 0

    async def remove_install(self, user: str, application: str) -> bool:
        prefix = token_key_prefix(user, application)
        async with self._tx() as conn:
            result = await conn.execute(
                delete(t.installs).where(*self._install_where(t.installs, user=user, application=application))
            )
            for table in (t.install_settings, t.webhooks):
                await conn.execute(delete(table).where(*self._install_where(table, user=user, application=application)))
            await conn.execute(delete(t.token_cache).where(func.substr(t.token_cache.c.key, 1, len(prefix)) == prefix))
        return result.rowcount > 0

    # webhooks ---------------------------------------------------------------------------------
    async def add_webhook(self, registration: WebhookRegistration) -> None:
        stmt = self._insert(t.webhooks).values(registration.model_dump())
        stmt = stmt.on_conflict_do_update(
            index_elements=["user", "application", "webhook_id"],
            set_={"event": stmt.excluded.event, "url": stmt.excluded.url, "topology": stmt.excluded.topology},
        )
        async with self._tx() as conn:
            await conn.execute(stmt)

    async def list_webhooks(self, user: str, application: str) -> list[WebhookRegistration]:
        async with self._read() as conn:
            result = await conn.execute(
                select(t.webhooks)
                .where(*self._install_where(t.webhooks, user=user, application=application))
                .order_by(t.webhooks.c.webhook_id)
            )
            return [WebhookRegistration.model_validate(dict(row)) for row in result.mappings()]

    async def remove_webhook(self, user: str, application: str, webhook_id: int) -> None:
        async with self._tx() as conn:
            await conn.execute(
                delete(t.webhooks).where(
                    *self._install_where(t.webhooks, user=user, application=application),
                    t.webhooks.c.webhook_id == webhook_id,
                )
            )

    # token cache --------------------------------------------------------------------------------
    async def get_token(self, key: str) -> tuple[str, datetime] | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.token_cache).where(t.token_cache.c.key == key))).first()
        if row is None:
            return None
        try:
            token = self._box.decrypt(row.token)
        except SecretKeyError:
            # written by a worker whose SECRET_KEY this one does not hold yet (a rotation rolling
            # out): only a cache, so fetched anew rather than failing the install's messages
            log.warning("cached token cannot be decrypted; fetching a new one", key=key)
            return None
        return token, datetime.fromtimestamp(row.expires_at, UTC)

    async def put_token(self, key: str, token: str, expires_at: datetime) -> None:
        stmt = self._insert(t.token_cache).values(
            key=key, token=self._box.encrypt(token), expires_at=expires_at.timestamp()
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"token": stmt.excluded.token, "expires_at": stmt.excluded.expires_at},
        )
        async with self._tx() as conn:
            await conn.execute(stmt)

    async def delete_token(self, key: str, token: str | None = None) -> None:
        if token is None:
            async with self._tx() as conn:
                await conn.execute(delete(t.token_cache).where(t.token_cache.c.key == key))
            return
        # Ciphertexts differ for the same token (random IV), so "is it still that one" is decided on
        # the decrypted value; the delete then matches the exact ciphertext that was read, so a token
        # written meanwhile by another worker is never dropped. (No read inside the write
        # transaction: SQLite would have to upgrade its lock, which can fail under contention.)
        async with self._read() as conn:
            row = (await conn.execute(select(t.token_cache.c.token).where(t.token_cache.c.key == key))).first()
        if row is None or self._decrypts_to(row.token) != token:
            return
        async with self._tx() as conn:
            await conn.execute(
                delete(t.token_cache).where(t.token_cache.c.key == key, t.token_cache.c.token == row.token)
            )

    # leases -----------------------------------------------------------------------------------
    async def acquire_lease(self, name: str, owner: str, ttl_seconds: float) -> bool:
        now = _now()
        stmt = self._insert(t.leases).values(name=name, owner=owner, expires_at=now + ttl_seconds)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
            where=or_(t.leases.c.owner == stmt.excluded.owner, t.leases.c.expires_at < now),
        ).returning(t.leases.c.owner)
        async with self._tx() as conn:
            taken = (await conn.execute(stmt)).first()
        return taken is not None

    async def release_lease(self, name: str, owner: str) -> None:
        async with self._tx() as conn:
            await conn.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.owner == owner))

    async def hand_over_lease(self, name: str, owner: str, new_owner: str, ttl_seconds: float) -> bool:
        now = _now()
        stmt = (
            update(t.leases)
            .where(t.leases.c.name == name, t.leases.c.owner == owner, t.leases.c.expires_at >= now)
            .values(owner=new_owner, expires_at=now + ttl_seconds)
        )
        async with self._tx() as conn:
            result = await conn.execute(stmt)
        return bool(result.rowcount)

    async def lease_holder(self, name: str) -> str | None:
        stmt = select(t.leases.c.owner).where(t.leases.c.name == name, t.leases.c.expires_at >= _now())
        async with self._read() as conn:
            return (await conn.execute(stmt)).scalar_one_or_none()

    async def purge_expired_leases(self) -> int:
        async with self._tx() as conn:
            result = await conn.execute(delete(t.leases).where(t.leases.c.expires_at < _now()))
        return int(result.rowcount or 0)

    # trash --------------------------------------------------------------------------------------
    async def add_trash(self, entry: TrashEntry) -> int:
        row = entry.model_dump(exclude={"id"})
        row["error_body"] = None if entry.error_body is None else json.dumps(entry.error_body, default=str)
        row["body"] = None if entry.body is None else json.dumps(entry.body, default=str)
        row["headers"] = json.dumps(entry.headers)
        row["created_at"] = (entry.created_at.timestamp()) if entry.created_at else _now()
        _fit(t.trash, row)
        async with self._tx() as conn:
            result = await conn.execute(t.trash.insert().values(row).returning(t.trash.c.id))
            return int(result.scalar_one())

    async def list_trash(
        self,
        limit: int = 100,
        *,
        after_id: int | None = None,
        user: str | None = None,
        node_name: str | None = None,
        topology_name: str | None = None,
    ) -> list[TrashEntry]:
        columns = t.trash.c
        query = select(t.trash).order_by(columns.id).limit(limit)
        if after_id is not None:
            query = query.where(columns.id > after_id)
        filters = ((columns.user, user), (columns.node_name, node_name), (columns.topology_name, topology_name))
        for column, value in filters:
            if value is not None:
                query = query.where(column == value)
        async with self._read() as conn:
            result = await conn.execute(query)
            return [_trash_entry(dict(row)) for row in result.mappings()]

    async def get_trash(self, entry_id: int) -> TrashEntry | None:
        async with self._read() as conn:
            row = (await conn.execute(select(t.trash).where(t.trash.c.id == entry_id))).mappings().first()
        return _trash_entry(dict(row)) if row else None

    async def remove_trash(self, entry_id: int) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(delete(t.trash).where(t.trash.c.id == entry_id))
        return result.rowcount > 0

    async def count_trash(self) -> int:
        async with self._read() as conn:
            return int((await conn.execute(select(func.count()).select_from(t.trash))).scalar_one())

    # helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _install_where(table: Any, *, user: str, application: str) -> tuple[Any, Any]:
        return table.c.user == user, table.c.application == application

    async def _upsert_setting(self, user: str, application: str, key: str, value: str, *, encrypted: bool) -> None:
        """One row per key: an upsert of this row cannot touch, nor be lost to, any other key."""
        stmt = self._insert(t.install_settings).values(
            user=user, application=application, key=key, encrypted=encrypted, value=value
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["user", "application", "encrypted", "key"], set_={"value": stmt.excluded.value}
        )
        async with self._tx() as conn:
            await conn.execute(stmt)

    async def _load(self, condition: Any) -> list[Install]:
        s = t.install_settings
        async with self._read() as conn:
            heads = (await conn.execute(select(t.installs).where(condition).order_by(t.installs.c.user))).all()
            if not heads:
                return []
            settings = await conn.execute(
                select(s)
                .join(
                    t.installs,
                    and_(s.c.user == t.installs.c.user, s.c.application == t.installs.c.application),
                )
                .where(condition)
            )
            by_install: dict[tuple[str, str], list[Any]] = {}
            for row in settings:
                by_install.setdefault((row.user, row.application), []).append(row)
        installs = []
        for head in heads:
            plain: dict[str, Any] = {}
            secrets: dict[str, str] = {}
            unreadable: list[str] = []
            for row in by_install.get((head.user, head.application), []):
                if not row.encrypted:
                    plain[row.key] = json.loads(row.value)
                    continue
                try:
                    secrets[row.key] = self._box.decrypt(row.value)
                except SecretKeyError:
                    unreadable.append(row.key)
                    log.error(
                        "install secret cannot be decrypted",
                        user=head.user,
                        application=head.application,
                        key=row.key,
                    )
            installs.append(
                Install(
                    user=head.user,
                    application=head.application,
                    enabled=head.enabled,
                    eshop_id=head.eshop_id,
                    installed_at=datetime.fromtimestamp(head.created_at, UTC),
                    settings=plain,
                    secrets=secrets,
                    unreadable_secrets=unreadable,
                )
            )
        return installs

    def _decrypts_to(self, ciphertext: str) -> str | None:
        try:
            return self._box.decrypt(ciphertext)
        except SecretKeyError:
            return None

    async def rotate_secrets(self) -> SecretRotation:
        """Encrypt every stored secret under the first key of ``SECRET_KEY`` (``NEW,OLD``), so that
        OLD can then be dropped. Each row is replaced only if it still holds what was read: a secret
        written meanwhile (by a worker already on NEW) is left as it is. A cached token no key
        decrypts is deleted (it is fetched again); an install secret no key decrypts is counted and
        left for an operator (``install list`` marks it)."""
        done = SecretRotation()
        s, c = t.install_settings, t.token_cache
        async with self._read() as conn:
            secrets = (await conn.execute(select(s).where(s.c.encrypted.is_(True)))).all()
            tokens = (await conn.execute(select(c.c.key, c.c.token))).all()
        for row in secrets:
            try:
                rotated = self._box.rotate(row.value)
            except SecretKeyError:
                done.unreadable.append(f"{row.user}/{row.application}: {row.key}")
                continue
            where = and_(
                s.c.user == row.user,
                s.c.application == row.application,
                s.c.encrypted.is_(True),
                s.c.key == row.key,
                s.c.value == row.value,
            )
            async with self._tx() as conn:
                await conn.execute(update(s).where(where).values(value=rotated))
            done.secrets += 1
        for row in tokens:
            async with self._tx() as conn:
                where = and_(c.c.key == row.key, c.c.token == row.token)
                try:
                    await conn.execute(update(c).where(where).values(token=self._box.rotate(row.token)))
                    done.tokens += 1
                except SecretKeyError:
                    await conn.execute(delete(c).where(where))
                    done.dropped_tokens += 1
        return done

    async def check_secret_key(self) -> None:
        """Refuse a ``SECRET_KEY`` that decrypts none of the stored secrets (a wrong or lost key).

        Without this, a worker started with the wrong key ran and failed every install's work, one
        trash entry at a time. A few rows that fail among others that work are left to their
        installs (see ``Install.unreadable_secrets``). Every row is tried until one decrypts: a
        sample of 20 that happened to hold only an old install's rows refused a right key.
        """
        async with self._read() as conn:
            rows = await conn.execute(
                select(t.install_settings.c.value).where(t.install_settings.c.encrypted.is_(True))
            )
            values = [row.value for row in rows]
        if not values:
            return
        for value in values:
            try:
                self._box.decrypt(value)
            except SecretKeyError:
                continue
            return
        raise SecretKeyError(
            f"SECRET_KEY decrypts none of the {len(values)} stored secrets: "
            "is it the key they were stored with? (to rotate keys, give the new and the old: NEW,OLD)"
        )


@dataclass
class SecretRotation:
    """What :meth:`SqlInstallStore.rotate_secrets` did."""

    secrets: int = 0
    tokens: int = 0
    dropped_tokens: int = 0
    #: ``user/application: key`` of install secrets none of the keys decrypts.
    unreadable: list[str] = field(default_factory=list)


def _trash_entry(row: dict[str, Any]) -> TrashEntry:
    for name in ("error_body", "body"):
        row[name] = None if row[name] is None else json.loads(row[name])
    row["headers"] = json.loads(row["headers"]) if row["headers"] else {}
    row["created_at"] = datetime.fromtimestamp(row["created_at"], UTC)
    return TrashEntry.model_validate(row)


def _sqlite_transactions(engine: AsyncEngine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, issue BEGIN, so DDL is transactional too.

    WAL lets readers run while one process writes; the busy timeout makes writers of several
    processes queue instead of failing.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN"))


#: What the database says of a statement it refuses, every time it is sent.
REFUSED = (IntegrityError, DataError, ProgrammingError, NotSupportedError)
#: SQLSTATE classes of a refused statement: data exception, integrity constraint, syntax or access.
#: asyncpg's refusals reach SQLAlchemy as a plain DBAPIError (a value too long for its column too),
#: which read as an outage: a webhook got 500 on every delivery, a message retried to its last hop.
REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "42"})


def _refused(exc: DBAPIError) -> bool:
    if isinstance(exc, REFUSED):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate[:2] in REFUSED_SQLSTATE_CLASSES


@asynccontextmanager
async def _answering(opened: AbstractAsyncContextManager[AsyncConnection]) -> AsyncIterator[AsyncConnection]:
    try:
        async with opened as conn:
            yield conn
    except Exception as exc:
        _raise_unavailable(exc)
        raise


def _raise_unavailable(exc: Exception) -> None:
    """Raise :class:`StoreUnavailable` for a database that did not answer: connection refused or
    dropped (asyncpg reports a terminated session in several ways), a pool timeout, a locked
    SQLite file; all worth another try, unlike a statement the database refuses (``REFUSED``).
    Only the error's first line is kept: the rest is the statement and its parameters."""
    if isinstance(exc, OSError | SQLAlchemyTimeoutError) or (isinstance(exc, DBAPIError) and not _refused(exc)):
        raise StoreUnavailable(f"install store unavailable: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """The error's class and its first line: the rest is a statement and its parameters."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"


def _fit(table: Table, row: dict[str, Any]) -> None:
    """Cut text to its column's length, and replace NUL characters. PostgreSQL refuses both (SQLite
    does not check), and a trash row the database refuses would keep its message in flight, failing
    for good: a key or ``user`` header over 255 characters, or a value with a NUL byte, arrives from
    any system that writes to an inbound topic. The headers, kept whole as JSON (where NUL is
    escaped), still say everything for a replay."""
    for column in table.columns:
        length = getattr(column.type, "length", None)
        value = row.get(column.name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            value = row[column.name] = value.replace("\x00", "\ufffd")
        if length and len(value) > length:
            row[column.name] = value[:length]
