"""Kubernetes resource quantities ("500m", "2", "16Gi", "1e3"): parsing and arithmetic in
milli-units, as the scheduler and validation need them."""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}


class QuantityError(ValueError):
    pass


def parse(value) -> Decimal:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise QuantityError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    match = _RE.match(value.strip())
    if not match:
        raise QuantityError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    number, suffix = match.group(1), match.group(2) or ""
    try:
        n = Decimal(number)
    except InvalidOperation:
        raise QuantityError(f"invalid quantity {value!r}") from None
    if suffix in _BINARY:
        return n * _BINARY[suffix]
    if suffix in _DECIMAL:
        return n * _DECIMAL[suffix]
    return n * (Decimal(10) ** int(suffix[1:]))


def milli(value) -> int:
    """The quantity in thousandths (cpu "500m" -> 500; memory "1Ki" -> 1024000), rounded up."""
    q = parse(value) * 1000
    return int(q.to_integral_value(rounding="ROUND_CEILING"))
