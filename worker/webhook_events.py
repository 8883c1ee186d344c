"""The webhook events Shoptet sends, as its API description lists them (``info.description``'s
table in openapi.yaml, beta events marked ``(*)`` there included; ``tests/runtime/
test_topology_loader.py`` checks that they agree).

A topology's ``webhook:`` start is checked against them: a misspelled event would be accepted,
subscribed in vain (Shoptet answers 422) and never start anything.
"""

from __future__ import annotations

SHOPTET_WEBHOOK_EVENTS: frozenset[str] = frozenset(
    {
        "addon:approve",
        "addon:suspend",
        "addon:terminate",
        "addon:uninstall",
        "availability:create",
        "availability:delete",
        "availability:update",
        "brand:create",
        "brand:delete",
        "brand:update",
        "category:create",
        "category:delete",
        "category:massCreate",
        "category:massDelete",
        "category:massUpdate",
        "category:update",
        "creditNote:create",
        "creditNote:delete",
        "creditNote:update",
        "customer:create",
        "customer:delete",
        "customer:disableOrders",
        "customer:enableOrders",
        "customer:import",
        "customer:update",
        "customerGroup:create",
        "customerGroup:delete",
        "customerGroup:update",
        "deliveryNote:create",
        "deliveryNote:delete",
        "deliveryNote:update",
        "discountCoupon:create",
        "discountCoupon:delete",
        "discountCoupon:massCreate",
        "discountCoupon:massDelete",
        "discountCoupon:update",
        "eshop:billingInformation",
        "eshop:currencies",
        "eshop:design",
        "eshop:mandatoryFields",
        "eshop:projectDomain",
        "eshop:settingsInformation",
        "invoice:create",
        "invoice:delete",
        "invoice:massUpdate",
        "invoice:update",
        "job:finished",
        "mailingListEmail:create",
        "mailingListEmail:delete",
        "order:cancel",
        "order:create",
        "order:delete",
        "order:massCreate",
        "order:massPaid",
        "order:massUpdate",
        "order:paid",
        "order:update",
        "orderHistoryRemarks:change",
        "orderStatusesList:change",
        "paymentMethod:change",
        "pricelist:create",
        "pricelist:delete",
        "product:create",
        "product:delete",
        "product:massCreate",
        "product:massDelete",
        "product:massUpdate",
        "product:update",
        "productReview:created",
        "productVariant:create",
        "productVariant:delete",
        "productVariant:massCreate",
        "productVariant:massDelete",
        "productVariant:massUpdate",
        "productVariant:update",
        "productVariantPrice:massUpdate",
        "productVariantPrice:update",
        "proformaInvoice:create",
        "proformaInvoice:delete",
        "proformaInvoice:update",
        "projectReview:create",
        "proofPayment:create",
        "proofPayment:delete",
        "proofPayment:update",
        "quantityDiscount:create",
        "quantityDiscount:delete",
        "quantityDiscount:massDelete",
        "quantityDiscount:massUpdate",
        "quantityDiscount:update",
        "salesChannel:create",
        "salesChannel:delete",
        "salesChannel:update",
        "sectionArticle:create",
        "sectionArticle:delete",
        "sectionArticle:update",
        "shipment:create",
        "shipment:fail",
        "shipment:update",
        "shippingMethod:change",
        "shippingRequest:cancelled",
        "shippingRequest:confirmed",
        "stock:inStock",
        "stock:minStockSupplyReached",
        "stock:movement",
        "stock:soldOut",
        "supplier:create",
        "supplier:delete",
        "supplier:update",
        "warranty:create",
        "warranty:delete",
        "warranty:update",
    }
)

#: Shoptet's system webhooks: set up in the Partners' addon administration, never registered through
#: the API (a POST naming one is refused, and with it every other event of that call). A topology may
#: start on them; webhooks-subscribe leaves them out.
SYSTEM_WEBHOOK_EVENTS: frozenset[str] = frozenset(
    {"addon:approve", "addon:suspend", "addon:terminate", "addon:uninstall"}
)

#: Events Shoptet does not register together for one e-shop (``409 Conflict``, openapi.yaml's event
#: table), the more general one of each pair first: where neither is registered yet, it is kept.
EXCLUSIVE_WEBHOOK_EVENTS: tuple[tuple[str, str], ...] = (
    ("order:update", "order:cancel"),
    ("customer:update", "customer:disableOrders"),
    ("customer:update", "customer:enableOrders"),
)


def exclusive_with(event: str, others: set[str]) -> str | None:
    """One of ``others`` that Shoptet does not register together with ``event``, if any."""
    for pair in EXCLUSIVE_WEBHOOK_EVENTS:
        if event in pair:
            other = pair[1] if event == pair[0] else pair[0]
            if other in others:
                return other
    return None
