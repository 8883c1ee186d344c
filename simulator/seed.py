"""Deterministic seed data: the same ``seed`` always gives the same e-shops, tokens, products and orders.

Only timestamps move with the clock (they are relative to ``epoch``), so that seeded orders stay
inside the 30-day window of the change feeds unless a test pins ``epoch``.
"""

from __future__ import annotations

import functools
import hashlib
import random
import uuid
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from simulator.config import SimulatorConfig
from simulator.store import Entity, EshopData
from simulator.timefmt import now, shoptet_time

VAT = Decimal("21.00")
CURRENCY = "CZK"
SET_EVERY = 10  # every 10th product is a product set of earlier products

FIRST_NAMES = ("Jana", "Petr", "Eva", "Tomas", "Lucie", "Martin", "Katerina", "Jakub", "Tereza", "Ondrej")
LAST_NAMES = ("Novak", "Svoboda", "Dvorak", "Cerna", "Prochazka", "Kucera", "Vesela", "Horak", "Marek", "Pokorna")
CITIES = (("Praha", "11000"), ("Brno", "60200"), ("Ostrava", "70030"), ("Plzen", "30100"), ("Olomouc", "77900"))
STREETS = ("Hlavni", "Nadrazni", "Skolni", "Zahradni", "Lesni", "Polni", "Kvetna", "Husova")
PRODUCT_WORDS = ("Mug", "Lamp", "Chair", "Scarf", "Kettle", "Notebook", "Candle", "Blanket", "Vase", "Teapot")
ADJECTIVES = ("Blue", "Oak", "Linen", "Steel", "Ceramic", "Wool", "Glass", "Bamboo", "Copper", "Cotton")

STATUSES: tuple[tuple[int, str, bool], ...] = (
    (-1, "Not processed", False),
    (-2, "Processing", False),
    (-3, "Dispatched", False),
    (-4, "Cancelled", False),
    (5, "Paid, waiting for stock", True),
)
PAYMENT_METHODS: tuple[tuple[str, int, str, str], ...] = (
    ("Bank transfer", 2, "transfer", "Wire transfer"),
    ("Cash on delivery", 1, "cod", "Cash on delivery"),
    ("Card online", 4, "card", "Card"),
)
SHIPPING_METHODS: tuple[tuple[str, str, int], ...] = (
    ("Czech Post", "ceskaPosta", 1),
    ("PPL", "ppl", 2),
    ("Personal pickup", "personal", 3),
)


def money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def premium_token(seed: int, eshop_id: int) -> str:
    """The private API token of a seeded e-shop: ``<eshopId>-p-<24 hex>``, a pure function of seed and id."""
    digest = hashlib.sha256(f"premium:{seed}:{eshop_id}".encode()).hexdigest()[:24]
    return f"{eshop_id}-p-{digest}"


def signature_key(seed: int, eshop_id: int, generation: int = 0) -> str:
    """The webhook signature key; renewing it moves to the next generation."""
    return hashlib.sha256(f"signature:{seed}:{eshop_id}:{generation}".encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=65536)
def prices(with_vat_unit: Decimal, qty: Decimal) -> tuple[dict[str, str], dict[str, str]]:
    """(itemPrice, unitPrice) with Shoptet's four fields, VAT included in the unit price.

    Cached: the same few thousand prices recur across 100,000 seeded orders, and sharing the dicts
    keeps seeding fast and small. Callers never mutate them (views copy before answering).
    """

    def split(with_vat: Decimal) -> dict[str, str]:
        without = (with_vat / (1 + VAT / 100)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return {
            "withVat": money(with_vat),
            "withoutVat": money(without),
            "vat": money(with_vat - without),
            "vatRate": money(VAT),
        }

    return split(with_vat_unit * qty), split(with_vat_unit)


class Seeder:
    """Builds e-shops and the entities inside them; also used by the admin API to add orders."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.epoch = config.epoch or now()

    # e-shops -------------------------------------------------------------------------------------
    def eshops(self) -> list[EshopData]:
        return [self.eshop(index) for index in range(self.config.eshops)]

    def eshop(self, index: int) -> EshopData:
        eshop_id = self.config.first_eshop_id + index
        rng = random.Random(f"{self.config.seed}:eshop:{eshop_id}")
        eshop = EshopData(
            eshop_id=eshop_id,
            name=f"Demo shop {index + 1}",
            url=f"https://shop{index + 1}.sim.myshoptet.com/",
            contact_email=f"owner{index + 1}@sim.example",
            premium_token=premium_token(self.config.seed, eshop_id),
            signature_key=signature_key(self.config.seed, eshop_id),
            statuses=[
                {"id": i, "order": n, "name": name, "markAsPaid": paid} for n, (i, name, paid) in enumerate(STATUSES, 1)
            ],
            default_status_id=-1,
            payment_methods=[self._payment_method(rng, n, *spec) for n, spec in enumerate(PAYMENT_METHODS, 1)],
            shipping_methods=[self._shipping_method(rng, n, *spec) for n, spec in enumerate(SHIPPING_METHODS, 1)],
            stocks=[
                {
                    "id": 1,
                    "title": "Main warehouse",
                    "isDeliveryPoint": False,
                    "visibleOnEshop": True,
                    "deliveryPointTitle": None,
                    "deliveryPointAddress": None,
                },
                {
                    "id": 2,
                    "title": "Prague store",
                    "isDeliveryPoint": True,
                    "visibleOnEshop": True,
                    "deliveryPointTitle": "Prague store",
                    "deliveryPointAddress": "Hlavni 1, 11000 Praha",
                },
            ],
            default_stock_id=1,
        )
        span = timedelta(days=25)
        total = self.config.products
        for n in range(1, total + 1):
            created = self.epoch - span + span * (n / (total + 1)) * 0.2  # products predate most orders
            self.add_product(eshop, rng, n, created)
        total = self.config.orders
        for _ in range(total):
            created = self.epoch - span + span * (eshop.next_order_number / (total + 1))
            self.add_order(eshop, rng, created)
        return eshop

    @staticmethod
    def _payment_method(rng: random.Random, n: int, name: str, type_id: int, code: str, type_name: str) -> Entity:
        return {
            "guid": guid(rng),
            "name": name,
            "description": None,
            "submethod": None,
            "paymentType": {"id": type_id, "code": code, "name": type_name},
            "visible": True,
            "priority": n,
            "wholesale": False,
            "logoUrl": None,
        }

    @staticmethod
    def _shipping_method(rng: random.Random, n: int, name: str, code: str, company_id: int) -> Entity:
        return {
            "guid": guid(rng),
            "name": name,
            "description": None,
            "shippingCompany": {"id": company_id, "code": code, "name": name},
            "trackingUrl": None,
            "visible": True,
            "priority": n,
            "wholesale": False,
            "logoUrl": None,
        }

    # products ------------------------------------------------------------------------------------
    def add_product(self, eshop: EshopData, rng: random.Random, n: int, created: datetime) -> Entity:
        simple = [p for p in eshop.products.values() if p["type"] == "product"]
        is_set = n % SET_EVERY == 0 and len(simple) >= 2
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(PRODUCT_WORDS)} {n}"
        product_guid = guid(rng)
        variant_count = 1 if is_set else rng.choice((1, 1, 2))
        variants = []
        for v in range(variant_count):
            code = f"{n:05d}" if variant_count == 1 else f"{n:05d}/{'SML'[v]}"
            price = Decimal(rng.randrange(99, 2999))
            variants.append(self._variant(rng, code, price, name if variant_count == 1 else f"{name} {'SML'[v]}"))
            if not is_set:
                for stock_id in eshop.stock_ids():
                    eshop.stock_amounts[(stock_id, code)] = Decimal(rng.randrange(0, 40))
        set_items = None
        if is_set:
            components = rng.sample(simple, k=min(len(simple), rng.choice((2, 3))))
            set_items = [
                {"guid": c["guid"], "code": c["variants"][0]["code"], "amount": amount(Decimal(rng.randint(1, 3)))}
                for c in components
            ]
        stamp = shoptet_time(created)
        product: Entity = {
            "guid": product_guid,
            "type": "product-set" if is_set else "product",
            "name": name,
            "indexName": name.lower().replace(" ", "-"),
            "brand": {"code": "simbrand", "name": "Sim Brand"} if n % 3 else None,
            "supplier": None,
            "visibility": "visible",
            "creationTime": stamp,
            "changeTime": stamp,
            "shortDescription": f"<p>{name}</p>",
            "description": f"<p>{name}, made for the Shoptet simulator.</p>",
            "metaDescription": None,
            "url": f"{eshop.url}{name.lower().replace(' ', '-')}/",
            "internalNote": None,
            "hsCode": None,
            "defaultCategory": {"guid": None, "name": None, "visible": None},
            "variants": variants,
            "setItems": set_items,
        }
        eshop.add_product(product)
        eshop.product_changes.record(product_guid, created, self.config.creation_change_type)
        return product

    @staticmethod
    def _variant(rng: random.Random, code: str, price: Decimal, name: str) -> Entity:
        return {
            "code": code,
            "ean": f"859{rng.randrange(10**9, 10**10)}",
            "stock": None,
            "unit": "ks",
            "weight": amount(Decimal(rng.randrange(100, 5000)) / 1000),
            "width": "10.0",
            "height": "10.0",
            "depth": "10.0",
            "visible": True,
            "price": money(price),
            "commonPrice": None,
            "manufacturerCode": None,
            "pluCode": None,
            "isbn": None,
            "serialNo": None,
            "mpn": None,
            "includingVat": True,
            "vatRate": money(VAT),
            "currencyCode": CURRENCY,
            "minStockSupply": None,
            "actionPrice": None,
            "name": name,
            "amountDecimalPlaces": 0,
            "negativeStockAllowed": "no-global",
        }

    # orders --------------------------------------------------------------------------------------
    def add_order(
        self, eshop: EshopData, rng: random.Random, created: datetime, overrides: dict[str, Any] | None = None
    ) -> Entity:
        """Create an order in Shoptet's detail shape and record it in the change feed."""
        number = eshop.next_order_number
        eshop.next_order_number += 1
        code = f"{2025000000 + number}"
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        city, zip_code = rng.choice(CITIES)
        street = f"{rng.choice(STREETS)} {rng.randint(1, 200)}"
        payment = rng.choice(eshop.payment_methods)
        shipping = rng.choice(eshop.shipping_methods)
        status_id = (overrides or {}).get("statusId", eshop.default_status_id)
        status = eshop.status(status_id) or eshop.statuses[0]
        items: list[Entity] = []
        total = Decimal(0)
        candidates = list(eshop.products.values())
        for product in rng.sample(candidates, k=min(len(candidates), rng.randint(1, 3))):
            variant = rng.choice(product["variants"])
            qty = Decimal(rng.randint(1, 3))
            unit = Decimal(variant["price"])
            total += unit * qty
            items.append(
                self._item(
                    eshop,
                    product["guid"],
                    variant["code"],
                    product["type"],
                    variant["name"],
                    qty,
                    unit,
                    status,
                    surcharge=number % 5 == 0,
                )
            )
        ship_price = Decimal(rng.choice((0, 79, 99, 129)))
        total += ship_price
        items.append(self._item(eshop, None, None, "shipping", shipping["name"], Decimal(1), ship_price, status))
        items.append(self._item(eshop, None, None, "billing", payment["name"], Decimal(1), Decimal(0), status))
        item_total, _ = prices(total, Decimal(1))
        address = {
            "company": None,
            "fullName": f"{first} {last}",
            "street": street,
            "houseNumber": None,
            "city": city,
            "district": None,
            "additional": None,
            "zip": zip_code,
            "countryCode": "CZ",
            "regionName": None,
            "regionShortcut": None,
        }
        stamp = shoptet_time(created)
        order: Entity = {
            "code": code,
            "guid": guid(rng),
            "externalCode": None,
            "creationTime": stamp,
            "changeTime": stamp,
            "email": f"{first}.{last}{number}@customer.example".lower(),
            "phone": f"+420{rng.randrange(600000000, 799999999)}",
            "clientIPAddress": f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            "customerGuid": None,
            "cashDeskOrder": False,
            "stockId": eshop.default_stock_id,
            "addressesEqual": True,
            "vatPayer": True,
            "billingMethod": {"id": payment["paymentType"]["id"], "name": payment["paymentType"]["name"]},
            "paymentMethod": {"guid": payment["guid"], "name": payment["name"]},
            "shipping": {"guid": shipping["guid"], "name": shipping["name"]},
            "shippingDetails": {
                "branchId": None,
                "shippingCompanyCode": shipping["shippingCompany"]["code"],
                "name": f"{first} {last}",
                "note": None,
                "place": None,
                "street": street,
                "city": city,
                "zipCode": zip_code,
                "countryCode": "CZ",
                "link": None,
                "latitude": None,
                "longitude": None,
                "carrierId": None,
            },
            "adminUrl": f"{eshop.url}admin/objednavky-detail/?id={number}",
            "status": {"name": status["name"], "id": status["id"]},
            "source": {"name": "E-shop", "id": 1},
            "price": {
                "vat": item_total["vat"],
                "toPay": item_total["withVat"],
                "currencyCode": CURRENCY,
                "withoutVat": item_total["withoutVat"],
                "withVat": item_total["withVat"],
                "exchangeRate": "1.00000000",
            },
            "paid": bool(status["markAsPaid"]),
            "billingAddress": {**address, "companyId": None, "vatId": None, "taxId": None},
            "deliveryAddress": address,
            "language": "cs",
            "items": items,
            "notes": {
                "customerRemark": None,
                "eshopRemark": None,
                "trackingNumber": None,
                "trackingUrl": None,
                "additionalFields": [{"index": i, "label": f"Field {i}", "text": None} for i in range(1, 7)],
            },
            "paymentTransactions": [],
        }
        for key, value in (overrides or {}).items():
            if key in ("email", "phone", "paid"):
                order[key] = value
            elif key in order["notes"]:
                order["notes"][key] = value
        eshop.orders[code] = order
        eshop.order_changes.record(code, created, self.config.creation_change_type)
        return order

    @staticmethod
    def _item(
        eshop: EshopData,
        product_guid: str | None,
        code: str | None,
        item_type: str,
        name: str,
        qty: Decimal,
        unit: Decimal,
        status: Entity,
        *,
        surcharge: bool = False,
    ) -> Entity:
        item_price, unit_price = prices(unit, qty)
        item_id = eshop.next_item_id
        eshop.next_item_id += 1
        item: Entity = {
            "productGuid": product_guid,
            "code": code,
            "ean": None,
            "itemType": item_type,
            "name": name,
            "variantName": None,
            "brand": None,
            "remark": None,
            "weight": "0.000",
            "additionalField": None,
            "amount": amount(qty),
            "amountUnit": "ks" if product_guid else None,
            "priceRatio": "1.0000",
            "status": {"name": status["name"], "id": status["id"]},
            "itemPrice": item_price,
            "unitPrice": unit_price,
            "purchasePrice": None,
            "recyclingFee": None,
            "itemId": item_id,
            "warrantyDescription": None,
            "amountCompleted": "0.000",
            "surchargeParameters": [],
        }
        if surcharge and product_guid:
            item["surchargeParameters"] = [
                {
                    "parameterName": {"code": "engraving", "name": "Engraving", "subscription": None},
                    "parameterValue": {"valueIndex": "yes", "description": "With engraving", "price": "50.00"},
                }
            ]
        return item
