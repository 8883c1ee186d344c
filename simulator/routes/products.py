"""Products: list, detail (with ``include=setItems``), change feed and snapshot."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from simulator.envelope import envelope_response, not_found
from simulator.routes.deps import changes_response, current_eshop, filter_by_time, get_state, paginate
from simulator.routes.snapshots import start_snapshot
from simulator.state import SimState
from simulator.store import Entity, EshopData
from simulator.views import includes, product_detail, product_list_item

router = APIRouter()

PRODUCTS_DEFAULT, PRODUCTS_MAX = 20, 1000
CHANGES_PER_PAGE = 1000  # default and maximum


def filter_products(request: Request, eshop: EshopData) -> list[Entity]:
    products = filter_by_time(request, list(eshop.products.values()))
    for name in ("type", "visibility"):
        wanted = request.query_params.get(name)
        if wanted:
            products = [p for p in products if p[name] == wanted]
    guids = request.query_params.get("productGuids")
    if guids:
        wanted_guids = set(guids.split(","))
        products = [p for p in products if p["guid"] in wanted_guids]
    codes = request.query_params.get("productCodes")
    if codes:
        wanted_codes = set(codes.split(","))
        products = [p for p in products if any(v["code"] in wanted_codes for v in p["variants"])]
    return products


@router.get("/api/products")
async def list_products(request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    page, paginator = paginate(request, filter_products(request, eshop), PRODUCTS_DEFAULT, PRODUCTS_MAX)
    return envelope_response({"products": [product_list_item(p) for p in page], "paginator": paginator})


@router.get("/api/products/changes")
async def product_changes(request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    return changes_response(request, eshop.product_changes, "guid", CHANGES_PER_PAGE, CHANGES_PER_PAGE)


@router.get("/api/products/snapshot")
async def product_snapshot(
    request: Request, eshop: EshopData = Depends(current_eshop), state: SimState = Depends(get_state)
) -> Response:
    guids = [p["guid"] for p in filter_products(request, eshop)]
    wanted = includes(request.query_params.get("include"))

    def build() -> list[Entity]:
        return [product_detail(eshop, eshop.products[g], wanted) for g in guids if g in eshop.products]

    return start_snapshot(state, eshop, "/api/products/snapshot", build)


@router.get("/api/products/{guid}")
async def product_detail_route(guid: str, request: Request, eshop: EshopData = Depends(current_eshop)) -> Response:
    product = eshop.products.get(guid)
    if product is None:
        raise not_found("product-not-found", f'Product with guid "{guid}" not found.', guid)
    return envelope_response(product_detail(eshop, product, includes(request.query_params.get("include"))))
