"""Split a pruning budget across groups in proportion to their ratios, exactly."""

from __future__ import annotations

import math
from typing import Mapping

from modprune.exceptions import UnreachableTargetError

__all__ = ["allocate"]


def allocate(
    sizes: Mapping[str, int],
    ratios: Mapping[str, float],
    want: int,
    cap: float = 1.0,
    limits: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """How many elements to remove from each group so that the total is exactly ``want``.

    Group ``g`` loses about ``min(cap, s * ratios[g]) * sizes[g]``, with one scale ``s`` found by
    bisection, so the ratios keep their proportions until a group hits ``cap``; what a capped group
    cannot take is redistributed to the others. Rounding is settled by largest remainder.

    :param limits: the most each group may lose (default ``floor(cap * sizes[g])``); a group's
        limit should not exceed ``cap * sizes[g]``.
    :raises UnreachableTargetError: when even every group at its limit removes fewer than ``want``.
    """
    active = {g: r for g, r in ratios.items() if r > 0 and sizes.get(g, 0) > 0}
    if limits is None:
        limits = {g: math.floor(cap * sizes[g]) for g in active}
    else:
        limits = {g: min(int(limits[g]), sizes[g]) for g in active}
    if want <= 0:
        return {g: 0 for g in sizes}
    if sum(limits.values()) < want:
        raise UnreachableTargetError(
            f"cannot remove {want} elements: the unprotected groups hold at most {sum(limits.values())} "
            f"removable ones (cap {cap})",
            want,
        )

    def total(scale: float) -> float:
        return sum(min(cap, scale * r) * sizes[g] for g, r in active.items())

    lo, hi = 0.0, cap / min(active.values())
    for _ in range(200):
        mid = (lo + hi) / 2
        if total(mid) < want:
            lo = mid
        else:
            hi = mid
    exact = {g: min(cap, hi * r) * sizes[g] for g, r in active.items()}
    counts = {g: min(limits[g], math.floor(v)) for g, v in exact.items()}
    missing = want - sum(counts.values())
    order = sorted(active, key=lambda g: (-(exact[g] - math.floor(exact[g])), g))
    while missing > 0:
        progressed = False
        for g in order:
            if missing and counts[g] < limits[g]:
                counts[g] += 1
                missing -= 1
                progressed = True
        if not progressed:  # pragma: no cover - excluded by the limits check above
            break
    return {g: counts.get(g, 0) for g in sizes}
