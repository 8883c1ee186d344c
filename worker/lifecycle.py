"""Shoptet addon lifecycle webhooks: what each one does to the install.

The webhook ingress verifies the call and hands the event here; keeping the mapping in one place
means the CLI, tests and ingress agree on what "suspend" or "terminate" means.
"""

from __future__ import annotations

import structlog

from worker.store import InstallStore

log = structlog.get_logger(__name__)

REMOVE = frozenset({"addon:uninstall", "addon:terminate"})
DISABLE = frozenset({"addon:suspend"})
ENABLE = frozenset({"addon:approve"})
ADDON_EVENTS = REMOVE | DISABLE | ENABLE


async def apply_addon_event(store: InstallStore, application: str, eshop_id: str, event: str) -> bool:
    """Apply an ``addon:*`` event to the e-shop's install; False when there was nothing to change.

    ``uninstall`` and ``terminate`` remove the install with its webhooks and cached tokens (Shoptet
    has already dropped the addon's access); ``suspend`` disables it, ``approve`` enables it again.
    An unknown event or an unknown e-shop returns False (and is logged), never raises: Shoptet
    should not be made to retry a webhook we cannot act on.
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
        else:
            done = await store.set_enabled(install.user, application, event in ENABLE)
        log.info("addon event applied", addon_event=event, eshop_id=eshop_id, user=install.user, changed=done)
        changed = changed or done
    return changed
