"""/dav/: the shared storage over WebDAV (WsgiDAV), with the same areas and permissions as /files,
for rclone, davfs2, Finder and Windows Explorer. Signed in with HTTP Basic: the user name and a personal
access token as the password (a read token reads; a write token also writes). Every operation goes
through services/storage.py, so a path is resolved inside the user's areas or refused, and a PUT
spools on the storage and is linked into place whole.

WsgiDAV is mounted beside the Flask app (werkzeug's DispatcherMiddleware) and each request runs
in the Flask app's context, for the database. Locks (class 2: Finder and Windows Explorer
lock before they write) are kept in the database (services/dav_locks.py), not in the memory of
one process, so they hold across web workers and replicas."""
from __future__ import annotations

import logging
from datetime import UTC

from flask import Flask
from werkzeug.wsgi import ClosingIterator, get_input_stream
from wsgidav import util
from wsgidav.dav_error import (HTTP_CONFLICT, HTTP_FORBIDDEN, HTTP_NOT_FOUND, HTTP_REQUEST_ENTITY_TOO_LARGE, DAVError)
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.dc.base_dc import BaseDomainController
from wsgidav.error_printer import ErrorPrinter
from wsgidav.http_authenticator import HTTPAuthenticator
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from ..services import storage, tokens
from ..services.dav_locks import DbLockStorage
from ..services.context import Actor
from ..services.restrictions import Restricted
from ..services.errors import AuthenticationFailed, BadRequest, Conflict, DomainError, Forbidden, NotFound, ValidationFailed

MOUNT = "/dav"
ACTOR, WRITE, REFUSED = "crater.actor", "crater.write", "crater.refused"


def _dav_error(exc: DomainError) -> DAVError:
    status = {NotFound: HTTP_NOT_FOUND, Forbidden: HTTP_FORBIDDEN, Conflict: HTTP_CONFLICT,
              BadRequest: HTTP_FORBIDDEN, ValidationFailed: HTTP_FORBIDDEN}
    code = next((s for cls, s in status.items() if isinstance(exc, cls)), HTTP_FORBIDDEN)
    return DAVError(code, str(exc))


class _Calls:
    """Turns the services' domain errors into WebDAV statuses (`with _Calls():`)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, _tb):
        if isinstance(exc, DomainError):
            raise _dav_error(exc) from None
        return False


def _parts(path: str) -> str:
    return path.strip("/")


class TokenDomainController(BaseDomainController):
    """HTTP Basic with the user name and a personal access token; nothing anonymous."""

    def __init__(self, wsgidav_app, config):
        super().__init__(wsgidav_app, config)

    def get_domain_realm(self, path_info, environ):
        return "crater"

    def require_authentication(self, realm, environ):
        return True

    def supports_http_digest_auth(self):
        return False

    def basic_auth_user(self, realm, user_name, password, environ):
        try:
            row, user = tokens.authenticate(password, environ.get("REMOTE_ADDR", ""))
        except AuthenticationFailed:
            return False
        except Restricted as exc:  # the right token of a restricted user: told why, not asked again
            environ[REFUSED] = str(exc)
            return True
        if user.username != (user_name or "").strip().lower():
            return False
        environ[ACTOR] = Actor(user, environ.get("REMOTE_ADDR", ""), token=row.name)
        environ[WRITE] = row.scope == "write"
        return True


class _Resource:
    """What files and folders share: the checked place, the storage root, the acting user."""

    def _setup(self, environ: dict, where: storage.Place, root: str) -> None:
        self.where, self.root, self.actor = where, root, environ[ACTOR]

    def _may_write(self) -> None:
        if not self.environ.get(WRITE):
            raise DAVError(HTTP_FORBIDDEN, "This token may only read; use a token with the write scope.")

    def get_display_name(self):
        return self.where.name

    def handle_delete(self):
        self._may_write()
        with _Calls():
            storage.delete(self.root, self.actor, self.where.path)
        return True

    def support_recursive_move(self, dest_path):
        return True

    def handle_move(self, dest_path):
        """A rename or a move in one step (WsgiDAV has removed an existing target when the client
        said Overwrite: T)."""
        self._may_write()
        target = _parts(dest_path)
        folder, _sep, name = target.rpartition("/")
        with _Calls():
            storage.move(self.root, self.actor, self.where.path, name, folder)
        return True


class Folder(_Resource, DAVCollection):
    def __init__(self, path: str, environ: dict, where: storage.Place, root: str):
        DAVCollection.__init__(self, path, environ)
        self._setup(environ, where, root)

    def get_member_names(self):
        with _Calls():
            page = storage.listing(self.root, self.actor, self.where, per_page=10 ** 9)
        return [e.name for e in page.items if e.path is not None and not e.is_link]

    def get_member(self, name):
        return self.provider.get_resource_inst(util.join_uri(self.path, name), self.environ)

    def create_empty_resource(self, name):
        """A file that exists once its PUT has been written whole (see File.end_write)."""
        self._may_write()
        with _Calls():
            storage.check_name(name)
            if self.where.area is None or not self.where.writable:
                raise Forbidden("You may read this folder but not change it.")
        where = storage.Place(self.where.parts + (name,), self.where.area, True)
        return File(util.join_uri(self.path, name), self.environ, where, self.root)

    def create_collection(self, name):
        self._may_write()
        with _Calls():
            storage.make_folder(self.root, self.actor, self.where.path, name)

    def support_recursive_delete(self):
        return True

    def handle_copy(self, dest_path, *, depth_infinity):
        raise DAVError(HTTP_FORBIDDEN, "Copying folders is not supported; copy the files.")

    def get_last_modified(self):
        return None

    def get_creation_date(self):
        return None

    def get_etag(self):
        return None

    def support_etag(self):
        return False


class _Spool:
    """Where a PUT's body goes: a spool file on the storage, counted against the upload limit.
    WsgiDAV closes what begin_write returned before end_write; the spool lives until end_write."""

    def __init__(self, root: str, limit: int):
        self.file, self.size, self.limit = storage.spool_file(root), 0, limit

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise DAVError(HTTP_REQUEST_ENTITY_TOO_LARGE, "The file is larger than the portal accepts.")
        self.file.write(data)

    def close(self) -> None:
        self.file.flush()


class File(_Resource, DAVNonCollection):
    def __init__(self, path: str, environ: dict, where: storage.Place, root: str, download: storage.Download | None = None):
        DAVNonCollection.__init__(self, path, environ)
        self._setup(environ, where, root)
        self._info = download
        self._spool: _Spool | None = None

    def _stat(self) -> storage.Download | None:
        if self._info is None:
            try:
                self._info = storage.open_file(self.root, self.actor, self.where)
                self._info.file.close()
            except DomainError:
                return None
        return self._info

    def get_content_length(self):
        info = self._stat()
        return info.size if info else 0

    def get_content_type(self):
        return "application/octet-stream"

    def get_last_modified(self):
        info = self._stat()
        return info.modified.replace(tzinfo=UTC).timestamp() if info else None

    def get_creation_date(self):
        return self.get_last_modified()

    def get_etag(self):
        info = self._stat()
        return f"{info.size}-{info.modified.timestamp()}" if info else None

    def support_etag(self):
        return True

    def support_ranges(self):
        return True

    def get_content(self):
        with _Calls():
            return storage.open_file(self.root, self.actor, self.where).file

    def begin_write(self, *, content_type=None):
        self._may_write()
        self._spool = _Spool(self.root, self.environ["crater.upload_max"])
        return self._spool

    def end_write(self, *, with_errors):
        spool, self._spool = self._spool, None
        if spool is None:
            return
        try:
            if not with_errors:
                spool.file.seek(0)
                with _Calls():
                    storage.save_upload(self.root, self.actor, self.where.parent, self.where.name, spool.file, replace=True)
                self._info = None
        finally:
            spool.file.close()

    def handle_copy(self, dest_path, *, depth_infinity):
        self._may_write()
        folder, _sep, name = _parts(dest_path).rpartition("/")
        with _Calls():
            source = storage.open_file(self.root, self.actor, self.where)
            with source.file:
                storage.save_upload(self.root, self.actor, folder, name, source.file, replace=True)
        return True


class StorageProvider(DAVProvider):
    def __init__(self, config):
        super().__init__()
        self.config = config

    def get_resource_inst(self, path: str, environ: dict):
        if REFUSED in environ:
            raise DAVError(HTTP_FORBIDDEN, environ[REFUSED])
        actor = environ[ACTOR]
        try:
            root = storage.root_of(self.config)
            where = storage.place(actor, _parts(path))
            if storage.kind_of(root, actor, where) == "dir":
                return Folder(path, environ, where, root)
            return File(path, environ, where, root)
        except NotFound:
            return None
        except DomainError as exc:
            raise _dav_error(exc) from None


class DavApp:
    """The WsgiDAV application, each request in the Flask app's context."""

    def __init__(self, app: Flask):
        self.app = app
        self.dav = WsgiDAVApp({
            "mount_path": MOUNT,
            "provider_mapping": {"/": StorageProvider(app.config)},
            "http_authenticator": {"domain_controller": TokenDomainController, "accept_basic": True,
                                   "accept_digest": False, "default_to_digest": False},
            "middleware_stack": [ErrorPrinter, HTTPAuthenticator, RequestResolver],
            "lock_storage": DbLockStorage(),  # in the database: every worker and replica sees a lock
            "property_manager": None,
            "verbose": 1,
            "logging": {"enable": False},
            "dir_browser": {"enable": False},
            "suppress_version_info": True,
            "block_size": 1 << 20,  # a PUT's body and a GET's file move in 1 MiB blocks
            "add_header_MS_Author_Via": True,
        })
        logging.getLogger("wsgidav").setLevel(logging.WARNING)

    def __call__(self, environ, start_response):
        """The context lasts until the answer has been sent (WsgiDAV may answer with a generator)."""
        environ["crater.upload_max"] = self.app.config["UPLOAD_MAX_BYTES"]
        # WsgiDAV reads a body until the stream ends: bound it by its length, whatever the server
        # (some hand the bare socket over, which ends only when the client closes it)
        environ["wsgi.input"] = get_input_stream(environ)
        context = self.app.app_context()
        context.push()
        try:
            answer = self.dav(environ, start_response)
        except BaseException:
            context.pop()
            raise
        return ClosingIterator(answer, [context.pop])
