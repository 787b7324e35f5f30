"""/files: the shared storage in the browser (services/storage.py decides what is allowed).

`GET /files` lists one's areas; `GET /files/<path>` lists a folder or downloads a file (always as
an attachment with nosniff, with ranges); `GET /files/<path>?do=move|delete` is the form that
asks first (no JavaScript needed); `POST /files/<path>` acts: op = upload (into that folder),
mkdir, move (rename and/or another folder) or delete.

Uploads stream: the multipart parser writes each file straight into a spool folder on the storage
itself (`FilesRequest`), the service links it into place, and the worker's memory stays flat. Only
a signed-in user's POST under /files gets the large limit (CRATER_UPLOAD_MAX_BYTES); everything
else keeps the portal's small one."""
from __future__ import annotations

from datetime import UTC

from flask import Blueprint, Request, Response, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import login_required
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.wsgi import wrap_file

from ..services import storage
from ..services.errors import BadRequest, Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from .context import actor, page_arg
from .forms import CsrfOnlyForm

bp = Blueprint("files", __name__)


def _is_upload(req: Request) -> bool:
    return (req.method == "POST" and req.path.startswith("/files/") and bool(current_app)
            and bool(current_app.config.get("STORAGE_ROOT")) and "_user_id" in session)


class _BigBlocks(FormDataParser):
    """Multipart parsing in 1 MiB reads instead of werkzeug's 64 KiB: a 2 GiB upload is parsed
    with a sixteenth of the calls (werkzeug takes the buffer size as a parameter of its parser)."""

    def _parse_multipart(self, stream, mimetype, content_length, options):
        parser = MultiPartParser(stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
                                 max_form_parts=self.max_form_parts, cls=self.cls, buffer_size=256 << 10)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class FilesRequest(Request):
    """The portal's request: an upload under /files spools to the storage, with its own limit."""

    form_data_parser_class = _BigBlocks

    @property
    def max_content_length(self) -> int | None:
        if self._max_content_length is None and _is_upload(self):
            return current_app.config["UPLOAD_MAX_BYTES"]
        return Request.max_content_length.fget(self)

    @max_content_length.setter
    def max_content_length(self, value: int | None) -> None:
        self._max_content_length = value

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if _is_upload(self):
            return storage.spool_file(storage.root_of(current_app.config))
        return super()._get_file_stream(total_content_length, content_type, filename, content_length)


def _root() -> str:
    return storage.root_of(current_app.config)


def _crumbs(where: storage.Place) -> list[tuple[str, str]]:
    """(label, path) from the top to `where`."""
    out = [(_("My files"), "")]
    for i, name in enumerate(where.parts):
        out.append((name, "/".join(where.parts[:i + 1])))
    return out


def _back(path: str) -> str:
    return url_for(".browse", path=path) if path else url_for(".index")


@bp.get("/files")
@login_required
def index():
    return browse("")


@bp.get("/files/<path:path>")
@login_required
def browse(path: str):
    root, who = _root(), actor()
    where = storage.place(who, path)
    kind = storage.kind_of(root, who, where)
    if request.args.get("do") in ("move", "delete"):
        return _ask(where)
    if kind == "file":
        return _download(storage.open_file(root, who, where))
    sort = request.args.get("sort", "name")
    descending = request.args.get("desc") == "1"
    page = storage.listing(root, who, where, sort, descending, page_arg(), current_app.config["FILES_PAGE_SIZE"])
    return render_template("files/index.html", where=where, page=page, crumbs=_crumbs(where),
                           areas=storage.areas_of(who) if not where.parts else [], sort=sort, descending=descending,
                           form=CsrfOnlyForm(), max_bytes=current_app.config["UPLOAD_MAX_BYTES"],
                           args={"path": where.path, "sort": sort, "desc": "1" if descending else ""})


def _ask(where: storage.Place, status: int = 200, errors: dict | None = None):
    if where.area is None or where.is_area_root:
        raise Conflict(_("An area itself cannot be renamed, moved or deleted."))
    return render_template("files/ask.html", where=where, do=request.values.get("do") or request.values.get("op"),
                           form=CsrfOnlyForm(), errors=errors or {}, crumbs=_crumbs(where)), status


def _download(dl: storage.Download) -> Response:
    """An attachment, never rendered by the browser; ranges and If-None-Match/If-Modified-Since
    through werkzeug's conditional responses; the file is sent by the server's sendfile."""
    response = Response(wrap_file(request.environ, dl.file, buffer_size=1 << 20), mimetype="application/octet-stream",
                        direct_passthrough=True)
    response.content_length = dl.size
    response.last_modified = dl.modified.astimezone(UTC)
    response.set_etag(f"{dl.size}-{dl.modified.timestamp()}")
    try:
        dl.name.encode("ascii")
        names = {"filename": dl.name}
    except UnicodeEncodeError:
        from urllib.parse import quote
        names = {"filename": dl.name.encode("ascii", "replace").decode().replace("?", "_"),
                 "filename*": "UTF-8''" + quote(dl.name, safe="!#$&+-.^_`|~")}
    response.headers.set("Content-Disposition", "attachment", **names)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-cache"
    return response.make_conditional(request.environ, accept_ranges=True, complete_length=dl.size)


@bp.post("/files/<path:path>")
@login_required
def act(path: str):
    root, who, op = _root(), actor(), request.form.get("op", "")
    try:
        if op == "upload":
            return _upload(root, who, path)
        if op == "mkdir":
            made = storage.make_folder(root, who, path, request.form.get("name", ""))
            flash(_("Folder %(name)s created.", name=made.name), "success")
            return redirect(_back(path), 303)
        if op == "move":
            folder = request.form.get("folder")
            moved = storage.move(root, who, path, request.form.get("name", ""), None if folder is None else folder)
            flash(_("Moved to %(path)s.", path=moved.path), "success")
            return redirect(_back(path.rstrip("/").rpartition("/")[0]), 303)  # back where it was
        if op == "delete":
            gone = storage.delete(root, who, path)
            flash(_("%(name)s deleted.", name=gone.name), "success")
            return redirect(_back(gone.parent), 303)
    except ValidationFailed as exc:
        if op == "move":
            return _ask(storage.place(who, path), 422, exc.errors)
        raise
    raise BadRequest(_("Unknown action."))


def _upload(root: str, who, path: str):
    files = [f for f in request.files.getlist("files") if f.filename]
    if not files:
        raise ValidationFailed({"files": _("Choose at least one file.")})
    replace = request.form.get("replace") == "1"
    saved, problems = [], []
    for item in files:
        try:
            saved.append(storage.save_upload(root, who, path, item.filename, item.stream, replace).name)
        except DomainError as exc:
            if isinstance(exc, (Forbidden, NotFound, BadRequest)):
                raise  # the folder itself: the same for every file
            problems.append(f"{item.filename}: {exc}")
    if saved:
        flash(_("Uploaded: %(names)s.", names=", ".join(saved)), "success")
    for problem in problems:
        flash(problem, "error")
    if not saved:  # nothing happened: say so with the folder and a 4xx
        return browse(path), 409
    return redirect(_back(path), 303)
