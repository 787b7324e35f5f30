"""Listing helpers: pagination and substring search.

Pagination costs one query: the LIMIT/OFFSET page, carrying a count that stops at ten pages beyond
the current one (`COUNT_AHEAD`) as an uncorrelated scalar subquery, so its cost grows with the page
number, not with the table: on 10,000 users InnoDB would otherwise walk a whole index on every
request. Below the cap the total is exact; above it the page says "more than N". Only a page past
the end counts on its own. (A COUNT(*) OVER () window would make the database number every
matching row: ~30x slower on 10,000 users.)
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, bindparam, func, literal_column, or_, select

from ..extensions import db

MAX_PAGE = 100_000
COUNT_AHEAD = 10  # pages


@dataclass
class Page:
    items: list
    page: int
    per_page: int
    total: int  # exact when `exact`, else a lower bound
    exact: bool = True

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.total > self.page * self.per_page

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last_index(self) -> int:
        return (self.page - 1) * self.per_page + len(self.items)


def page_statements(stmt: Select, count_stmt: Select | None = None) -> tuple[Select, Select]:
    """(page, count) statements for `stmt` with bind parameters cap, lim and off, so a caller may
    build them once and run them for any page. The page carries the capped count as `_total`: one
    round trip, the count being an uncorrelated scalar subquery the database evaluates once."""
    matching = ((count_stmt if count_stmt is not None else stmt)
                .with_only_columns(literal_column("1"), maintain_column_froms=True)
                .order_by(None).limit(bindparam("cap")).subquery())
    count = select(func.count()).select_from(matching)
    page = stmt.add_columns(count.scalar_subquery().label("_total")).limit(bindparam("lim")).offset(bindparam("off"))
    return page, count


def run_page(statements: tuple[Select, Select], page: int, per_page: int, params: dict | None = None,
             rows: str = "mappings") -> Page:
    """One page from `page_statements`; only a page past the end counts separately. `rows`:
    "mappings" (column name -> value), "scalars" (the first column of each row) or "tuples"."""
    page_stmt, count = statements
    page = min(max(1, page), MAX_PAGE)
    offset = (page - 1) * per_page
    cap = offset + COUNT_AHEAD * per_page + 1
    values = {**(params or {}), "cap": cap, "lim": per_page, "off": offset}
    result = db.session.execute(page_stmt, values)
    if rows == "mappings":
        found = list(result.mappings())
        totals = [r["_total"] for r in found]
        items = [{k: v for k, v in r.items() if k != "_total"} for r in found]
    else:
        found = list(result)
        totals = [r[-1] for r in found]
        items = [r[0] for r in found] if rows == "scalars" else [tuple(r[:-1]) for r in found]
    counted = totals[0] if totals else db.session.execute(count, values).scalar_one()
    return Page(items=items, page=page, per_page=per_page, total=min(counted, cap - 1), exact=counted < cap)


def paginate(stmt: Select, page: int, per_page: int, rows: str = "scalars", count_stmt: Select | None = None) -> Page:
    """Run `stmt` for one page (see `run_page` for `rows`). `count_stmt`: a cheaper statement
    matching the same rows."""
    return run_page(page_statements(stmt, count_stmt), page, per_page, rows=rows)


def like_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, literally (% and _ are not wildcards)."""
    return "%" + text.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"


def contains_text(text, *columns):
    """A WHERE clause: any of `columns` contains `text` literally; `text` may be a bindparam
    that will carry a `like_pattern`."""
    pattern = like_pattern(text) if isinstance(text, str) else text
    return or_(*(column.like(pattern, escape="\\") for column in columns))
