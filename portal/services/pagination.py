"""One-query pagination: the page's rows and the total come from the same SELECT (COUNT(*) OVER ())."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Select, func, select

from ..extensions import db

MAX_PAGE = 100_000


@dataclass
class Page:
    items: list
    page: int
    per_page: int
    total: int
    extra: dict = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def first_index(self) -> int:
        return (self.page - 1) * self.per_page + 1 if self.total else 0

    @property
    def last_index(self) -> int:
        return min(self.total, self.page * self.per_page)


def paginate(stmt: Select, page: int, per_page: int, scalars: bool = True) -> Page:
    """Run `stmt` for one page. Rows carry the total in a window column, so this is one query
    (two only when the page is past the end and the total must be counted separately)."""
    page = min(max(1, page), MAX_PAGE)
    counted = stmt.add_columns(func.count().over().label("_total"))
    rows = db.session.execute(counted.limit(per_page).offset((page - 1) * per_page)).all()
    if rows:
        total = rows[0][-1]
    else:
        total = db.session.execute(select(func.count()).select_from(stmt.order_by(None).subquery())).scalar_one()
    items = [row[0] if scalars else tuple(row[:-1]) for row in rows]
    return Page(items=items, page=page, per_page=per_page, total=total)
