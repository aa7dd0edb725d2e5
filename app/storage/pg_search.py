"""How a prompt search on PostgreSQL reads the history: decided from the table's own statistics.

A page of a search is "the newest N rows whose prompt has every word (as a prefix)". Two ways answer it:
- a walk backwards in id order, testing each row: quick when matches are dense (a common word finds
  its page in the first few hundred rows), ruinous when they are rare (it reads on and on);
- the GIN index on the search vector: every match at once, then a top-N sort: quick when matches are
  few (a rare word, a word in no row), costly when they are many (it reads every entry of "fox").

The planner cannot tell them apart for prefix matches well enough, so the store asks this module. It
reads what ANALYZE (autovacuum) already keeps: the most common lexemes of `prompt_tsv` with their
share of rows, the most common values of `status` and `caller`, and the row count. A word absent from
the common lexemes is rarer than the rarest of them; the words and filters multiply (as if
independent). When the newest window is not expected to fill the page, the index goes first.
Before the first ANALYZE there are no figures: the store walks the window, then asks the index.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# ANALYZE keeps a lexeme seen more than 9 times per 144,285 sampled lexemes (lossy counting at the
# default statistics target, ts_typanalyze.c), about 1 in 16,000: with ~9 lexemes a prompt, a lexeme in
# more than ~6 rows in 10,000. Rounded up: an unlisted word is taken to be in at most 1 row in 1,000.
RARE_SHARE = 1e-3
STATS_TTL_S = 60.0  # figures change slowly (autovacuum re-analyzes a table after ~10% new rows)
STATS_QUERY = (
    "SELECT attname, most_common_elems::text::text[] AS elems, most_common_elem_freqs AS elem_freqs,"
    " most_common_vals::text::text[] AS vals, most_common_freqs AS val_freqs, n_distinct, null_frac"
    " FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'generations'"
    " AND attname IN ('prompt_tsv', 'status', 'caller')")
ROWS_QUERY = "SELECT reltuples::float8 AS rows FROM pg_class WHERE oid = 'generations'::regclass"


@dataclass
class Column:
    """One column's most common values and their shares, and what is left for the rest."""

    shares: dict[str, float]
    other: float  # the share of a value not among the common ones

    def share(self, value: str | None) -> float:
        if value is None:
            return 1.0
        return self.shares.get(value, self.other)


@dataclass
class Figures:
    rows: float
    lexemes: list[tuple[str, float]]  # the common lexemes of the prompts and the share of rows with each
    rare: float  # the share assumed for a word none of them starts with
    columns: dict[str, Column] = field(default_factory=dict)

    def word_share(self, word: str) -> float:
        """The share of rows with a lexeme that starts with `word` ('simple' lowercases, nothing more)."""
        word = word.lower()
        found = sum(share for lexeme, share in self.lexemes if lexeme.startswith(word))
        return min(1.0, max(found, self.rare))

    def density(self, words: Sequence[str], filters: dict[str, str | None]) -> float:
        """The expected share of rows that match every word and every filter."""
        share = 1.0
        for word in words:
            share *= self.word_share(word)
        for name, value in filters.items():
            column = self.columns.get(name)
            if column is not None:
                share *= column.share(value)
        return share


def figures_from(rows: float, found: Sequence[dict[str, Any]]) -> Figures | None:
    """Figures from pg_stats rows; None while the search vector has never been analyzed."""
    by_name = {str(r["attname"]): r for r in found}
    tsv = by_name.get("prompt_tsv")
    if tsv is None or rows <= 0:
        return None
    elems, freqs = list(tsv["elems"] or []), [float(f) for f in (tsv["elem_freqs"] or [])]
    # The frequencies array ends with the minimum, the maximum and the null-element share.
    lexemes = list(zip(elems, freqs[:len(elems)], strict=False))
    # A lexeme ANALYZE did not list is rarer than the rarest it listed (a full list) or fell below its
    # sampling cutoff (a short list: the few dozen words of a small vocabulary): at most RARE_SHARE.
    rarest = min((f for _, f in lexemes), default=RARE_SHARE)
    rare = max(min(rarest / 2, RARE_SHARE), 1.0 / rows)
    columns = {}
    for name in ("status", "caller"):
        stats = by_name.get(name)
        if stats is None:
            continue
        vals = list(stats["vals"] or [])
        val_freqs = [float(f) for f in (stats["val_freqs"] or [])]
        shares = dict(zip(vals, val_freqs, strict=False))
        distinct = float(stats["n_distinct"] or 0)
        distinct = -distinct * rows if distinct < 0 else distinct  # negative: a share of the rows
        rest = max(0.0, 1.0 - sum(shares.values()) - float(stats["null_frac"] or 0))
        unlisted = max(1.0, distinct - len(shares))
        columns[name] = Column(shares, max(rest / unlisted, 1.0 / rows))
    return Figures(rows, lexemes, rare, columns)


class SearchPlanner:
    """Figures read at most once a minute per store; `plan` says which way a search page reads."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._figures: Figures | None = None
        self._read_at = -STATS_TTL_S

    async def figures(self, read: Callable[[], Awaitable[tuple[float, Sequence[dict[str, Any]]]]], *,
                      fresh: bool = False) -> Figures | None:
        now = time.monotonic()
        if fresh or now - self._read_at >= STATS_TTL_S:
            self._read_at = now
            rows, found = await read()
            self._figures = figures_from(rows, found)
        return self._figures

    def plan(self, figures: Figures | None, words: Sequence[str], filters: dict[str, str | None],
             limit: int) -> str:
        """'index' when the newest window is not expected to hold a page of matches, else 'walk'."""
        if figures is None:
            return "walk"
        expected = figures.density(words, filters) * min(self.window, figures.rows)
        return "index" if expected < limit else "walk"

    def split(self, figures: Figures | None, words: list[str], limit: int) -> tuple[list[str], list[str]]:
        """The words for the index (each too rare to fill a page from the window) and the others; all of
        them for the index when none is rare alone (common words that seldom meet)."""
        if figures is None:
            return words, []
        rare = [w for w in words if figures.word_share(w) * min(self.window, figures.rows) < limit]
        if not rare:
            return words, []
        return rare, [w for w in words if w not in rare]
