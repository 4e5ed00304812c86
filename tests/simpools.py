"""Hand-made simulator pools for the tests under tests/sim."""

from __future__ import annotations

from decimal import Decimal

from computenet.sim.topology import SimPool


def pool(
    pool_id: str, model: str, cards: int, price: str, region: str = "31", **kw: object
) -> SimPool:
    """A one-machine pool in Shanghai unless told otherwise."""
    coords = {"31": (31.15, 121.12), "51": (30.57, 104.07)}[region]
    fields: dict[str, object] = {
        "pool_id": pool_id,
        "site": pool_id,
        "region": region,
        "lat": coords[0],
        "lon": coords[1],
        "accelerator": model,
        "memory_gib": 16,
        "cards_per_machine": cards,
        "machines": 1,
        "price_per_card_hour": Decimal(price),
        "card_power_w": 300.0,
        "pue": 1.5,
        "carbon_g_per_kwh": 500.0,
    }
    fields.update(kw)
    return SimPool.model_validate(fields)
