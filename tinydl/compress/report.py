"""What the compiler reports: one :class:`LayerReport` per layer and the
:class:`CompressionReport` totals (``text()`` renders them as a table)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

__all__ = ["LayerReport", "CompressionReport"]


@dataclass
class LayerReport:
    """What the compiler did to one layer (kind before and after, bytes, FLOPs, method, rank)."""
    index: int
    kind: str
    shape: str
    choice: str
    bytes_before: int
    bytes_after: int
    flops_before: int
    flops_after: int
    accuracy_after: float


@dataclass
class CompressionReport:
    """What the compiler chose for each layer, and the totals.  ``text()`` renders a table."""

    method: str
    budget: float
    data_aware: bool
    accuracy_before: float
    accuracy_after: float
    bytes_before: int
    bytes_after: int
    flops_before: int
    flops_after: int
    layers: List[LayerReport] = field(default_factory=list)
    profile: Optional[str] = None
    predicted_time_s: Optional[float] = None
    predicted_peak_bytes: Optional[int] = None
    targets: dict = field(default_factory=dict)
    criterion: str = "accuracy"
    quantize: Optional[str] = None
    val_lost: Optional[float] = None   # validation samples right before, wrong after
    val_flips: Optional[float] = None  # validation samples whose predicted class changed
    confidence: float = 0.0            # standard errors of the margin (0: the rate itself)
    val_gained: Optional[float] = None  # validation samples wrong before, right after

    @property
    def memory_reduction(self) -> float:
        """Bytes before over bytes after."""
        return self.bytes_before / max(self.bytes_after, 1)

    @property
    def flops_reduction(self) -> float:
        """FLOPs per sample before over after."""
        return self.flops_before / max(self.flops_after, 1)

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        d = asdict(self)
        d["memory_reduction"] = self.memory_reduction
        d["flops_reduction"] = self.flops_reduction
        return d

    def text(self) -> str:
        """The report as a human-readable table (one line per layer)."""
        rows = [("layer", "kind", "shape", "choice", "bytes before", "bytes after",
                 "FLOPs before", "FLOPs after", "val acc")]
        for r in sorted(self.layers, key=lambda r: r.index):
            rows.append((str(r.index), r.kind, r.shape, r.choice, f"{r.bytes_before:,}",
                         f"{r.bytes_after:,}", f"{r.flops_before:,}", f"{r.flops_after:,}",
                         f"{100 * r.accuracy_after:.2f}%"))
        rows.append(("total", "", "", "", f"{self.bytes_before:,}", f"{self.bytes_after:,}",
                     f"{self.flops_before:,}", f"{self.flops_after:,}",
                     f"{100 * self.accuracy_after:.2f}%"))
        w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w[i]) if i < 4 else c.rjust(w[i]) for i, c in enumerate(r))
                 for r in rows]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append(f"method {self.method} ({'data-aware' if self.data_aware else 'weights only'}"
                     f"{', ' + self.quantize if self.quantize else ''}), criterion "
                     f"{self.criterion}, budget {100 * self.budget:.2f} points: validation "
                     f"accuracy "
                     f"{100 * self.accuracy_before:.2f}% -> {100 * self.accuracy_after:.2f}%, "
                     f"memory {self.memory_reduction:.1f}x smaller, FLOPs "
                     f"{self.flops_reduction:.1f}x fewer")
        if self.profile:
            lines.append(f"on {self.profile}: predicted {self.predicted_time_s:.4g} s per batch, "
                         f"runtime peak {self.predicted_peak_bytes:,} bytes"
                         + (f"; targets {self.targets}" if self.targets else ""))
        return "\n".join(lines)
