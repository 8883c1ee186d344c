"""Products: list, detail (with ``include=setItems``), change feed and snapshot."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from simulator.envelope import ShoptetError, envelope_response, not_found
from simulator.routes.deps import changes_response, codes_param, current_eshop, filter_by_time, get_state, paginate
from simulator.routes.snapshots import start_snapshot
from simulator.state import SimState
from simulator.store import Entity, EshopData
from simulator.views import includes, product_detail, product_list_item

router = APIRouter()

PRODUCTS_DEFAULT, PRODUCTS_MAX = 20, 1000
CHANGES_PER_PAGE = 1000  # default and maximum


def filter_products(request: Request, eshop: EshopData) -> list[Entity]:
    """``productCodes`` or ``productGuids`` (not both) names the whole set: "No additional filters
    take effect"."""
    codes, guids = codes_param(request, "productCodes"), codes_param(request, "productGuids")
    if codes is not None and guids is not None:
        message = 'Invalid "productCodes" parameter. You can use "productCodes" or "productGuids", but not both.'
        raise ShoptetError(400, "invalid-parameter", message, "productCodes")
    if guids is not None:
        return [p for p in eshop.products.values() if p["guid"] in guids]
    if codes is not None:
        return [p for p in eshop.products.values() if any(v["code"] in codes for v in p["variants"])]
    products = filter_by_time(request, list(eshop.products.values()))
    for name in ("type", "visibility"):
        wanted = request.query_params.get(name)
        if wanted:
            products = [p for p in products if p[name] == wanted]
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
