"""Point labels that do not collide: a small deterministic placer for the few labelled points of
a plot (run names in the Pareto plot, the worst classes among operating points).

Each label, in the order given (most important first), takes the first of a fixed list of offsets
around its point, at growing distance, whose box overlaps neither a label already placed nor a
marker; a label moved beyond the nearest ring gets a thin leader line to its point. Boxes are
measured by the figure's own renderer, so the check is what is drawn. adjustText does the same
iteratively with forces; for a handful of labels a fixed candidate order is enough and gives the
same picture on every run. No matplotlib import here: the caller's axes carry it.
"""

from __future__ import annotations

import numpy as np

#: Offsets in points (dx, dy), ring by ring: right, left, above, below, then the diagonals.
_DIRECTIONS = ((1, 0.3), (-1, 0.3), (0, 1), (0, -1.4), (1, 1), (-1, 1), (1, -1.4), (-1, -1.4))
_RINGS = (6, 14, 24, 36, 50)


def place_labels(ax, xs, ys, texts, *, fontsize: float = 8, color=None, marker_pad: float = 4.0) -> list:
    """Annotate points (xs[i], ys[i]) (data coordinates) with ``texts[i]`` without overlaps where
    any candidate allows; returns the annotations (their boxes are checked by the tests)."""
    fig = ax.figure
    ax.get_xlim(), ax.get_ylim()  # settle autoscaling first: boxes are measured in the final layout
    renderer = fig.canvas.get_renderer()
    to_display = ax.transData.transform
    points = to_display(np.column_stack([xs, ys]))
    scale = fig.dpi / 72.0
    markers = [(px - marker_pad * scale, py - marker_pad * scale, px + marker_pad * scale, py + marker_pad * scale)
               for px, py in points]
    frame = ax.get_window_extent(renderer)
    frame = (frame.x0, frame.y0, frame.x1, frame.y1)
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for i, text in enumerate(texts):
        best = None
        for ring in _RINGS:
            for dx, dy in _DIRECTIONS:
                offset = (dx * ring, dy * ring)
                ann = ax.annotate(text, (xs[i], ys[i]), xytext=offset, textcoords="offset points", fontsize=fontsize,
                                  color=color, ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                  va="center", annotation_clip=False)
                box = ann.get_window_extent(renderer)
                rect = (box.x0, box.y0, box.x1, box.y1)
                # overlap with other labels and markers, and any part outside the axes (the labels
                # of the axes and the neighbouring panels live there)
                outside = (rect[2] - rect[0]) * (rect[3] - rect[1]) - _overlap(rect, frame)
                clash = sum(_overlap(rect, other) for other in placed + markers) + outside
                if best is None or clash < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (clash, ann, rect, ring)
                else:
                    ann.remove()
                if best[0] == 0:
                    break
            if best[0] == 0:
                break
        _, ann, rect, ring = best
        if ring > _RINGS[0]:  # moved away: a thin leader back to the point
            ax.annotate("", (xs[i], ys[i]), xytext=ann.get_position(), textcoords="offset points",
                        arrowprops=dict(arrowstyle="-", lw=0.5, color="#888888", shrinkA=0, shrinkB=3))
        placed.append(rect)
        out.append(ann)
    return out


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def overlapping_pairs(boxes) -> list[tuple[int, int]]:
    """Index pairs of boxes (x0, y0, x1, y1) that overlap (for tests and checks)."""
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if _overlap(boxes[i], boxes[j]) > 0]
