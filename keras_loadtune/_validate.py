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


def int_at_least(name: str, value: Any, low: int, *, none_ok: bool = False) -> int | None:
    """`value` if it is an int (not a bool) >= `low` (or `None` when `none_ok`).

    Args:
        name: What is checked, e.g. `"TunerSettings: max_trials"`.
        value: The value.
        low: The smallest allowed value.
        none_ok: Accept `None` too.

    Raises:
        ValueError: Otherwise.

    Example:

    >>> int_at_least("n", 3, 1)
    3
    """
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = f"an int >= {low}" + (" or None" if none_ok else "")
        raise ValueError(f"{name} must be {what}; got {value!r}.")
    return value


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


def fraction(name: str, value: Any, *, open_low: bool = False, open_high: bool = False) -> float:
    """`value` if it is a number in [0, 1] (bounds made open by `open_low` / `open_high`).

    Args:
        name: What is checked.
        value: The value.
        open_low: Exclude 0.
        open_high: Exclude 1.

    Raises:
        ValueError: Otherwise.

    Example:

    >>> fraction("wait_threshold", 0.05, open_low=True)
    0.05
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > 0 if open_low else value >= 0) and (value < 1 if open_high else value <= 1)
    if not ok:
        low = "(0" if open_low else "[0"
        high = "1)" if open_high else "1]"
        raise ValueError(f"{name} must be a number in {low}, {high}; got {value!r}.")
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


__all__ = ["check_instance", "fraction", "int_at_least", "seconds_or_none"]
