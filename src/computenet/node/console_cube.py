"""The federation index summed per (node, province, health), for the console's federation
views, kept up to date incrementally.

Summing 100,000 JSON pool records takes seconds, and a large federation's index changes every
few seconds, so the sums are built once (in the background when the node starts) and then
follow the index: ``PoolIndex`` reports the CPIs each write changed, and the next reader
re-reads just those rows and moves their contribution. Every view (counters, provinces, the
node map, the tree's node list) and every node filter is then added up from a few thousand
cells.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select

from computenet.federation.index import PoolIndex
from computenet.store.db import Database
from computenet.store.tables_federation import FedPool

log = logging.getLogger(__name__)
CHUNK = 500  # CPIs per re-read of changed rows

_REGION = func.coalesce(FedPool.record[("spec", "region", "code")].as_string(), "11")
_MACHINES = func.coalesce(FedPool.record[("spec", "machines")].as_integer(), 1)
_CARDS = func.coalesce(FedPool.record[("spec", "accelerator", "count")].as_integer(), 0)
_CORES = func.coalesce(FedPool.record[("spec", "cpu_cores")].as_integer(), 0)
_COLUMNS = (FedPool.cpi, FedPool.owner, FedPool.url, FedPool.health, _REGION, _MACHINES, _CARDS,
            _CORES)  # fmt: skip


@dataclass(frozen=True)
class Share:
    """One pool's part of the sums."""

    owner: str
    url: str
    province: str  # GB/T 2260 first two digits
    health: str
    cards: int
    cpu_cores: int


@dataclass
class Cell:
    """Pools of one node in one province with one health."""

    pools: int = 0
    cards: int = 0
    cpu_cores: int = 0


def within(code: str, node: str | None) -> bool:
    """Whether node ``code`` is ``node`` or below it (always, without a node)."""
    return not node or code == node or code.startswith(node + ".")


@dataclass
class Cube:
    """The sums, and each pool's share so that a changed pool can be taken out again."""

    cells: dict[tuple[str, str, str], Cell] = field(default_factory=dict)
    providers: dict[str, Counter[str]] = field(default_factory=dict)  # node -> provider -> pools
    urls: dict[str, str] = field(default_factory=dict)
    shares: dict[str, Share] = field(default_factory=dict)

    def add(self, cpi: str, share: Share) -> None:
        """Count a pool in (taking out what it counted before)."""
        self.remove(cpi)
        self.shares[cpi] = share
        c = self.cells.setdefault((share.owner, share.province, share.health), Cell())
        c.pools += 1
        c.cards += share.cards
        c.cpu_cores += share.cpu_cores
        # A pool's provider is its CPI less the pool label.
        self.providers.setdefault(share.owner, Counter())[cpi.rsplit("/", 1)[0]] += 1
        self.urls[share.owner] = share.url

    def remove(self, cpi: str) -> None:
        """Take a pool out of the sums (nothing when it was not in)."""
        share = self.shares.pop(cpi, None)
        if share is None:
            return
        key = (share.owner, share.province, share.health)
        c = self.cells[key]
        c.pools -= 1
        c.cards -= share.cards
        c.cpu_cores -= share.cpu_cores
        if c.pools == 0:
            del self.cells[key]
        counts, provider = self.providers[share.owner], cpi.rsplit("/", 1)[0]
        counts[provider] -= 1
        if counts[provider] <= 0:
            del counts[provider]
        if not counts:
            del self.providers[share.owner]
            self.urls.pop(share.owner, None)

    def of(self, node: str | None) -> list[tuple[tuple[str, str, str], Cell]]:
        """The cells of ``node``'s subtree (every cell without a node)."""
        return [(k, c) for k, c in self.cells.items() if within(k[0], node)]


class LiveCube:
    """A ``Cube`` that follows one node's pool index."""

    def __init__(self, db: Database, index: PoolIndex) -> None:
        self.db = db
        self._lock = threading.Lock()  # one reader brings the cube up to date at a time
        self._dirty_lock = threading.Lock()
        self._dirty: set[str] = set()
        self._cube: Cube | None = None
        # Listen before the first full read, so that no change made during it is lost.
        index.on_change.append(self._mark)

    def _mark(self, cpis: list[str]) -> None:
        with self._dirty_lock:
            self._dirty.update(cpis)

    def _read(self, cpis: list[str] | None) -> list[tuple[str, Share]]:
        q = select(*_COLUMNS)
        if cpis is not None:
            q = q.where(FedPool.cpi.in_(cpis))
        with self.db.read() as s:
            return [
                (str(cpi), Share(str(owner), str(url), str(region)[:2], str(health),
                                 int(cards) * int(machines), int(cores) * int(machines)))
                for cpi, owner, url, health, region, machines, cards, cores in s.execute(q)
            ]  # fmt: skip

    def current(self) -> Cube:
        """The sums as of now: built on first use, then moved by the pools that changed."""
        with self._lock:
            if self._cube is None:
                with self._dirty_lock:
                    self._dirty.clear()  # the full read below sees every change so far
                cube = Cube()
                for cpi, read in self._read(None):
                    cube.add(cpi, read)
                self._cube = cube
            with self._dirty_lock:
                dirty, self._dirty = list(self._dirty), set()
            for i in range(0, len(dirty), CHUNK):
                chunk = dirty[i : i + CHUNK]
                found = dict(self._read(chunk))
                for cpi in chunk:
                    now = found.get(cpi)
                    if now is None:
                        self._cube.remove(cpi)
                    else:
                        self._cube.add(cpi, now)
            return self._cube


_LIVE: weakref.WeakKeyDictionary[PoolIndex, LiveCube] = weakref.WeakKeyDictionary()
_LIVE_LOCK = threading.Lock()


def live_cube(db: Database, index: PoolIndex) -> LiveCube:
    """The live cube of a node's index (one per index)."""
    with _LIVE_LOCK:
        cube = _LIVE.get(index)
        if cube is None:
            cube = _LIVE[index] = LiveCube(db, index)
        return cube


def warm(db: Database, index: PoolIndex) -> None:
    """Build the cube in a background thread (the node calls this as it starts), so that the
    first console visitor does not wait for a full read of a large index."""
    cube = live_cube(db, index)

    def build() -> None:
        try:
            cube.current()
        except Exception as exc:  # a node stopping at once: the first reader builds it
            log.info("console sums not built at start: %s", exc)

    threading.Thread(target=build, name="console-cube", daemon=True).start()
