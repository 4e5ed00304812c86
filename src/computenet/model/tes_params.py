"""The TES ``resources.backend_parameters`` vocabulary: ComputeNet's extensions as they
travel inside a TES task. The node reads them (:mod:`computenet.node.tes_map`); a gateway
forwarding to another TES service writes them (:mod:`computenet.gateway.backends.tes`).
"""

from __future__ import annotations

from computenet.model.task import Resources

BACKEND_PARAMETERS: dict[str, str] = {
    "accelerator_vendor": "accelerator vendor, e.g. nvidia, huawei",
    "accelerator_model": "accelerator catalog id, e.g. nvidia-h100-sxm",
    "accelerator_count": "cards, all in one pool",
    "accelerator_min_memory_gib": "minimum memory per card",
    "time_limit_s": "wall-clock limit in seconds",
    "regions": "comma-separated GB/T 2260 codes the task may run in",
    "regions_deny": "comma-separated GB/T 2260 codes the task must not run in",
    "policy": "balanced, cheapest, fastest, greenest or nearest",
    "max_price_per_card_hour": "price cap (decimal)",
    "priority": "integer, higher first",
    "pool": "pin to one CPI",
}


def resource_parameters(r: Resources) -> dict[str, str]:
    """The backend parameters that carry ``r``'s accelerator request and time limit."""
    out: dict[str, str] = {}
    if r.accelerator is not None:
        a = r.accelerator
        out["accelerator_count"] = str(a.count)
        extra = {"vendor": a.vendor, "model": a.model, "min_memory_gib": a.min_memory_gib}
        out.update({f"accelerator_{k}": str(v) for k, v in extra.items() if v})
    if r.time_limit_s is not None:
        out["time_limit_s"] = str(r.time_limit_s)
    return out
