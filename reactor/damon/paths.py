"""Where things live in the DAMON sysfs tree (reference/damon-sysfs.md §2.1).

reactor uses exactly one context per kdamond (the kernel allows 0 or 1), so a context
path needs only the kdamond index.
"""

from __future__ import annotations

from reactor.errors import KernelInterfaceError
from reactor.kernelfs import KernelFS

__all__ = (
    "ADMIN",
    "KDAMONDS",
    "NR_KDAMONDS",
    "attrs_dir",
    "context_dir",
    "goal_dir",
    "kdamond_dir",
    "numbered",
    "scheme_dir",
    "state_file",
    "target_dir",
)

ADMIN = "/sys/kernel/mm/damon/admin"
KDAMONDS = ADMIN + "/kdamonds"
NR_KDAMONDS = KDAMONDS + "/nr_kdamonds"


def kdamond_dir(k: int) -> str:
    """``kdamonds/<k>``."""
    return f"{KDAMONDS}/{k}"


def state_file(k: int) -> str:
    """``kdamonds/<k>/state``, where commands are written."""
    return kdamond_dir(k) + "/state"


def context_dir(k: int) -> str:
    """``kdamonds/<k>/contexts/0``: the one context reactor stages per kdamond."""
    return kdamond_dir(k) + "/contexts/0"


def attrs_dir(k: int) -> str:
    """``contexts/0/monitoring_attrs``."""
    return context_dir(k) + "/monitoring_attrs"


def target_dir(k: int, t: int) -> str:
    """``contexts/0/targets/<t>``."""
    return f"{context_dir(k)}/targets/{t}"


def scheme_dir(k: int, s: int) -> str:
    """``contexts/0/schemes/<s>``."""
    return f"{context_dir(k)}/schemes/{s}"


def goal_dir(k: int, s: int, g: int) -> str:
    """``schemes/<s>/quotas/goals/<g>``."""
    return f"{scheme_dir(k, s)}/quotas/goals/{g}"


def numbered(fs: KernelFS, path: str) -> list[int]:
    """Indices of the numbered child directories of ``path``, sorted (none if missing)."""
    try:
        names = fs.listdir(path)
    except KernelInterfaceError:
        return []
    return sorted(int(n) for n in names if n.isdigit())
