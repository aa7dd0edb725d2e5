"""What a call costs and what a caller may spend: the catalogue's prices under an operator's prices file,
the rule for what Pixazo surely did not charge, and the daily budgets.

Prices file (`PIXAZO_PRICES_FILE`): a JSON object keyed by our model names (the catalogue's). A value is
a price per call in US dollars (a number >= 0), `null` for "unknown", or, for a model priced by tier
(the upscaler, by `scale`), an object of tier -> price (`{"2": 0.07, "4": 0.12}`: the tiers not named
keep the catalogue's price) or one number for every tier. Models the file does not name keep the
catalogue's price. Anything else is refused at start-up with one line naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.core.settingsfiles import read_capped
from app.errors import UpstreamConnectionError, UpstreamError, UpstreamHTTPError
from app.pixazo.gateway import CATALOGUE, Endpoint
from app.settings import Settings, SettingsError

# A price file is a few lines; anything bigger is not one.
MAX_PRICES_FILE_BYTES = 64 * 1024


class PricesFileError(SettingsError):
    """The prices file cannot be used; one line naming the file and the entry."""


def _price_value(value: Any) -> float | None:
    """A price from JSON: a finite number >= 0; raises ValueError otherwise (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError("a price must be a number >= 0 (US dollars per call) or null")
    return float(value)


class Prices:
    """Each model's price per call: the catalogue's published figures, with the operator's overrides."""

    def __init__(self, overrides: Mapping[str, float | Mapping[int, float] | None] | None = None) -> None:
        self._flat: dict[str, float | None] = {}
        self._tiers: dict[str, dict[int, float]] = {}
        for name, endpoint in CATALOGUE.items():
            if endpoint.price_by is not None:
                self._tiers[name] = dict(endpoint.price_tiers)
            else:
                self._flat[name] = endpoint.price_usd
        for name, value in (overrides or {}).items():
            if name in self._tiers:
                if isinstance(value, Mapping):
                    self._tiers[name].update(value)
                elif value is None:
                    self._tiers[name] = {}
                else:
                    self._tiers[name] = dict.fromkeys(self._tiers[name], float(value))
            elif not isinstance(value, Mapping):
                self._flat[name] = value

    @classmethod
    def load(cls, settings: Settings) -> Prices:
        """The prices in force: PIXAZO_PRICES_FILE over the catalogue. Raises PricesFileError."""
        path = settings.prices_file
        if path is None:
            return cls()
        return cls(parse_prices(read_prices_file(path), str(path)))

    def price(self, endpoint: Endpoint, values: Mapping[str, Any]) -> float | None:
        """A call's price in US dollars (None: unknown). A tiered model's tier is the value of its
        `price_by` argument (the upscaler's `scale`); a tier the table does not know is unknown."""
        if endpoint.model in self._tiers:
            tier = values.get(endpoint.price_by or "")
            if isinstance(tier, bool) or not isinstance(tier, int | float):
                return None
            return self._tiers[endpoint.model].get(int(tier))
        return self._flat.get(endpoint.model)

    def table(self) -> list[tuple[str, str, str, float | None]]:
        """(model, operation, tier, price) for every model and tier, in catalogue order (tier '' if flat)."""
        out: list[tuple[str, str, str, float | None]] = []
        for name, endpoint in CATALOGUE.items():
            if name in self._tiers:
                tiers = self._tiers[name] or dict.fromkeys(endpoint.price_tiers)
                for tier, price in sorted(tiers.items()):
                    out.append((name, endpoint.operation, f"{endpoint.price_by} {tier}", price))
            else:
                out.append((name, endpoint.operation, "", self._flat[name]))
        return out


def read_prices_file(path: Path) -> Any:
    where = f"PIXAZO_PRICES_FILE {path}"
    raw = read_capped(path, where, MAX_PRICES_FILE_BYTES, PricesFileError, "; it accepts a small JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PricesFileError(f"{where}: not valid JSON ({exc})") from None


def parse_prices(document: Any, source: str) -> dict[str, float | dict[int, float] | None]:
    """Check a prices document against the catalogue; raises PricesFileError naming the entry."""
    where = f"PIXAZO_PRICES_FILE {source}"
    if not isinstance(document, dict):
        raise PricesFileError(f"{where}: it accepts a JSON object of model name -> price")
    out: dict[str, float | dict[int, float] | None] = {}
    for name, value in document.items():
        endpoint = CATALOGUE.get(name)
        if endpoint is None:
            raise PricesFileError(f"{where}: entry {name!r} is not a model (known: {', '.join(CATALOGUE)})")
        try:
            if isinstance(value, dict):
                if endpoint.price_by is None:
                    raise ValueError(f"{name} has one price, not tiers: give a number or null")
                tiers: dict[int, float] = {}
                for key, tier_price in value.items():
                    tier = int(key) if isinstance(key, str) and key.isdigit() else None
                    if tier is None or tier not in endpoint.price_tiers:
                        known = ", ".join(str(t) for t in endpoint.price_tiers)
                        raise ValueError(f"tier {key!r} is not a {endpoint.price_by} of {name} ({known})")
                    price = _price_value(tier_price)
                    assert price is not None  # noqa: S101 - _price_value never returns None
                    tiers[tier] = price
                out[name] = tiers
            else:
                out[name] = None if value is None else _price_value(value)
        except ValueError as exc:
            raise PricesFileError(f"{where}: entry {name!r}: {exc}") from None
    return out


# --- What was charged ------------------------------------------------------------------------------
def surely_not_charged(exc: UpstreamError) -> bool:
    """Whether Pixazo surely charged nothing for the submission that raised `exc`.

    An HTTP error answer to a submission made nothing; neither did a request that never left us.
    Everything else (a timeout, a connection broken after sending, an unusable 2xx answer) may have
    been charged: nothing says otherwise, so the price stays on the row. (A queue job is settled by its
    end state instead: only gateway.NOT_CHARGED_STATES, ERROR, is "not charged"; see service._Call.)
    """
    if isinstance(exc, UpstreamHTTPError):
        return True
    if isinstance(exc, UpstreamConnectionError):
        return not exc.sent
    return False


# --- Budgets ---------------------------------------------------------------------------------------
class Budgets:
    """Each caller's spending cap per UTC day: its own (PIXAZO_CALLER_BUDGETS_USD), else the default
    (PIXAZO_DAILY_BUDGET_USD). None: no cap."""

    def __init__(self, daily: float | None, per_caller: Mapping[str, float | None] | None = None) -> None:
        self.daily = daily
        self.per_caller = dict(per_caller or {})

    @classmethod
    def from_settings(cls, settings: Settings) -> Budgets:
        return cls(settings.daily_budget_usd, settings.caller_budgets_usd)

    def for_caller(self, caller: str | None) -> float | None:
        if caller is not None and caller in self.per_caller:
            return self.per_caller[caller]
        return self.daily


def usd(value: float | None) -> str:
    """A price for people: `$0.07`, `$0.018`, `$5.00`; `unknown` for None."""
    if value is None:
        return "unknown"
    text = f"{value:.4f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
