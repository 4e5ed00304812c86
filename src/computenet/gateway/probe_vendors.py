"""Accelerator probing beyond NVIDIA: Huawei Ascend, Cambricon MLU and Hygon DCU.

Each vendor ships its own management tool, and each prints a different table:

- Huawei Ascend: ``npu-smi info``, a boxed table with two rows per chip.
- Cambricon: ``cnmon``, a boxed table with two rows per card.
- Hygon: ``hy-smi --showproductname --showmeminfo vram --json`` (a rocm-smi derivative),
  falling back to the same ``rocm-smi`` query on older DTK installs.

Tools run through an injectable ``run`` callable (the same one :mod:`probe` uses), so tests
replay recorded outputs. An absent or failing tool (``run`` returns None) means no devices;
output that cannot be parsed raises :class:`InvalidInput` naming the tool and the line, because
declaring the wrong accelerators is worse than not starting. Formats and the recordings the
tests replay are described in ``docs/probing.md`` and ``tests/gateway/fixtures/README.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from computenet.errors import InvalidInput

Runner = Callable[[list[str]], str | None]

NPU_SMI_INFO: list[str] = ["npu-smi", "info"]
CNMON: list[str] = ["cnmon"]
HY_SMI_QUERY: list[str] = ["hy-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
ROCM_SMI_QUERY: list[str] = ["rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json"]
# The variable each vendor's runtime reads to restrict a process to some devices; it takes
# the ``index`` of :class:`AcceleratorDevice`. (DTK is HIP-based, hence HIP's variable.)
VISIBLE_DEVICES_ENV: dict[str, str] = {
    "nvidia": "CUDA_VISIBLE_DEVICES",
    "huawei": "ASCEND_RT_VISIBLE_DEVICES",
    "cambricon": "MLU_VISIBLE_DEVICES",
    "hygon": "HIP_VISIBLE_DEVICES",
}
# rocm-smi also runs on AMD hosts; only cards whose vendor names Hygon are taken from it.
# Recordings show both "Chengdu Haiguang IC Design Co., Ltd." and "Chengdu C-3000 IC Design".
_HYGON_VENDOR_MARKERS: tuple[str, ...] = ("haiguang", "hygon", "c-3000")
_HYGON_OUTPUT_MARKERS: tuple[str, ...] = (
    *_HYGON_VENDOR_MARKERS, "dcu[", "hcu[", "dcu use", "hcu use",
)  # fmt: skip

_NON_SLUG = re.compile(r"[^a-z0-9]+")
_USAGE = re.compile(r"(\d+)\s*/\s*(\d+)")  # "3379 / 65536", "26838/ 32768"
_CNMON_MEMORY = re.compile(r"^(\d+)\s*MiB\s*/\s*(\d+)\s*MiB$")  # "0 MiB/ 23374 MiB"
_NPU_SMI_VERSION = re.compile(r"Version:\s*(\S+)")
_CNMON_DRIVER = re.compile(r"Driver\s+v?(\d\S*)")
_DCU_LINE = re.compile(r"^\s*(?:HCU|DCU|GPU)\s*\[\s*(\d+)\s*\]\s*:(.*)$")
_DRIVER_LINE = re.compile(r"^\s*Driver\s+version\s*:\s*(\S+)", re.IGNORECASE)
_CARD_KEY = re.compile(r"^card(\d+)$")


@dataclass(frozen=True)
class AcceleratorDevice:
    """One accelerator device (an Ascend chip, an MLU card, a DCU) as its tool reports it.

    ``index`` is the number the vendor runtime's visible-devices variable takes (see
    :data:`VISIBLE_DEVICES_ENV`); ``name`` is the model exactly as printed; ``model`` is its
    catalog id, or ``<vendor>-unknown-<slug>`` when the catalog does not know the name.
    """

    vendor: str
    index: int
    name: str
    model: str
    memory_mib: int
    driver_version: str = ""
    bus_id: str = ""


def catalog_model(vendor: str, name: str) -> str:
    """The catalog id for a device name printed by ``vendor``'s tool, or an ``unknown`` id.

    A catalog hit from another vendor is not trusted (a short name could collide), and an
    empty name (hy-smi sometimes prints an empty ``Card Series``) becomes ``<vendor>-unknown``.
    """
    from computenet.model.catalog import load_catalog  # lazy, as in probe.py

    info = load_catalog().resolve(name)
    if info is not None and info.vendor == vendor:
        return info.model
    slug = _NON_SLUG.sub("-", name.lower()).strip("-").removeprefix(f"{vendor}-")
    return f"{vendor}-unknown-{slug}"[:64].rstrip("-") if slug else f"{vendor}-unknown"


def group_by_model(
    devices: Iterable[AcceleratorDevice],
) -> dict[tuple[str, str], list[AcceleratorDevice]]:
    """Devices grouped by ``(vendor, model)``, in first-seen order (one pool per group)."""
    groups: dict[tuple[str, str], list[AcceleratorDevice]] = {}
    for device in devices:
        groups.setdefault((device.vendor, device.model), []).append(device)
    return groups


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _is_border(line: str) -> bool:
    text = line.strip()
    return bool(text) and text[0] in "+|" and set(text) <= set("+-=|")


def _int(value: str, tool: str, line: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(
            f"{tool} line {line.strip()!r}: {field} {value!r} is not a number"
        ) from None


def _need_text(text: str, tool: str) -> None:
    if not text.strip():
        raise InvalidInput(f"{tool} printed nothing; expected its device table")


def _table_rows(text: str, is_end: Callable[[str], bool]) -> list[list[str]]:
    """The body rows after the header, grouped into the blocks that borders separate.

    Parsing stops at the first line that ``is_end`` accepts (a process table) or that is not
    part of a boxed table at all (a shell prompt, a URL).
    """
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            continue
        if _is_border(line):
            if blocks[-1]:
                blocks.append([])
        elif line.lstrip().startswith("|") and not is_end(line):
            blocks[-1].append(line)
        else:
            break
    return [block for block in blocks if block]


def _first_line(text: str) -> str:
    return next((raw.strip() for raw in text.splitlines() if raw.strip()), "")[:120]


def _headers(
    text: str, tool: str, first: Callable[[list[str]], bool], second: Callable[[list[str]], bool]
) -> tuple[list[str], list[str], list[str], str]:
    """Find the two header rows of a boxed table.

    Returns the lines above the headers (the banner), the cells of both header rows, and the
    text below them (the body).
    """
    lines = text.splitlines()
    top = next(
        (
            i
            for i, line in enumerate(lines)
            if line.lstrip().startswith("|") and first(_cells(line))
        ),
        None,
    )
    if top is None:
        raise InvalidInput(f"{tool}: no table header found (first line {_first_line(text)!r})")
    below = next((i for i in range(top + 1, len(lines)) if lines[i].lstrip().startswith("|")), None)
    if below is None or not second(_cells(lines[below])):
        raise InvalidInput(f"{tool}: header line {lines[top].strip()!r} lacks its second line")
    return lines[:top], _cells(lines[top]), _cells(lines[below]), "\n".join(lines[below + 1 :])


def _pairs(blocks: list[list[str]], tool: str, what: str) -> list[tuple[str, str]]:
    """Check that every block holds exactly two rows, as both vendors print them."""
    for block in blocks:
        if len(block) != 2:
            extra = f" followed by {len(block) - 1} more rows" if len(block) > 2 else " alone"
            raise InvalidInput(f"{tool}: expected {what}, got {block[0].strip()!r}{extra}")
    return [(block[0], block[1]) for block in blocks]


def parse_npu_smi_info(text: str) -> list[AcceleratorDevice]:
    """Parse ``npu-smi info``: one device per chip, in the order listed.

    Each chip has a row ``| <npu> <name> | <health> | power temp hugepages |`` and a row
    ``| <chip> [<device or phy-id>] | <bus-id> | aicore memory [hbm] |``. Memory is the HBM
    total when the table has an HBM column with a non-zero total (910 series), else the
    Memory-Usage total (310 series). ``index`` is the chip's position in the listing, the
    logical id that ``ASCEND_RT_VISIBLE_DEVICES`` takes. The process table is ignored.
    """
    tool = "npu-smi info"
    _need_text(text, tool)
    banner, _, chip_header, body = _headers(
        text,
        tool,
        lambda c: len(c) >= 2 and c[0].startswith("NPU") and "Health" in c[1],
        lambda c: len(c) >= 3 and c[0].startswith("Chip"),
    )
    id_columns = len(chip_header[0].split())  # "Chip", "Chip Device" or "Chip Phy-ID"
    has_hbm = "HBM-Usage" in chip_header[2]
    match = next((m for line in banner if (m := _NPU_SMI_VERSION.search(line))), None)
    driver = match.group(1) if match else ""

    devices: list[AcceleratorDevice] = []
    blocks = _table_rows(body, lambda line: "Process id" in line or "No running processes" in line)
    for npu_row, chip_row in _pairs(blocks, tool, "a name row and a chip row"):
        npu_cells, chip_cells = _cells(npu_row), _cells(chip_row)
        if len(npu_cells) < 3 or len(npu_cells[0].split()) < 2:
            raise InvalidInput(f"{tool} line {npu_row.strip()!r}: expected '| <npu> <name> | ...'")
        npu_id, *name_words = npu_cells[0].split()
        _int(npu_id, tool, npu_row, "NPU id")
        ids = chip_cells[0].split()
        if len(chip_cells) < 3 or len(ids) != id_columns:
            raise InvalidInput(
                f"{tool} line {chip_row.strip()!r}: expected {id_columns} id(s) under "
                f"{chip_header[0]!r}, then bus id and usage"
            )
        for value in ids:
            _int(value, tool, chip_row, "chip id")
        usages = _USAGE.findall(chip_cells[2])
        if len(usages) != (2 if has_hbm else 1):
            raise InvalidInput(f"{tool} line {chip_row.strip()!r}: expected 'used / total' figures")
        hbm = int(usages[-1][1]) if has_hbm else 0
        memory = hbm if hbm > 0 else int(usages[0][1])
        name = " ".join(name_words)
        model = catalog_model("huawei", name)
        devices.append(
            AcceleratorDevice("huawei", len(devices), name, model, memory, driver, chip_cells[1])
        )
    return devices


def parse_cnmon(text: str) -> list[AcceleratorDevice]:
    """Parse the summary table of plain ``cnmon`` (CNMON 4.x and 5.x layouts).

    Each card has a row ``| <card> <vf> <name> <firmware> | <bus-id or inited driver> | ... |``
    and a row ``| fan temp power | <used> MiB/ <total> MiB | ... |``. The driver version comes
    from the banner (``Driver v5.10.22``) or, on CNMON 4.x, from the card row. ``index`` is the
    card number, which ``MLU_VISIBLE_DEVICES`` takes. The process table is ignored.
    """
    tool = "cnmon"
    _need_text(text, tool)
    banner, header, _, body = _headers(
        text,
        tool,
        lambda c: len(c) >= 2 and "Card" in c[0] and "Name" in c[0],
        lambda c: len(c) >= 2 and "Memory-Usage" in c[1],
    )
    match = next((m for line in banner if (m := _CNMON_DRIVER.search(line))), None)
    banner_driver = match.group(1) if match else ""

    devices: list[AcceleratorDevice] = []
    blocks = _table_rows(body, lambda line: "Processes:" in line)
    for card_row, stats_row in _pairs(blocks, tool, "a card row and a memory row"):
        card_cells, stats_cells = _cells(card_row), _cells(stats_row)
        words = card_cells[0].split()
        if len(card_cells) < 2 or len(words) < 3:
            raise InvalidInput(
                f"{tool} line {card_row.strip()!r}: expected '| <card> <vf> <name> ...'"
            )
        index = _int(words[0], tool, card_row, "card number")
        rest = words[2:]
        if len(rest) > 1 and rest[-1].startswith("v") and any(ch.isdigit() for ch in rest[-1]):
            rest = rest[:-1]  # the firmware version
        memory = _CNMON_MEMORY.match(stats_cells[1]) if len(stats_cells) >= 2 else None
        if memory is None:
            raise InvalidInput(
                f"{tool} line {stats_row.strip()!r}: expected '<used> MiB/ <total> MiB'"
            )
        bus_id = card_cells[1] if "Bus-Id" in header[1] else ""
        driver = banner_driver
        if not driver and "Driver" in header[1] and card_cells[1].split():
            driver = card_cells[1].split()[-1].removeprefix("v")  # CNMON 4.x: "On  v4.20.11"
        name = " ".join(rest)
        model = catalog_model("cambricon", name)
        devices.append(
            AcceleratorDevice("cambricon", index, name, model, int(memory.group(2)), driver, bus_id)
        )
    return devices


def _get(fields: dict[str, str], *keys: str) -> str | None:
    folded = {k.strip().casefold(): v for k, v in fields.items()}
    return next((folded[k] for k in keys if k in folded), None)


def _dcu_device(index: int, fields: dict[str, str], tool: str, driver: str) -> AcceleratorDevice:
    where = f"card{index}"
    mib, byte = _get(fields, "vram total memory (mib)"), _get(fields, "vram total memory (b)")
    if mib is None and byte is None:
        raise InvalidInput(
            f"{tool} {where}: no 'vram Total Memory' value (was --showmeminfo vram given?)"
        )
    value = (mib if mib is not None else byte) or ""
    try:
        memory = int(value) if mib is not None else int(value) // (1024 * 1024)
    except ValueError:
        raise InvalidInput(f"{tool} {where}: vram Total Memory {value!r} is not a number") from None
    name = (_get(fields, "card series") or "").strip()
    return AcceleratorDevice("hygon", index, name, catalog_model("hygon", name), memory, driver)


def _is_hygon(fields: dict[str, str]) -> bool:
    vendor = (_get(fields, "card vendor") or "").casefold()
    return any(marker in vendor for marker in _HYGON_VENDOR_MARKERS)


def parse_dcu_smi(
    text: str, *, tool: str = "hy-smi", hygon_only: bool = False
) -> list[AcceleratorDevice]:
    """Parse ``hy-smi``/``rocm-smi`` ``--showproductname --showmeminfo vram``, JSON or text.

    JSON (``--json``) maps ``card<N>`` to fields; text has lines ``DCU[N] : <field>: <value>``
    (``HCU[N]`` and ``GPU[N]`` too). Text around the JSON object is ignored, since hy-smi has
    been seen to print other lines with it. Memory is ``vram Total Memory (MiB)`` (or ``(B)``,
    as AMD's rocm-smi prints). With ``hygon_only`` (for rocm-smi, which also runs on AMD
    hosts) cards whose ``Card Vendor`` does not name Hygon are skipped.
    """
    _need_text(text, tool)
    cards: dict[int, dict[str, str]] = {}
    driver = ""
    if "{" in text:
        try:
            data = json.loads(text[text.index("{") : text.rindex("}") + 1])
        except ValueError as exc:
            raise InvalidInput(f"{tool}: output is not valid JSON ({exc})") from None
        for key, fields in data.items():
            card = _CARD_KEY.match(str(key))
            if card and not isinstance(fields, dict):
                raise InvalidInput(f"{tool}: {key!r} is not an object of fields")
            if not isinstance(fields, dict):
                continue
            values = {str(k): str(v) for k, v in fields.items()}
            if card:
                cards[int(card.group(1))] = values
            else:  # "system" holds driver details when --showdriverversion is given
                driver = _get(values, "driver version") or driver
    else:
        for line in text.splitlines():
            if found := _DRIVER_LINE.match(line):
                driver = found.group(1)
            if not (found := _DCU_LINE.match(line)):
                continue
            key, sep, value = found.group(2).partition(":")
            if not sep:
                raise InvalidInput(f"{tool} line {line.strip()!r}: expected '<field>: <value>'")
            cards.setdefault(int(found.group(1)), {})[key.strip()] = value.strip()
        if not cards:
            raise InvalidInput(
                f"{tool}: no 'DCU[N] : ...' lines (first line {_first_line(text)!r})"
            )
    return [
        _dcu_device(index, fields, tool, driver)
        for index, fields in sorted(cards.items())
        if not hygon_only or _is_hygon(fields)
    ]


def probe_accelerators(run: Runner) -> list[AcceleratorDevice]:
    """Run each vendor's tool through ``run`` and return every device found.

    A tool that is absent or fails (``run`` returns None) contributes nothing. ``rocm-smi`` is
    asked only when ``hy-smi`` gives nothing, and its output is parsed only when it mentions
    Hygon, so an AMD host (not probed yet) is neither misread nor refused.
    """
    devices: list[AcceleratorDevice] = []
    if (out := run(NPU_SMI_INFO)) is not None:
        devices += parse_npu_smi_info(out)
    if (out := run(CNMON)) is not None:
        devices += parse_cnmon(out)
    if (out := run(HY_SMI_QUERY)) is not None:
        devices += parse_dcu_smi(out, tool="hy-smi")
    elif (out := run(ROCM_SMI_QUERY)) is not None and any(
        marker in out.casefold() for marker in _HYGON_OUTPUT_MARKERS
    ):
        devices += parse_dcu_smi(out, tool="rocm-smi", hygon_only=True)
    return devices
