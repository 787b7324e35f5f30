"""Keep the message catalogues in step with the code (run after changing UI text):

    .venv/bin/python scripts/translations.py           # extract, merge into every .po, compile .mo
    .venv/bin/python scripts/translations.py --check   # exit 1 if a catalogue is stale or incomplete

The tests run the same check, so a new string without a Chinese translation fails the suite.
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None, "_l": None}
METHODS = [("portal/**.py", "python"), ("templates/**.html", "jinja2")]
LOCALES = ["zh"]


def extract() -> Catalog:
    catalog = Catalog(project="crater", charset="utf-8")
    for sub, method in (("portal", "python"), ("templates", "jinja2")):
        pattern = [("**.py", "python")] if method == "python" else [("**.html", "jinja2")]
        for filename, lineno, message, comments, context in extract_from_dir(
                ROOT / sub, pattern, keywords=KEYWORDS, options_map={"**.html": {"extensions": "jinja2.ext.do"}}):
            catalog.add(message, None, [(f"{sub}/{filename}", lineno)], auto_comments=comments, context=context)
    return catalog


def po_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def load(locale: str) -> Catalog:
    path = po_path(locale)
    if not path.exists():
        return Catalog(locale=locale, project="crater")
    with path.open("rb") as f:
        return read_po(f, locale=locale)


def problems(template: Catalog, catalog: Catalog) -> list[str]:
    found = []
    for message in template:
        if not message.id:
            continue
        have = catalog.get(message.id, context=message.context)
        if have is None:
            found.append(f"missing: {message.id!r}")
        elif not all(have.string if isinstance(have.string, tuple) else (have.string,)) or have.fuzzy:
            found.append(f"untranslated or fuzzy: {message.id!r}")  # a plural message: every form
    mo = po_path(catalog.locale_identifier or "zh").with_suffix(".mo")
    if not mo.exists() or mo.read_bytes() != compiled(catalog):
        found.append(f"{mo.relative_to(ROOT)} is not compiled from the .po file")
    return found


def compiled(catalog: Catalog) -> bytes:
    buf = io.BytesIO()
    write_mo(buf, catalog)
    return buf.getvalue()


def update(translations: dict[str, dict[str, str]] | None = None) -> None:
    template = extract()
    for locale in LOCALES:
        catalog = load(locale)
        catalog.update(template, no_fuzzy_matching=True)
        for msgid, text in (translations or {}).get(locale, {}).items():
            if msgid in catalog:
                catalog[msgid].string = text
        catalog.obsolete.clear()
        path = po_path(locale)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            write_po(f, catalog, width=100, omit_header=False, sort_output=True, include_lineno=False)
        with path.open("rb") as f:
            catalog = read_po(f, locale=locale)
        path.with_suffix(".mo").write_bytes(compiled(catalog))


def check() -> list[str]:
    template = extract()
    return [f"{locale}: {p}" for locale in LOCALES for p in problems(template, load(locale))]


if __name__ == "__main__":
    if "--check" in sys.argv:
        issues = check()
        print("\n".join(issues) or "catalogues complete")
        sys.exit(1 if issues else 0)
    update()
    print("\n".join(check()) or "catalogues complete")
