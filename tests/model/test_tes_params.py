"""One TES backend_parameters vocabulary: what a forwarding gateway writes, a node reads."""

from __future__ import annotations

from computenet.model.task import Resources
from computenet.model.tes_params import BACKEND_PARAMETERS, resource_parameters
from computenet.node.tes_map import TesTask, tes_to_spec


def test_what_a_gateway_writes_a_node_reads_back() -> None:
    res = Resources.model_validate(
        {
            "accelerator": {"vendor": "nvidia", "model": "A100", "count": 2, "min_memory_gib": 40},
            "time_limit_s": 600,
        }
    )
    params = resource_parameters(res)
    assert set(params) <= set(BACKEND_PARAMETERS)
    tes = TesTask.model_validate(
        {
            "executors": [{"image": "alpine", "command": ["true"]}],
            "resources": {"backend_parameters": params},
        }
    )
    spec = tes_to_spec(tes)
    assert spec.resources.accelerator == res.accelerator
    assert spec.resources.time_limit_s == 600
