"""How much memory there is, and refusing work that would need more before it starts.

Two limits (docs/errors.md, "Memory"):

* ``--memory-budget`` bounds *block working memory*: what a pass allocates per block of pairs
  (panels, per-thread histograms). It changes speed, never a figure, so exceeding it is refused.
* the machine's available memory bounds *results* that must exist for the answer (per-class
  counts and curves, a loaded array, a report read back).
"""

from __future__ import annotations

import os
from pathlib import Path

from opis_cli.errors import ConfigError


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable of /proc/meminfo (else free physical
    pages), capped by the memory limit of the process's cgroup (a container or CI job is killed at
    its limit whatever the host has left). ``OPIS_AVAILABLE_MEMORY`` (a size: bytes, or 512M, 2G)
    overrides both, for tests of the refusals."""
    override = os.environ.get("OPIS_AVAILABLE_MEMORY")
    if override:
        from opis_cli.config import parse_memory_size

        try:
            return int(override) if override.strip().isdigit() else parse_memory_size(override)
        except ConfigError:
            raise ConfigError(f"OPIS_AVAILABLE_MEMORY must be a size like 2G, got {override!r}") from None
    have = _machine_available()
    limit = _cgroup_available()
    return have if limit is None else min(have, limit)


def _machine_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # unknown: do not refuse on a guess


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None  # "max" (no limit), or no such file


def _cgroup_available() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, else v1), counting inactive file
    cache as free, as the kernel reclaims it before killing anything."""
    for root, limit_name, usage_name, cache_key in (
            (Path("/sys/fs/cgroup"), "memory.max", "memory.current", "inactive_file"),
            (Path("/sys/fs/cgroup/memory"), "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")):
        limit, usage = _read_int(root / limit_name), _read_int(root / usage_name)
        if limit is None or usage is None or limit >= 1 << 60:
            continue
        cache = 0
        try:
            for line in (root / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, limit - usage + cache)
    return None


def gib(nbytes: float) -> str:
    """``1.5 GiB`` / ``640 MiB``: sizes in messages."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MiB"


def size_option(nbytes: float) -> str:
    """A --memory-budget value at least ``nbytes``: whole GiB from 1 GiB, else 64 MiB steps."""
    if nbytes >= 2**30:
        return f"{-(-int(nbytes) // 2**30)}G"
    return f"{max(1, -(-int(nbytes) // (64 << 20))) * 64}M"


def require(nbytes: float, *, what: str, budget: int | None = None, advice: str) -> None:
    """ConfigError unless ``nbytes`` fits ``budget`` (block working memory; None: not a block
    allocation) and the machine's available memory."""
    if budget is not None and nbytes > budget:
        raise ConfigError(f"{what} needs about {gib(nbytes)} of working memory, more than --memory-budget "
                          f"{gib(budget)}: {advice}")
    free = available_memory()
    if nbytes > free:
        raise ConfigError(f"{what} needs about {gib(nbytes)}, more than the {gib(free)} this machine has "
                          f"available: {advice}")


#: Per-class arrays of T + 1 cells that exist for the answer: the pass's two count arrays and
#: about eight float64 arrays of the curves built from them (TAR, TRR, utility and their kin).
RESULT_ARRAYS = 10
