"""Failures a node can raise, and what the runtime does with each.

The shared Shoptet request code turns HTTP outcomes into these exceptions, so a node only catches
the ones it handles differently (stock movements turn a 400 into a business no-op, for instance).
Whatever escapes a node becomes a retry (``RetryableError``) or trash (everything else).
"""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    """Base of every failure a node reports. ``status`` and ``body`` end up in trash for operators.

    ``resume`` is for a node that failed part-way through work it cannot safely repeat (stock
    movements sent in chunks): the retried message, or the trashed one, carries it as its ``cursor``
    header, so the next attempt or a replay starts where this one stopped.
    """

    def __init__(
        self, message: str, *, status: int | None = None, body: Any = None, resume: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.body = body
        self.resume = resume


class RetryableError(NodeError):
    """Worth trying again later: 429, 423, 408, 5xx, timeouts, connection errors, 401 after refresh.

    ``retry_after`` (seconds) overrides the node's interval when the server said when to come back.
    ``unanswered``: the request went out and no (whole) answer came back, so Shoptet may have acted
    on it; a write that must not be applied twice (a relative stock change) cannot simply retry.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
        resume: dict[str, Any] | None = None,
        unanswered: bool = False,
    ) -> None:
        super().__init__(message, status=status, body=body, resume=resume)
        self.retry_after = retry_after
        self.unanswered = unanswered


class StoreUnavailable(RetryableError):
    """The install store did not answer (a database restart, a dropped connection, a locked SQLite
    file): the message is retried, where it went to trash as if the node had a bug."""


class StoreOpenFailed(RuntimeError):
    """The install store could not be opened (not reachable, credentials refused, a URL of no
    supported database): said in one line, not a driver's traceback."""


class StopError(NodeError):
    """Will fail the same way every time (400, 404, 409, 413, 422, 403, bad input): goes to trash."""


class OutputTooLarge(StopError):
    """A node's output (or a retry of its input) is larger than the broker takes: sent again, it
    would be refused again, and the input, with every message whose ledger batch it shares, would
    never settle. The input goes to trash with the size instead."""


class InstallNotFound(StopError):
    """The message names a user/application that has no install."""


class InstallDisabled(StopError):
    """The install is disabled (addon suspended) and the node does not accept disabled installs."""
