"""How ShopFlow writes one expectation: a GX expectation plus a stable rule name and a human reason.

Every expectation in ``expectations/`` carries ``meta = {"rule": <name>, "reason": <text>}`` and the
same reason as ``notes`` (Data Docs render notes next to the result). The rule name is what
``quarantine.rows.expectation`` and the quality reports show, so it must stay stable once data has
been quarantined under it; the reason is for the person reading the quarantine table.
"""

from __future__ import annotations

from typing import Any, TypeVar

import great_expectations.expectations as gxe
from great_expectations.expectations.metadata_types import FailureSeverity

ExpectationT = TypeVar("ExpectationT", bound=gxe.Expectation)


def rule(
    cls: type[ExpectationT],
    name: str,
    reason: str,
    *,
    severity: FailureSeverity = FailureSeverity.CRITICAL,
    **kwargs: Any,
) -> ExpectationT:
    """Build a GX expectation tagged with ShopFlow's rule name and human reason.

    Args:
        cls: a ``gxe.Expect…`` class.
        name: stable rule name, unique within its suite (``customer_present``).
        reason: one sentence saying why a row or table failing it is not usable.
        severity: GX failure severity (all ShopFlow rules block: critical).
        **kwargs: the expectation's own arguments (``column``, ``min_value``…).

    Returns:
        The expectation instance.
    """
    return cls(meta={"rule": name, "reason": reason}, notes=reason, severity=severity, **kwargs)


def rule_name(expectation: Any) -> str:
    """The ShopFlow rule name of an expectation or of an expectation configuration."""
    meta = getattr(expectation, "meta", None) or {}
    name = meta.get("rule")
    if not name:
        raise ValueError(f"expectation without a ShopFlow rule name in meta: {expectation!r}")
    return str(name)


def rule_reason(expectation: Any) -> str:
    """The human reason of an expectation or of an expectation configuration."""
    meta = getattr(expectation, "meta", None) or {}
    return str(meta.get("reason", ""))


def columns_used(suite: Any) -> list[str]:
    """Columns a suite's expectations read (their columns and their row conditions), in order."""
    names: list[str] = []

    def condition_columns(condition: Any) -> None:
        if condition is None or isinstance(condition, str):
            return  # string conditions (pandas query syntax) are not used in ShopFlow suites
        column = getattr(condition, "column", None)
        if column is not None:
            names.append(column.name)
        for inner in getattr(condition, "conditions", None) or []:
            condition_columns(inner)

    for expectation in suite.expectations:
        for attribute in ("column", "column_A", "column_B"):
            value = getattr(expectation, attribute, None)
            if value:
                names.append(value)
        names.extend(getattr(expectation, "column_list", None) or [])
        condition_columns(getattr(expectation, "row_condition", None))
    return list(dict.fromkeys(names))


RATING_MIN = "rating_min"
RATING_MAX = "rating_max"
"""Suite parameter names: the lowest and highest rating (``Settings.rating_scale``)."""


def rating_in_range(reason: str) -> gxe.ExpectColumnValuesToBeBetween:
    """The one rating-scale rule, shared by the raw suite (quarantine) and the marts suite (block).

    The bounds are suite parameters, filled by ``rating_scale_parameters`` from the settings, so
    a source rating 1-10 is one setting, not an edit of every suite.
    """
    return rule(
        gxe.ExpectColumnValuesToBeBetween,
        "rating_in_range",
        reason,
        column="rating",
        min_value={"$PARAMETER": RATING_MIN},
        max_value={"$PARAMETER": RATING_MAX},
    )


def rating_scale_parameters(scale: tuple[float, float]) -> dict[str, float]:
    """Suite parameter values of ``rating_in_range`` for a ``(lowest, highest)`` rating scale."""
    low, high = scale
    return {RATING_MIN: float(low), RATING_MAX: float(high)}
