"""Evaluation options, validated once, in one place.

Every field here changes a reported figure, so all of them are written into the report's
``config`` section; options that only change speed or memory (the memory budget) live elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from opis_cli.errors import ConfigError

METRICS = ("cosine", "l2")
EPS_CONTRASTS = ("rest", "best")
DEFAULT_CALIB_FAR = (0.001, 0.1)
DEFAULT_MEMORY_BUDGET = 1 << 30  # bytes of block working memory


MAX_THRESHOLDS = 100_000


@dataclass(frozen=True)
class EvalConfig:
    """Options that define the figures of an evaluation (see docs/definitions.md).

    Exactly one of ``calib`` (distance units) and ``calib_far`` (pooled FAR bounds) is used;
    when ``calib`` is given it wins, otherwise ``calib_far`` applies (default 0.001:0.1).
    """

    metric: str = "cosine"
    normalize: bool = True
    calib: tuple[float, float] | None = None
    calib_far: tuple[float, float] = DEFAULT_CALIB_FAR
    thresholds: int = 101
    beta: float = 1.0
    epsilon: float = 0.1
    eps_contrast: str = "rest"
    k: tuple[int, ...] = field(default=(1,))
    eer: bool = False  # also the EER, pooled and per class, and full-span ROC/DET curves
    retrieval: bool = False  # also MAP@R and R-precision, overall and per class

    def __post_init__(self) -> None:
        # Normalise k once so equal configs compare (and serialise) equally.
        ks = tuple(sorted({int(v) for v in self.k})) if self.k else (1,)
        object.__setattr__(self, "k", ks)
        if self.calib is not None:
            object.__setattr__(self, "calib", (float(self.calib[0]), float(self.calib[1])))
        object.__setattr__(self, "calib_far", (float(self.calib_far[0]), float(self.calib_far[1])))
        self._validate()

    @property
    def calibration_mode(self) -> str:
        return "distance" if self.calib is not None else "far"

    def metric_span(self) -> tuple[float, float]:
        """The range every distance of the chosen metric lies in."""
        if self.metric == "l2" and not self.normalize:
            return (0.0, math.inf)
        return (0.0, 2.0)

    def _validate(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.metric == "cosine" and not self.normalize:
            raise ConfigError("--no-normalize applies to --metric l2 only (cosine distance is defined on unit vectors)")
        if self.eps_contrast not in EPS_CONTRASTS:
            raise ConfigError(f"unknown eps contrast {self.eps_contrast!r}; choose rest or best")
        if not (isinstance(self.thresholds, int) and self.thresholds >= 2):
            raise ConfigError(f"--thresholds must be an integer >= 2, got {self.thresholds!r}")
        if self.thresholds > MAX_THRESHOLDS:
            # Checked before any grid exists: a grid of 10^8 values alone is 800 MB, and steps that
            # fine are below what float32 distances resolve anyway.
            raise ConfigError(f"--thresholds must be at most {MAX_THRESHOLDS:,}, got {self.thresholds:,}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"--beta must be a positive number, got {self.beta!r}")
        if not (0.0 < self.epsilon < 1.0):
            raise ConfigError(f"--epsilon must lie in (0, 1), got {self.epsilon!r}")
        if any(v < 1 for v in self.k):
            raise ConfigError(f"--k values must be >= 1, got {list(self.k)}")
        if self.calib is not None:
            lo, hi = self.calib
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ConfigError(f"--calib bounds must be finite numbers, got {lo}:{hi}")
            if lo >= hi:
                raise ConfigError(f"--calib needs LO < HI, got {lo:g}:{hi:g}")
            span_lo, span_hi = self.metric_span()
            if lo < span_lo or hi > span_hi:
                raise ConfigError(
                    f"--calib {lo:g}:{hi:g} lies outside the {self.metric} distance span "
                    f"[{span_lo:g}, {span_hi:g}]"
                )
        else:
            lo, hi = self.calib_far
            if not (0.0 < lo < 1.0 and 0.0 < hi < 1.0):
                raise ConfigError(f"--calib-far bounds must lie in (0, 1), got {lo:g}:{hi:g}")
            if lo >= hi:
                raise ConfigError(f"--calib-far needs LO < HI, got {lo:g}:{hi:g}")

    def to_dict(self) -> dict:
        """The figure-defining options, in a fixed order, for the report's ``config``."""
        out: dict = {
            "metric": self.metric,
            "normalize": self.normalize,
            "calibration_mode": self.calibration_mode,
        }
        if self.calib is not None:
            out["calib"] = [self.calib[0], self.calib[1]]
        else:
            out["calib_far"] = [self.calib_far[0], self.calib_far[1]]
        out.update(
            thresholds=self.thresholds,
            beta=self.beta,
            epsilon=self.epsilon,
            eps_contrast=self.eps_contrast,
            k=list(self.k),
        )
        if self.eer:  # written only when asked for: reports without them stay as they were
            out["eer"] = True
        if self.retrieval:
            out["retrieval"] = True
        return out


def parse_range(text: str, option: str) -> tuple[float, float]:
    """Parse ``LO:HI`` into two floats, with a message naming the option on failure."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ConfigError(f"{option} expects LO:HI (e.g. 0.1:0.9), got {text!r}")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"{option} expects two numbers LO:HI, got {text!r}") from None
    return lo, hi


_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30}


def parse_memory_size(text: str) -> int:
    """Parse a memory size like ``512M``, ``2G`` or ``1073741824`` into bytes (binary units)."""
    s = text.strip().upper().replace(" ", "")
    num = s.rstrip("KMGIB")
    unit = s[len(num):]
    try:
        value = float(num)
    except ValueError:
        raise ConfigError(f"--memory-budget expects a size like 512M or 2G, got {text!r}") from None
    if unit not in _SIZE_UNITS or not math.isfinite(value):
        raise ConfigError(f"--memory-budget expects a size like 512M or 2G, got {text!r}")
    if value * _SIZE_UNITS[unit] > 1 << 50:  # a petabyte: no machine has it, and it would overflow sizes
        raise ConfigError(f"--memory-budget {text} is more memory than any machine has; give a size like 2G")
    size = int(value * _SIZE_UNITS[unit])
    if size < 16 << 20:
        raise ConfigError(f"--memory-budget must be at least 16M, got {text!r}")
    return size
