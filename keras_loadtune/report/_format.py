"""Small formatting helpers shared by the text, HTML and plot renderers (no third-party imports)."""

from __future__ import annotations

import math
from typing import Any

from keras_loadtune.config import LoaderConfig
from keras_loadtune.storage import redact_url as redact_url  # for the renderers


def is_number(value: Any) -> bool:
    """True for a finite real number (bools excluded)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def pct(fraction: float | None, *, digits: int = 0) -> str:
    """`0.613 -> "61%"`; tiny non-zero values read `"<1%"` instead of `"0%"`; `None -> "?"`."""
    if not is_number(fraction):
        return "?"
    value = 100.0 * float(fraction)  # type: ignore[arg-type]
    if digits == 0 and 0 < value < 0.5:
        return "<1%"
    return f"{value:.{digits}f}%"


def speedup(value: float | None) -> str:
    """`2.94 -> "2.9x"`; close to 1 keeps two decimals (`1.04 -> "1.04x"`)."""
    if not is_number(value):
        return "?"
    value = float(value)  # type: ignore[arg-type]
    return f"{value:.2f}x" if abs(value - 1.0) < 0.1 else f"{value:.1f}x"


def seconds(value: float | None) -> str:
    """`4.13 -> "4.1 s"`, `754 -> "12.6 min"`."""
    if not is_number(value):
        return "?"
    value = float(value)  # type: ignore[arg-type]
    if value >= 100:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def ms(value: float | None) -> str:
    """`0.0123 -> "12 ms"`, `2.5 -> "2.5 s"`."""
    if not is_number(value):
        return "?"
    value = float(value)  # type: ignore[arg-type]
    return f"{value * 1000:.0f} ms" if value < 1.0 else seconds(value)


def nbytes(value: float | None) -> str:
    """Human-readable byte count (`1536 -> "1.5 KiB"`)."""
    if not is_number(value):
        return "?"
    value = float(value)  # type: ignore[arg-type]
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover


def num(value: float | None, fmt: str = ".1f") -> str:
    """Format a number or return `"-"` when missing."""
    if not is_number(value):
        return "-"
    return format(float(value), fmt)  # type: ignore[arg-type]


def mib(value: float | None) -> str:
    """Bytes -> whole MiB, or `"-"`."""
    if not is_number(value):
        return "-"
    return f"{float(value) / 2**20:.0f}"  # type: ignore[arg-type]


def config(cfg: LoaderConfig | None) -> str:
    """`str(cfg)` or `"-"`."""
    return "-" if cfg is None else str(cfg)


def short_config(cfg: LoaderConfig) -> str:
    """Compact label for plot ticks: `"4T q8"` / `"4P q8"`."""
    return f"{cfg.workers}{'P' if cfg.use_multiprocessing else 'T'} q{cfg.max_queue_size}"


_MS_KEYS = {
    "produce_wall_s": "produce",
    "produce_cpu_s": "produce CPU",
    "step_compute_s": "compute",
}


def profile_line(profile: dict[str, float]) -> str:
    """One line summarising the pipeline profile (known keys first, in readable units)."""
    parts: list[str] = []
    for key, label in _MS_KEYS.items():
        if key in profile and is_number(profile[key]):
            unit = "/batch" if key.startswith("produce") else "/step"
            part = f"{label} {1000 * float(profile[key]):.1f} ms{unit}"
            probe = profile.get("probe_compute_s")
            if key == "step_compute_s" and is_number(probe):
                part += f" (the probe measured {1000 * float(probe):.1f})"  # type: ignore[arg-type]
            parts.append(part)
    if is_number(profile.get("cores")):
        parts.append(f"{float(profile['cores']):g} cores")
    if is_number(profile.get("batch_nbytes")):
        parts.append(f"batch {nbytes(profile['batch_nbytes'])}")
    known = {*_MS_KEYS, "cores", "batch_nbytes", "probe_compute_s"}
    for key in sorted(k for k in profile if k not in known):
        value = profile[key]
        parts.append(f"{key} {float(value):.3g}" if is_number(value) else f"{key} {value}")
    return ", ".join(parts)
