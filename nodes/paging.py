"""Shared paging of Shoptet list endpoints (Orchesty's AShoptetList), with our fixes.

A run lists every page of one endpoint from a start time T and emits every item as its own message:

1. T = cursor ``dateFrom``, else input ``from``, else the stored last-run setting minus 60 s, else
   the node's default. T is frozen for the whole run: it travels in the cursor between hops, and a
   later hop keeps it even when it is "none" (a first run listing everything).
2. Page 1 (or the cursor's page) tells ``paginator.pageCount``; the remaining pages are fetched in
   parallel, at most ``page_concurrency`` at a time (default 3 = a token's connection budget; the
   client's limiter enforces the per-token cap anyway), and never ``page_concurrency`` pages or
   more past the lowest page whose items did not all go out. Items are emitted as pages arrive. A
   page that reports more pages than page 1 did (the list grew while it was paged) extends the run
   to them: an item edited meanwhile moved to the end, and only there is it seen twice (see 5.).
3. With option ``max_pages_per_hop`` a run stops after that many pages and answers
   BATCH_CURSOR_WITH_ITEMS with ``{page, dateFrom, startedAt}`` to go on in another hop. A hop
   whose page fails says the same in its error's ``resume``: its retry (or a replay from trash)
   goes on from the lowest page whose items did not all go out, not from the hop's first page.
   Thanks to the bound in 2., that sends again at most ``page_concurrency - 1`` pages fetched past
   it (a slow page failing after its 30 s timeout once made the retry send most of the run again).
4. Only after the final page succeeded is the last-run setting written, atomically, and to the time
   the run *started*: anything changed while we paged is listed again next time, nothing is skipped.
   A failure or an empty first page leaves the watermark alone, and so does a run whose input
   ``from`` is later than the stored watermark minus 60 s: moved, the watermark would pass the
   changes in between, which no run listed (with none stored, the run is the first and sets it).
5. Shoptet warns that items shift between pages when the list changes while it is paged, so some
   are missed (an edited order moves to the end of the change feed; the orders behind it move up a
   slot, and one of them into a page already read). A page number cannot say so; an item seen twice
   in one run, or a ``totalCount`` that fell, can (for a list, only below a page answered before
   it was asked for: pages answered out of order are no shift there). Then a
   list leaves the watermark where it was, and the next run lists from the same start again
   (at-least-once: downstream sees some items twice). A change feed, oldest change first, moves it
   to the last change on its first page: an item the run missed was behind that one when page 1
   was read, or changed after, so the next run still lists it; on a busy shop, left alone, the
   watermark never moved again and every run listed the whole window. Seen items are remembered
   within one hop only; a later hop of the run (the next one, or a retry) gets from its cursor the
   most items a page of the run counted (``totalCount``), so a count that fell since an earlier
   hop is a shift too. Not noticed: a change feed's item edited after an earlier hop read its page
   (it moves to the end, which a later hop reads without knowing it was seen). Counting every
   change made during the run as a shift instead held the watermark at page 1's last change on
   every run of several hops on a live shop, and each run listed its whole backlog again. Nor an
   order deleted from ``/api/orders`` while another is created: the count and the pages stay as
   they were, and nothing is seen twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from nodes import shoptet
from nodes.options import PagingOptions
from worker.envelope import Message, ResultCode
from worker.errors import NodeError, StopError
from worker.node import Batch, Emit, NodeContext, Result

if TYPE_CHECKING:
    from applications.client import ShoptetClient
    from worker.store import Install

DEFAULT_PAGE_CONCURRENCY = 3


class ListInput(BaseModel):
    """Input of a list batch: an optional explicit start time (``{"from": "..."}``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    from_: str | None = Field(default=None, alias="from")


class ListCursor(BaseModel):
    """Orchesty's cursor ``{page, dateFrom}``; ``startedAt`` (ours) carries the run's watermark."""

    model_config = ConfigDict(extra="ignore")
    page: int = Field(default=1, ge=1)
    dateFrom: str | None = None
    startedAt: str | None = None
    #: (ours) an earlier hop of this run saw the list shift: the run moves the watermark no further
    #: than ``shiftedUpTo`` (a list without one: not at all).
    shifted: bool = False
    #: (ours) a change feed's last change on page 1: as far as a shifted run moves the watermark.
    shiftedUpTo: str | None = None
    #: (ours) the most items a page of this run counted so far: a later hop's page counting fewer
    #: saw the list lose items after an earlier hop read it (see 5. above).
    totalCount: int | None = Field(default=None, ge=0)


#: Cursor fields written only when set: Orchesty's ``{page, dateFrom}`` and ``startedAt`` always go.
_CURSOR_WHEN_SET = ("shifted", "shiftedUpTo", "totalCount")


class _Listing:
    """What one run has seen, to tell whether the list shifted while it was paged (see 5. above)."""

    def __init__(
        self,
        item_id: str,
        *,
        any_fall_shifts: bool = False,
        total: int | None = None,
    ) -> None:
        self.item_id = item_id
        #: A change feed: any page counting fewer items than one seen before is a shift. Its oldest
        #: entries expire as new ones come, so a count can fall below a page asked for later; and
        #: a false alarm costs it little (the watermark still moves, to page 1's last change).
        self.any_fall_shifts = any_fall_shifts
        self.seen: set[str] = set()
        #: The most items a page counted, in this hop or (from the cursor) in an earlier one.
        self.total = total
        #: The most pages any page of this hop reported: a list that grew has more than page 1 said.
        self.page_count = 1
        self.shifted = False

    def page(self, data: dict[str, Any], items: list[Any], pages: int, floor: int | None = None) -> None:
        """Count one page in; ``floor``: the highest ``totalCount`` answered before it was asked for.

        Only that floor can tell a list that lost items: pages are asked for three at a time and
        answered in any order, and one answered late may well count fewer items than one asked for
        after it (a growing list shifts nothing), which read as a shift on every busy run."""
        self.page_count = max(self.page_count, pages)
        self._count(data, floor)
        self._see(items)

    def _count(self, data: dict[str, Any], floor: int | None) -> None:
        total = (data.get("paginator") or {}).get("totalCount")
        if not isinstance(total, int):
            return
        reference = self.total if self.any_fall_shifts else floor
        if reference is not None and total < reference:
            self.shifted = True
        self.total = total if self.total is None else max(self.total, total)

    def _see(self, items: list[Any]) -> None:
        for item in items:
            value = item.get(self.item_id) if isinstance(item, dict) else None
            if value is None:
                continue
            key = str(value)
            if key in self.seen:
                self.shifted = True
            self.seen.add(key)


class _Pages:
    """The pages after ``first`` still to fetch in this hop: up to the most pages any page reported
    so far, no further than ``limit`` (``max_pages_per_hop``), and fewer than ``ahead`` pages past
    the lowest page whose items did not all go out.

    That bound is where a failed hop goes on: unbounded, the other workers went on while one slow
    page waited out its timeout, and its retry emitted nearly the whole run a second time.

    Not exhausted for good: a worker that found no page left stops, and the others still ask after
    each page, so pages a grown list reports late are fetched by whoever is still running.
    """

    def __init__(self, first: int, listing: _Listing, limit: int | None, ahead: int = DEFAULT_PAGE_CONCURRENCY) -> None:
        self.listing = listing
        self.limit = limit
        #: The most pages handed out from the lowest not emitted on (one per page worker).
        self.ahead = max(1, ahead)
        #: The highest page handed out (the first page was fetched before).
        self.last = first
        #: The lowest page whose items did not all go out (the first page's did).
        self._low = first + 1
        #: Pages above ``_low`` whose items all went out.
        self._emitted: set[int] = set()
        self._moved = asyncio.Condition()

    def first_not_emitted(self) -> int:
        """Where a failed hop goes on: the lowest page handed out whose items did not all go."""
        return self._low

    def _end(self) -> int:
        count = self.listing.page_count
        return count if self.limit is None else min(count, self.limit)

    def done(self) -> bool:
        return self.last >= self._end()

    def _has_room(self) -> bool:
        return self.last + 1 < self._low + self.ahead

    async def take(self) -> int | None:
        """The next page to fetch, once it is within ``ahead`` of the lowest page not emitted
        (None: no page left for now)."""
        async with self._moved:
            await self._moved.wait_for(lambda: self.done() or self._has_room())
            if self.done():
                return None
            self.last += 1
            return self.last

    async def emitted(self, page: int) -> None:
        """A page whose items all went out: the lowest one moves on, and workers waiting for room
        ask again."""
        async with self._moved:
            self._emitted.add(page)
            while self._low in self._emitted:
                self._emitted.remove(self._low)
                self._low += 1
            self._moved.notify_all()


@dataclass(slots=True)
class _Run:
    """What a hop knows of its run, and the cursor that carries it to the next hop or a retry."""

    cursor: ListCursor
    date_from: str | None
    started_at: str
    listing: _Listing
    #: A change feed's last change on the run's page 1 (see 5. above).
    shifted_up_to: str | None = None

    @property
    def shifted(self) -> bool:
        """Whether this hop, or an earlier one of the run, saw the list shift."""
        return self.cursor.shifted or self.listing.shifted

    def cursor_at(self, page: int) -> dict[str, Any]:
        """The cursor that goes on from ``page`` (the next hop's, or a failed hop's ``resume``)."""
        at = ListCursor(
            page=page,
            dateFrom=self.date_from,
            startedAt=self.started_at,
            shifted=self.shifted,
            shiftedUpTo=self.shifted_up_to,
            totalCount=self.listing.total,
        )
        return at.model_dump(exclude={k for k in _CURSOR_WHEN_SET if not getattr(at, k)})


class ListBatch(Batch):
    """Base of the four list batches; subclasses only describe their endpoint."""

    Options = PagingOptions

    path: ClassVar[str]
    #: Key of the item list inside ``data`` (``changes``, ``orders``, ``products``).
    items_key: ClassVar[str]
    #: Query parameter that takes T (``from`` for change feeds, ``creationTimeFrom`` for lists).
    from_param: ClassVar[str]
    last_run_key: ClassVar[str]
    #: Shoptet clamps page sizes per endpoint; asking for more only hides the real page count.
    items_per_page: ClassVar[int]
    #: The field that names an item (``code`` of an order, ``guid`` of a product): one seen twice in a
    #: run means the list shifted under the paging.
    item_id: ClassVar[str]
    #: Result message for an empty first page (answered with DO_NOT_CONTINUE).
    empty_message: ClassVar[str] = "Nothing to list."
    #: The item field that orders the list, oldest first (a change feed's ``changeTime``): a run
    #: that saw the list shift still moves the watermark to page 1's last value (see 5. above).
    ordered_by: ClassVar[str | None] = None

    def default_from(self, now: datetime) -> str | None:
        """T when there is no cursor, no input and no stored watermark (None: list everything)."""
        return None

    async def process(self, message: Message, ctx: NodeContext, emit: Emit) -> Result:
        install = ctx.require_install()
        body = shoptet.parse_body(ListInput, message.body, self.name)
        cursor = self._cursor(message)
        now = shoptet.utcnow()
        started_at = cursor.startedAt or shoptet.format_time(now)
        run = _Run(cursor, self._date_from(cursor, body, install, now), started_at, self._listing(cursor))
        first_page = cursor.page
        first = await self._fetch(ctx, first_page, run.date_from)
        items = self._items(first)
        if first_page == 1 and not items:
            return Result(code=ResultCode.DO_NOT_CONTINUE, message=self.empty_message)
        run.listing.page(first, items, self._page_count(first), run.listing.total)
        run.shifted_up_to = self._last_of(items) if first_page == 1 else cursor.shiftedUpTo
        emitting = asyncio.Lock()
        await self._emit_all(emit, items, emitting)

        concurrency = int(ctx.options.get("page_concurrency") or DEFAULT_PAGE_CONCURRENCY)
        pages = _Pages(first_page, run.listing, self._hop_limit(ctx, first_page), concurrency)
        try:
            await self._fetch_rest(ctx, emit, pages, run.date_from, emitting)
        except NodeError as exc:
            # a retry (or a replay from trash) goes on from the first page not emitted: started
            # over, a 429 on page 17 of 20 sent 16 pages of items again, each a detail call more
            exc.resume = exc.resume or run.cursor_at(pages.first_not_emitted())
            raise
        last_page, page_count = pages.last, run.listing.page_count
        if last_page < page_count:
            return Result(
                code=ResultCode.BATCH_CURSOR_WITH_ITEMS,
                cursor=run.cursor_at(last_page + 1),
                message=f"pages {first_page}-{last_page} of {page_count}",
            )
        return await self._end_run(ctx, run, body, page_count)

    def _date_from(self, cursor: ListCursor, body: ListInput, install: Install, now: datetime) -> str | None:
        """The run's start time T (see 1. above)."""
        if cursor.startedAt is not None:
            # a later hop of the run: T as its first hop froze it, "none" included (a first run
            # that lists everything); read again, a watermark stored meanwhile filtered the rest
            return cursor.dateFrom
        explicit = shoptet.normalize_time(body.from_) if body.from_ else None
        return (
            cursor.dateFrom or explicit or shoptet.watermark_start(install, self.last_run_key) or self.default_from(now)
        )

    def _listing(self, cursor: ListCursor) -> _Listing:
        """The hop's shift detector, given the most items a page of the run counted before (see 5.)."""
        return _Listing(self.item_id, any_fall_shifts=self.ordered_by is not None, total=cursor.totalCount)

    @staticmethod
    def _hop_limit(ctx: NodeContext, first_page: int) -> int | None:
        """The last page this hop may fetch (``max_pages_per_hop``; None: every page)."""
        max_pages = ctx.options.get("max_pages_per_hop")
        return first_page + max_pages - 1 if isinstance(max_pages, int) and max_pages > 0 else None

    async def _end_run(self, ctx: NodeContext, run: _Run, body: ListInput, page_count: int) -> Result:
        """After the run's final page: move the watermark as far as what was listed allows."""
        install = ctx.require_install()
        listed = f"listed {page_count} page(s) from {run.date_from or 'the beginning'}"
        if self._skips_a_gap(install, body, run.date_from):
            ctx.log.warning("input `from` is later than the watermark; watermark left as it was", path=self.path)
            return Result(message=f"{listed}; `from` is later than the last run, so the watermark stays where it was")
        watermark = run.started_at
        if run.shifted:
            moved_to = self._shifted_watermark(install, run.shifted_up_to)
            if moved_to is None:
                ctx.log.warning("list shifted while paging; watermark left as it was", path=self.path)
                return Result(
                    message=f"{listed}; the list shifted while paging, so the next run lists from there again"
                )
            ctx.log.warning("list shifted while paging; watermark moved to page 1's last change", path=self.path)
            watermark, listed = moved_to, f"{listed}; the list shifted while paging: watermark moved to {moved_to}"
        # the next run lists from here: only once the broker has every item listed up to here
        await ctx.delivered()
        await shoptet.save_watermark(ctx, self.last_run_key, watermark)
        return Result(message=listed)

    def _skips_a_gap(self, install: Install, body: ListInput, date_from: str | None) -> bool:
        """Whether the input's ``from`` started the run later than the stored watermark (read back
        60 s early): moved to this run's start, the watermark would pass the changes in between,
        which no run listed. Asked after the final page, against the watermark stored by then."""
        stored = shoptet.watermark_start(install, self.last_run_key)
        if not body.from_ or date_from is None or stored is None:
            return False  # nothing stored: the run is the first, from wherever it was asked to start
        return shoptet.parse_time(date_from) > shoptet.parse_time(stored)

    def _last_of(self, items: list[Any]) -> str | None:
        """The ordering field of the page's last item (None for a list not ordered by one)."""
        if self.ordered_by is None or not items or not isinstance(items[-1], dict):
            return None
        value = items[-1].get(self.ordered_by)
        if not isinstance(value, str) or not value:
            return None
        try:
            return shoptet.normalize_time(value)
        except StopError:  # not a date: the run goes on, and a shift leaves the watermark alone
            return None

    def _shifted_watermark(self, install: Install, shifted_up_to: str | None) -> str | None:
        """Where a run that saw its list shift may move the watermark: page 1's last change, if
        that is ahead of the stored one (None: leave it)."""
        if shifted_up_to is None:
            return None
        stored = install.settings.get(self.last_run_key)
        if stored and shoptet.parse_time(str(stored)) >= shoptet.parse_time(shifted_up_to):
            return None
        return shifted_up_to

    # -- helpers ------------------------------------------------------------------------------

    def _cursor(self, message: Message) -> ListCursor:
        return shoptet.parse_cursor(ListCursor, message, self.name)

    def _params(self, page: int, date_from: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"itemsPerPage": self.items_per_page, "page": page}
        if date_from:
            params[self.from_param] = date_from
        return params

    async def _fetch(self, ctx: NodeContext, page: int, date_from: str | None) -> dict[str, Any]:
        client = ctx.require_shoptet()
        return page_data(await client.request("GET", self.path, params=self._params(page, date_from)), self.path)

    def _items(self, data: dict[str, Any]) -> list[Any]:
        return page_items(data, self.items_key, self.path)

    def _page_count(self, data: dict[str, Any]) -> int:
        return page_count(data, self.path)

    async def _emit_all(self, emit: Emit, items: list[Any], lock: asyncio.Lock) -> None:
        async with lock:  # one page's items stay together and emit is never called concurrently
            for item in items:
                await emit(item)

    async def _fetch_rest(
        self,
        ctx: NodeContext,
        emit: Emit,
        pages: _Pages,
        date_from: str | None,
        lock: asyncio.Lock,
    ) -> None:
        """Fetch ``pages`` with one worker per page they let ahead; the first failure cancels the
        rest and is raised."""

        async def worker() -> None:
            # a shared source: each page is taken by exactly one worker; asked again after every
            # page, it hands out the pages a grown list reported meanwhile
            while (page := await pages.take()) is not None:
                floor = pages.listing.total  # the most items any page answered so far counted
                data = await self._fetch(ctx, page, date_from)
                items = self._items(data)
                pages.listing.page(data, items, self._page_count(data), floor)
                await self._emit_all(emit, items, lock)
                await pages.emitted(page)

        if pages.done():
            return
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(pages.ahead):
                    group.create_task(worker())
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None


def page_data(answer: dict[str, Any], path: str) -> dict[str, Any]:
    """A list answer's ``data``: an object holding the items and the paginator."""
    data = shoptet.data_of(answer)
    if not isinstance(data, dict):
        raise StopError(f"{path}: data is not an object")
    return data


def page_items(data: dict[str, Any], items_key: str, path: str) -> list[Any]:
    items = data.get(items_key) or []
    if not isinstance(items, list):
        raise StopError(f"{path}: data.{items_key} is not a list")
    return items


def page_count(data: dict[str, Any], path: str) -> int:
    """``paginator.pageCount`` of a list answer's ``data`` (at least 1)."""
    paginator = data.get("paginator") or {}
    try:
        return max(1, int(paginator.get("pageCount") or 1))
    except (TypeError, ValueError) as exc:
        raise StopError(f"{path}: bad paginator {paginator!r}") from exc


async def read_all(client: ShoptetClient, path: str, items_key: str, *, items_per_page: int) -> list[Any]:
    """Every item of a short list (registered webhooks), page after page: for reading state, where
    a batch's parallel paging and per-item messages would be more than the job needs."""
    items: list[Any] = []
    page, pages = 1, 1
    while page <= pages:
        answer = await client.request("GET", path, params={"itemsPerPage": items_per_page, "page": page})
        data = page_data(answer, path)
        items += page_items(data, items_key, path)
        pages = page_count(data, path)
        page += 1
    return items


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a failed page group: a node error if there is one."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        current = stack.pop(0)
        if isinstance(current, BaseExceptionGroup):
            stack[:0] = list(current.exceptions)
        else:
            leaves.append(current)
    return next((e for e in leaves if isinstance(e, NodeError)), leaves[0])


class ChangeFeedBatch(ListBatch):
    """A change feed (``/api/{orders,products}/changes``): ``from`` is required and the feed keeps
    30 days, so without a watermark the list starts 30 days back."""

    items_key = "changes"
    from_param = "from"
    items_per_page = 1000
    empty_message = "No changes since last import."
    ordered_by = "changeTime"

    def default_from(self, now: datetime) -> str | None:
        return shoptet.format_time(now - shoptet.CHANGE_FEED_RETENTION)
