"""Shoptet addon lifecycle webhooks: what each one does to the install.

The webhook ingress verifies the call and hands the event here; keeping the mapping in one place
means the CLI, tests and ingress agree on what "suspend" or "terminate" means.
"""

from __future__ import annotations

from datetime import UTC, datetime

import structlog

from worker.store import InstallStore

log = structlog.get_logger(__name__)

REMOVE = frozenset({"addon:uninstall", "addon:terminate"})
DISABLE = frozenset({"addon:suspend"})
ENABLE = frozenset({"addon:approve"})
ADDON_EVENTS = REMOVE | DISABLE | ENABLE


#: Install setting: when Shoptet created the last ``suspend``/``approve`` applied to the install.
LIFECYCLE_EVENT_AT = "lastLifecycleEventAt"


def event_time(created: str | None) -> datetime | None:
    """Shoptet's ``eventCreated`` (``2024-05-02T10:15:30+0200``) as a time; None when absent or not one."""
    if not created:
        return None
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def apply_addon_event(
    store: InstallStore, application: str, eshop_id: str, event: str, created: datetime | None = None
) -> bool:
    """Apply an ``addon:*`` event to the e-shop's install; False when there was nothing to change.

    ``uninstall`` and ``terminate`` remove the install with its webhooks and cached tokens (Shoptet
    has already dropped the addon's access); ``suspend`` disables it, ``approve`` enables it again.
    An unknown event or an unknown e-shop returns False (and is logged), never raises: Shoptet
    should not be made to retry a webhook we cannot act on.

    ``created`` (Shoptet's ``eventCreated``): a ``suspend`` or ``approve`` older than the last one
    applied is ignored. Shoptet retries a delivery that failed, and a suspend retried after the
    approve that followed it left an active addon's install disabled.
    """
    if event not in ADDON_EVENTS:
        log.warning("not an addon lifecycle event", addon_event=event, eshop_id=eshop_id)
        return False
    installs = await store.installs_of_eshop(str(eshop_id), application)
    if not installs:
        log.warning("addon event for an unknown install", addon_event=event, eshop_id=eshop_id)
        return False
    changed = False
    for install in installs:  # the addon's state is the e-shop's: every install of it follows
        if event in REMOVE:
            done = await store.remove_install(install.user, application)
        elif _older_than_applied(install.settings.get(LIFECYCLE_EVENT_AT), created):
            log.warning("addon event older than the last one applied; ignored", addon_event=event, user=install.user)
            continue
        else:
            done = await store.set_enabled(install.user, application, event in ENABLE)
            if created is not None:
                await store.set_setting(install.user, application, LIFECYCLE_EVENT_AT, created.isoformat())
        log.info("addon event applied", addon_event=event, eshop_id=eshop_id, user=install.user, changed=done)
        changed = changed or done
    return changed


def _older_than_applied(applied: object, created: datetime | None) -> bool:
    last = event_time(applied) if isinstance(applied, str) else None
    return created is not None and last is not None and created < last
