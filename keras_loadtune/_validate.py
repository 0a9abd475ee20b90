"""Argument checks with one wording: `"<where>: <arg> must be <what>; got <value>."`.

Every public constructor checks its arguments at the call, so a wrong value fails
where the user wrote it and says what would be accepted.

Example:

>>> int_at_least("LoaderConfig: workers", 0, 1)
Traceback (most recent call last):
    ...
ValueError: LoaderConfig: workers must be an int >= 1; got 0.
"""

from __future__ import annotations

from typing import Any


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type.

    A `TypeError`, and also a `ValueError` for callers of versions that raised that.
    """


def int_at_least(name: str, value: Any, low: int, *, none_ok: bool = False) -> int | None:
    """`value` if it is an int (not a bool) >= `low` (or `None` when `none_ok`).

    Args:
        name: What is checked, e.g. `"TunerSettings.max_trials"`.
        value: The value.
        low: The smallest allowed value.
        none_ok: Accept `None` too.

    Raises:
        ArgumentTypeError: Not an int (a `TypeError` and a `ValueError`).
        ValueError: Smaller than `low`.

    Example:

    >>> int_at_least("n", 3, 1)
    3
    """
    if value is None and none_ok:
        return None
    what = f"an int >= {low}" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be {what}; got {value!r} ({type(value).__name__}).")
    if value < low:
        raise ValueError(f"{name} must be {what}; got {value!r}.")
    return value


def number_in(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    closed: bool = False,
    none_ok: bool = False,
) -> float | None:
    """`value` if it is a number in `(low, high)` (`[low, high]` when `closed`).

    Args:
        name: What is checked.
        value: The value.
        low: Lower bound.
        high: Upper bound.
        closed: Include the bounds.
        none_ok: Accept `None` too.

    Raises:
        ArgumentTypeError: Not a number.
        ValueError: Out of the interval.

    Example:

    >>> number_in("wait_threshold", 0.05, 0.0, 1.0)
    0.05
    """
    if value is None and none_ok:
        return None
    bounds = f"[{low}, {high}]" if closed else f"({low}, {high})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentTypeError(
            f"{name} must be a number in {bounds}; got {value!r} ({type(value).__name__})."
        )
    if not (low <= value <= high if closed else low < value < high):
        raise ValueError(f"{name} must be in {bounds}; got {value!r}.")
    return float(value)


def seconds_or_none(name: str, value: Any) -> float | None:
    """`value` if it is `None` or a positive number of seconds.

    Args:
        name: What is checked.
        value: The value.

    Raises:
        ValueError: Otherwise.

    Example:

    >>> seconds_or_none("timeout", 2.5)
    2.5
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds or None; got {value!r}.")
    return float(value)


def check_instance(name: str, value: Any, cls: type) -> None:
    """Raises TypeError unless `value` is a `cls`.

    Args:
        name: What is checked.
        value: The value.
        cls: The expected class.

    Raises:
        TypeError: Otherwise.

    Example:

    >>> check_instance("settings", 1, int)
    """
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}; got {type(value).__name__}.")


__all__ = [
    "ArgumentTypeError",
    "check_instance",
    "int_at_least",
    "number_in",
    "seconds_or_none",
]
