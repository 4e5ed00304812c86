"""A federation for the simulator: national, regional and industry nodes owning pools.

Pools are held as NumPy columns, ordered so that every node's subtree is one contiguous
slice of them (nodes in depth-first order, each node's own pools before its children's).
A node then reads "what it owns" and "what its subtree holds" as ``[lo, hi)`` ranges.

``national_topology`` builds the reference network: one national node in Beijing, one
regional node in each of the other 30 mainland provinces, 300 industry nodes spread over
all 31 (Beijing's hang off the national node), 100,000 pools owned by the industry nodes,
machines inside pools, accelerator models from the catalog. The file format
(``load_federation``) is documented in docs/simulator.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from computenet.errors import InvalidInput
from computenet.model.pool import REGION_CODE, Money
from computenet.sched.network import provinces
from computenet.sched.pooltable import card_tflops

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

KINDS = ("national", "regional", "industry")
DEFAULT_SYNC_DELAY_S = 0.5  # the live federation's sync period (docs/federation.md)
NATIONAL_CODE = "11"  # Beijing
MAINLAND = 31  # the first 31 rows of the province table are the mainland provinces
WEST = frozenset({"15", "52", "62", "64", "54", "63", "65"})  # cheaper power and land

# The reference mix: (catalog model, share of pools, list price per card-hour in CNY, board W).
# Shares and prices are stated assumptions for a plausible Chinese national network
# (docs/simulator.md), not survey data; speed comes from the catalog, and models without a
# figure (L20, P100, Ascend 910B3) run at their jobs' declared run time.
MODEL_MIX: tuple[tuple[str, float, Decimal, float], ...] = (
    ("nvidia-a100-sxm-80g", 0.14, Decimal("15.0"), 400.0),
    ("nvidia-a800-sxm-80g", 0.12, Decimal("14.0"), 400.0),
    ("huawei-ascend-910b", 0.12, Decimal("12.0"), 400.0),
    ("nvidia-h800-sxm", 0.05, Decimal("32.0"), 700.0),
    ("nvidia-h100-sxm", 0.03, Decimal("35.0"), 700.0),
    ("nvidia-h20", 0.08, Decimal("11.0"), 400.0),
    ("nvidia-l20", 0.05, Decimal("8.0"), 275.0),
    ("nvidia-v100-sxm2-32g", 0.09, Decimal("8.0"), 300.0),
    ("nvidia-t4", 0.09, Decimal("3.0"), 70.0),
    ("nvidia-a10", 0.06, Decimal("5.0"), 150.0),
    ("nvidia-p100-pcie-16g", 0.03, Decimal("4.0"), 250.0),
    ("huawei-ascend-910b3", 0.04, Decimal("10.0"), 400.0),
    ("cambricon-mlu370-x8", 0.05, Decimal("6.0"), 250.0),
    ("hygon-k100", 0.05, Decimal("7.0"), 300.0),
)
MACHINES_MIX = ((1, 0.7), (2, 0.2), (4, 0.1))  # machines per pool
CARDS_PER_MACHINE = 8
# Inference cards usually come four to a server.
FOUR_CARD_MODELS = frozenset({"nvidia-t4", "nvidia-a10", "nvidia-l20", "nvidia-p100-pcie-16g"})
WEST_PRICE_FACTOR = Decimal("0.85")
PUE = {"east": 1.35, "west": 1.2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeIn(_Strict):
    """One node of a federation file."""

    code: str = Field(min_length=1, max_length=128, description="unique node code")
    kind: str = Field(description="national, regional or industry")
    region: str = Field(description="GB/T 2260 code where the node runs")
    parent: str | None = Field(default=None, description="parent code; none for the root")

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_CODE.fullmatch(v) or provinces().of(v) < 0:
            raise ValueError("region must be a GB/T 2260 code of a known province")
        return v


class PoolIn(_Strict):
    """One pool of a federation file."""

    pool_id: str = Field(min_length=1, max_length=256)
    node: str = Field(min_length=1, max_length=128, description="code of the owning node")
    region: str
    accelerator: str = Field(min_length=1, max_length=64, description="catalog model id")
    cards_per_machine: int = Field(ge=1, le=1024)
    machines: int = Field(ge=1, le=100_000)
    price_per_card_hour: Money
    card_power_w: float = Field(ge=0, le=10_000)
    pue: float = Field(default=1.3, ge=1, le=5)

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_CODE.fullmatch(v) or provinces().of(v) < 0:
            raise ValueError("region must be a GB/T 2260 code of a known province")
        return v


class FederationIn(_Strict):
    """A federation file: nodes, pools and the sync delay of the federation index."""

    sync_delay_s: float = Field(default=DEFAULT_SYNC_DELAY_S, ge=0, le=3600)
    nodes: tuple[NodeIn, ...] = Field(min_length=1, max_length=100_000)
    pools: tuple[PoolIn, ...] = Field(min_length=1, max_length=1_000_000)


@dataclass(frozen=True)
class Node:
    """A node of the tree; ``own`` and ``subtree`` are pool index ranges."""

    code: str
    kind: str
    province: int
    parent: int  # index into Federation.nodes, -1 for the root
    own: tuple[int, int]
    subtree: tuple[int, int]


@dataclass(frozen=True)
class Federation:
    """Nodes and pools (columns, subtree-contiguous), plus the index's sync delay."""

    nodes: tuple[Node, ...]
    sync_delay_s: float
    pool_ids: list[str]
    owner: I64  # node index per pool
    province: I64  # province index per pool
    models: tuple[str, ...]
    model: I64  # index into models per pool
    tflops: F64  # dense FP16 per card, 0 when unknown
    machines: I64
    cards_per_machine: I64
    price: F64  # per card-hour, float for scoring
    price_fen: I64  # per card-hour in 1/100 currency unit, exact
    power_w: F64
    pue: F64
    carbon: F64  # grid g CO2/kWh of the pool's province

    @property
    def cards(self) -> I64:
        """Cards per pool."""
        return self.machines * self.cards_per_machine

    def __len__(self) -> int:
        return len(self.pool_ids)


def build(fed: FederationIn) -> Federation:
    """Check a parsed federation (one root, known parents, no cycles, pools on known nodes)
    and lay it out with subtree-contiguous pools."""
    index = {n.code: i for i, n in enumerate(fed.nodes)}
    if len(index) != len(fed.nodes):
        raise InvalidInput("node codes must be unique")
    children: list[list[int]] = [[] for _ in fed.nodes]
    roots = []
    for i, n in enumerate(fed.nodes):
        if n.parent is None:
            roots.append(i)
        elif n.parent not in index:
            raise InvalidInput(f"node {n.code}: unknown parent {n.parent!r}")
        else:
            children[index[n.parent]].append(i)
    if len(roots) != 1:
        raise InvalidInput(f"a federation has exactly one root node, found {len(roots)}")
    owned: list[list[int]] = [[] for _ in fed.nodes]
    for j, p in enumerate(fed.pools):
        if p.node not in index:
            raise InvalidInput(f"pool {p.pool_id}: unknown node {p.node!r}")
        owned[index[p.node]].append(j)
    order: list[int] = []  # pool order
    spans: dict[int, tuple[int, int, int]] = {}  # node -> (lo, own_hi, hi)
    seen: set[int] = set()
    # Iterative depth-first walk (a national tree is deep enough to avoid recursion limits).
    stack: list[tuple[int, bool]] = [(roots[0], False)]
    while stack:
        node, done = stack.pop()
        if done:
            lo, own_hi, _ = spans[node]
            spans[node] = (lo, own_hi, len(order))
            continue
        if node in seen:
            raise InvalidInput("the node tree has a cycle")
        seen.add(node)
        lo = len(order)
        order.extend(owned[node])
        spans[node] = (lo, len(order), -1)
        stack.append((node, True))
        stack.extend((c, False) for c in reversed(children[node]))
    if len(seen) != len(fed.nodes):
        raise InvalidInput("every node must descend from the root (a cycle or a second tree)")
    prov = provinces()
    nodes = tuple(
        Node(
            n.code,
            n.kind,
            prov.of(n.region),
            index[n.parent] if n.parent is not None else -1,
            (spans[i][0], spans[i][1]),
            (spans[i][0], spans[i][2]),
        )
        for i, n in enumerate(fed.nodes)
    )
    pools = [fed.pools[j] for j in order]
    ids = [p.pool_id for p in pools]
    if len(set(ids)) != len(ids):
        raise InvalidInput("pool ids must be unique")
    models = tuple(sorted({p.accelerator for p in pools}))
    midx = {m: i for i, m in enumerate(models)}
    tf = {m: card_tflops(m) for m in models}
    province = np.array([prov.of(p.region) for p in pools], np.int64)
    return Federation(
        nodes=nodes,
        sync_delay_s=fed.sync_delay_s,
        pool_ids=ids,
        owner=np.array([index[p.node] for p in pools], np.int64),
        province=province,
        models=models,
        model=np.array([midx[p.accelerator] for p in pools], np.int64),
        tflops=np.array([tf[p.accelerator] for p in pools]),
        machines=np.array([p.machines for p in pools], np.int64),
        cards_per_machine=np.array([p.cards_per_machine for p in pools], np.int64),
        price=np.array([float(p.price_per_card_hour) for p in pools]),
        price_fen=np.array([int(p.price_per_card_hour * 100) for p in pools], np.int64),
        power_w=np.array([p.card_power_w for p in pools]),
        pue=np.array([p.pue for p in pools]),
        carbon=prov.carbon_g_per_kwh[province],
    )


def load_federation(path: Path) -> Federation:
    """Read a federation JSON file (format in docs/simulator.md)."""
    try:
        raw = json.loads(path.read_text())
        return build(FederationIn.model_validate(raw))
    except OSError as exc:
        raise InvalidInput(f"cannot read topology {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"topology {path} is not JSON: {exc.msg} at line {exc.lineno}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(f"topology {path}: {where}: {err['msg']}") from exc


def national_spec(
    pools: int = 100_000, regional: int = 30, industry: int = 300, seed: int = 0
) -> FederationIn:
    """The reference national federation as a file would describe it (seeded)."""
    if not 1 <= regional <= MAINLAND - 1 or industry < 1 or pools < industry:
        raise InvalidInput("need 1-30 regional nodes and at least one pool per industry node")
    rng = np.random.default_rng(seed)
    prov = provinces()
    codes = [c for c in prov.codes[:MAINLAND] if c != NATIONAL_CODE][:regional]
    nodes = [NodeIn(code="cn", kind="national", region=NATIONAL_CODE)]
    nodes += [NodeIn(code=f"cn.{c}", kind="regional", region=c, parent="cn") for c in codes]
    homes = [NATIONAL_CODE, *codes]  # Beijing's industry nodes hang off the national node
    ind_region = [homes[i % len(homes)] for i in range(industry)]
    for i, region in enumerate(ind_region):
        parent = "cn" if region == NATIONAL_CODE else f"cn.{region}"
        nodes.append(
            NodeIn(code=f"{parent}.i{i:03d}", kind="industry", region=region, parent=parent)
        )
    shares = np.array([m[1] for m in MODEL_MIX])
    kinds = rng.choice(len(MODEL_MIX), size=pools, p=shares / shares.sum())
    sizes = np.array([m for m, _ in MACHINES_MIX])
    weights = np.array([w for _, w in MACHINES_MIX])
    machines = rng.choice(sizes, size=pools, p=weights / weights.sum())
    owners = np.sort(rng.integers(0, industry, size=pools))
    owners[:industry] = np.arange(industry)  # every industry node owns at least one pool
    out = []
    for j in range(pools):
        model, _, price, power = MODEL_MIX[int(kinds[j])]
        i = int(owners[j])
        region = ind_region[i]
        west = region in WEST
        node = nodes[1 + regional + i].code
        out.append(
            PoolIn(
                pool_id=f"{node}/p{j:06d}",
                node=node,
                region=region,
                accelerator=model,
                cards_per_machine=4 if model in FOUR_CARD_MODELS else CARDS_PER_MACHINE,
                machines=int(machines[j]),
                price_per_card_hour=(price * (WEST_PRICE_FACTOR if west else 1)).quantize(
                    Decimal("0.01")
                ),
                card_power_w=power,
                pue=PUE["west" if west else "east"],
            )
        )
    return FederationIn(nodes=tuple(nodes), pools=tuple(out))


def parse_national(name: str) -> int | None:
    """Pools asked for by ``national`` (100,000) or ``national:N``; None for other names."""
    if name == "national":
        return 100_000
    count = name.removeprefix("national:")
    if count == name:
        return None
    if not count.isdigit() or not 300 <= int(count) <= 1_000_000:
        raise InvalidInput(f"--topology national:N needs N between 300 and 1000000, got {count!r}")
    return int(count)


def national_topology(
    pools: int = 100_000, regional: int = 30, industry: int = 300, seed: int = 0
) -> Federation:
    """The reference national federation, laid out for the engine."""
    return build(national_spec(pools, regional, industry, seed))
