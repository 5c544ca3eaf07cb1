"""The voting page of a perceptual study, served by the standard library's ``http.server``.

Pages (plain HTML forms; ``static/vote.js`` adds number keys and voting without a page load)::

    GET  /                          the start page: a name or code
    POST /start                     name=...  -> 303 to /p/<token> (JSON {"name"} -> {"token", "url"})
    GET  /p/<token>                 the participant's next group (or the end), with the progress
    GET  /p/<token>/next.json       the same as JSON: group, done, total, choices, images, html
    POST /p/<token>/vote            group=..&choice=.. -> 303 to /p/<token> (JSON {"group", "choice"} -> JSON)
    GET  /img/<token>/<group>/<input|target|1..M>.png
    GET  /static/vote.js, /static/vote.css

A choice is a position as shown (1 = left); the server maps it back to its method, so no method name ever
reaches the page. A bad request (unknown participant or group, a position not shown, a second vote on a
group, malformed JSON, a body over ``MAX_BODY`` bytes, a form posted from another site) gets a 4xx and
changes nothing.
"""

from __future__ import annotations

import html
import json
import re
import signal
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..errors import UserError, is_whole_number
from .groups import StudyGroups, prepare
from .votes import DB, Participant, Rejected, Store, count_votes

MAX_BODY = 4096  # a vote is a few dozen bytes
DRAIN = 1 << 20  # a larger body is not even read
READ_TIMEOUT = 30.0  # seconds a connection may stay silent
STATIC = Path(__file__).parent / "static"
CSP = "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
TITLE = "Which picture looks most real?"


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def page(body: str, title: str = TITLE) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><link rel='stylesheet' href='/static/vote.css'>"
        f"<script src='/static/vote.js' defer></script></head><body>{body}</body></html>"
    )


def start_main(study: StudyGroups, message: str = "") -> str:
    n, m = len(study.groups), len(study.methods)
    target = " and the picture it should become (the target)" if study.show_target else ""
    flash = f"<p class='flash' role='alert'>{_e(message)}</p>" if message else ""
    return (
        f"<main class='start'><h1>{_e(TITLE)}</h1>{flash}"
        f"<p>You will see {n} groups of pictures. Each group shows a picture (the input){target}, then {m} versions of it "
        "made by different programs, in a random order. Pick the version that looks the most realistic: click it, or "
        f"press its number (1-{m}).</p><p>You can stop at any time and come back later: type the code your pages show.</p>"
        "<form method='post' action='/start' class='join'><label for='name'>Your name or code</label>"
        "<input id='name' name='name' required maxlength='64' autocomplete='off' autofocus>"
        "<button type='submit'>Start</button></form></main>"
    )


def group_main(store: Store, p: Participant, message: str = "") -> str:
    """The ``<main>`` of a participant's page: the next group as a form, or the end."""
    study = store.study
    gid, done = store.next_group(p)
    total = len(study.groups)
    flash = f"<p class='flash' role='alert'>{_e(message)}</p>" if message else ""
    progress = f"<div class='progress'><progress value='{done}' max='{total}'></progress><span>{done} of {total} done</span></div>"
    if gid is None:
        return (
            f"<main class='end' data-done='{done}' data-total='{total}'>{progress}{flash}<h1>Thank you, {_e(p.name)}</h1>"
            f"<p>You have voted on all {total} groups. You can close this page.</p></main>"
        )
    base = f"/img/{p.token}/{gid}"
    shown = [f"<figure class='input'><img src='{base}/input.png' alt='input picture'><figcaption>Input</figcaption></figure>"]
    if study.show_target:
        shown.append(f"<figure class='input'><img src='{base}/target.png' alt='target picture'><figcaption>Target</figcaption></figure>")
    choices = "".join(
        f"<button class='choice' type='submit' name='choice' value='{k}' accesskey='{k}' aria-label='version {k}'>"
        f"<img src='{base}/{k}.png' alt='version {k}'><span class='key'>{k}</span></button>"
        for k in range(1, len(study.methods) + 1)
    )
    return (
        f"<main class='group' data-group='{gid}' data-done='{done}' data-total='{total}'>{progress}{flash}"
        f"<h1>Group {done + 1} of {total}</h1><div class='inputs'>{''.join(shown)}</div>"
        f"<p class='ask'>Which version looks the most realistic? Click it or press its number.</p>"
        f"<form method='post' action='/p/{p.token}/vote' class='vote'><input type='hidden' name='group' value='{gid}'>"
        f"<div class='choices'>{choices}</div></form>"
        f"<p class='leave'><a href='/'>Stop here</a>: come back with your code, <strong class='code' data-code>{_e(p.token)}</strong>, "
        "to go on.</p></main>"
    )


def next_json(store: Store, p: Participant) -> dict[str, Any]:
    gid, done = store.next_group(p)
    n = len(store.study.methods)
    images = [f"/img/{p.token}/{gid}/{k}.png" for k in range(1, n + 1)] if gid is not None else []
    return {
        "group": gid,
        "done": done,
        "total": len(store.study.groups),
        "choices": n if gid is not None else 0,
        "images": images,
        "html": group_main(store, p),
    }


class Handler(BaseHTTPRequestHandler):
    server: StudyServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: with Nagle's algorithm each answer waited for a delayed ACK (~40 ms)
    server_version = "assocgan-perceptual"
    sys_version = ""
    timeout = READ_TIMEOUT  # a connection that sends nothing for this long is closed: a stalled client holds no thread for ever

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the votes are the record
        pass

    # ---- responses -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "same-origin")  # no-referrer would make browsers send the page's own forms with Origin: null
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _html(self, status: int, main: str) -> None:
        self._send(status, page(main).encode(), "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", {"Cache-Control": "no-store"})

    def _redirect(self, where: str) -> None:
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": where, "Cache-Control": "no-store"})

    def _reject(self, err: Rejected, as_json: bool, p: Participant | None = None) -> None:
        store = self.server.store
        if as_json:
            self._json(err.status, {"error": str(err), **({"html": group_main(store, p)} if p is not None else {})})
        elif p is not None:
            self._html(err.status, group_main(store, p, str(err)))
        else:
            self._html(err.status, start_main(store.study, str(err)))

    # ---- requests --------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        store = self.server.store
        if path == "/":
            return self._html(200, start_main(store.study))
        m = re.fullmatch(r"/static/(vote\.(?:js|css))", path)
        if m:
            ctype = "text/javascript" if m[1].endswith(".js") else "text/css"
            return self._send(200, (STATIC / m[1]).read_bytes(), f"{ctype}; charset=utf-8", {"Cache-Control": "no-cache"})
        m = re.fullmatch(r"/p/([^/]+)(/next\.json)?", path)
        if m:
            p = store.participant(m[1])
            if p is None:
                return self._reject(Rejected(404, "unknown participant link; start again with your name or code"), bool(m[2]))
            return self._json(200, next_json(store, p)) if m[2] else self._html(200, group_main(store, p))
        m = re.fullmatch(r"/img/([^/]+)/([0-9]{1,9})/(input|target|[0-9]{1,2})\.png", path)
        if m:
            return self._image(m[1], int(m[2]), m[3])
        self._reject(Rejected(404, f"{path}: no such page"), False)

    def _image(self, token: str, gid: int, what: str) -> None:
        store = self.server.store
        study = store.study
        p = store.participant(token)
        if p is None or gid not in study.by_id or (what == "target" and not study.show_target):
            return self._send(404, b"not found", "text/plain")
        if what not in ("input", "target"):
            order = store.order(p, gid)
            if not 1 <= int(what) <= len(order):
                return self._send(404, b"not found", "text/plain")
            what = order[int(what) - 1]
        self._send(200, study.image_path(gid, what).read_bytes(), "image/png", {"Cache-Control": "private, max-age=86400"})

    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        store = self.server.store
        as_json = "json" in (self.headers.get("Content-Type") or "") or "json" in (self.headers.get("Accept") or "")
        m = re.fullmatch(r"/p/([^/]+)/vote", path)
        p = store.participant(m[1]) if m else None
        try:
            self._same_origin()
            if path != "/start" and m is None:
                raise Rejected(404, f"{path}: no such page")
            if m is not None and p is None:
                raise Rejected(404, "unknown participant link; start again with your name or code")
            data = self._body()
            extra = set(data) - ({"name"} if path == "/start" else {"group", "choice"})
            if extra:
                raise Rejected(400, f"unknown field(s) {', '.join(sorted(map(str, extra)))}: a vote names a group and a position, nothing else")
            if path == "/start":
                joined = store.join(data.get("name"))
                url = f"/p/{joined.token}"
                return self._json(200, {"token": joined.token, "url": url}) if as_json else self._redirect(url)
            store.vote(p, data.get("group"), data.get("choice"))
        except Rejected as err:
            return self._reject(err, as_json, p)
        if as_json:
            return self._json(200, {"ok": True, **{k: v for k, v in next_json(store, p).items() if k in ("group", "done", "total", "html")}})
        self._redirect(f"/p/{p.token}")

    def _same_origin(self) -> None:
        origin = self.headers.get("Origin")
        if origin and (origin == "null" or urlsplit(origin).netloc != self.headers.get("Host")):  # null: a sandboxed or local page
            raise Rejected(403, "a vote must come from this page")

    def _body(self) -> dict[str, Any]:
        """The request's fields, from a form or a JSON object; a Rejected for anything else."""
        length = self.headers.get("Content-Length")
        if length is None or not is_whole_number(length):
            self.close_connection = True
            raise Rejected(411, "a body with a Content-Length is needed")
        if int(length) > MAX_BODY:
            if int(length) <= DRAIN:  # read and dropped, so that the client reads the answer instead of a reset connection
                self.rfile.read(int(length))
            self.close_connection = True
            raise Rejected(413, f"body of {length} bytes: at most {MAX_BODY}")
        raw = self.rfile.read(int(length))
        if len(raw) != int(length):  # the client stopped early: a cut body is not the request it announced
            self.close_connection = True
            raise Rejected(400, f"body of {len(raw)} bytes, shorter than its Content-Length {length}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype == "application/json":
            try:
                data = json.loads(raw)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise Rejected(400, "malformed JSON") from None
            if not isinstance(data, dict):
                raise Rejected(400, "JSON body: give an object")
            return data
        if ctype == "application/x-www-form-urlencoded":
            try:
                fields = parse_qs(raw.decode("utf-8"), strict_parsing=bool(raw), max_num_fields=8, errors="strict")
            except (ValueError, UnicodeDecodeError):
                raise Rejected(400, "malformed form") from None
            if any(len(v) > 1 for v in fields.values()):
                raise Rejected(400, "a form field is given twice")
            return {k: v[0] for k, v in fields.items()}
        raise Rejected(415, f"Content-Type {ctype or 'none'}: send a form or JSON")

    def _not_allowed(self) -> None:
        self.close_connection = True
        self._send(405, b"method not allowed", "text/plain", {"Allow": "GET, POST"})

    do_PUT = do_DELETE = do_PATCH = _not_allowed


class StudyServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # connections waiting to be accepted (socketserver's 5 resets some when a room starts at once)

    def __init__(self, store: Store, host: str, port: int):
        self.store = store
        if ":" in host:  # an IPv6 address (::1, ::)
            self.address_family = socket.AF_INET6
        super().__init__((host, port), Handler)

    def handle_error(self, request, client_address) -> None:
        """A client that went away (a closed tab, a dropped phone connection) or stalled past the read timeout
        is no error of the server's: nothing is printed. Anything else is, as socketserver prints it."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def make_server(study: StudyGroups, host: str = "127.0.0.1", port: int = 8765) -> StudyServer:
    """The study's server, bound (port 0: any free port) but not yet serving; a UserError if it cannot bind."""
    try:
        return StudyServer(Store(study), host, port)
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot serve there ({e.strerror or e}); choose another --port") from None


def serve_in_thread(server: StudyServer) -> threading.Thread:
    """Serve until ``server.shutdown()``, in a daemon thread (tests and benchmarks)."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


def serve_study(
    run_dir: str | Path,
    *,
    groups: int | None = None,
    methods: list[str] | None = None,
    show_target: bool | None = None,
    host: str = "127.0.0.1",
    port: int = 8765,
    bench_args: dict[str, Any] | None = None,
) -> None:
    """``assocgan study perceptual RUN_DIR``: prepare the study (once) and serve it until Ctrl-C."""
    study = prepare(run_dir, groups=groups, methods=methods, show_target=show_target, bench_args=bench_args)
    server = make_server(study, host, port)
    db = study.folder / DB
    print(
        f"Perceptual study of {run_dir}: {len(study.groups)} groups over {len(study.tasks)} tasks, methods {', '.join(study.methods)} "
        f"(shown shuffled and unlabelled), target {'shown' if study.show_target else 'hidden'}; {count_votes(study.folder)} votes so far in {db}"
    )
    print(f"Open {server.url}  (Ctrl-C stops, the votes are kept; then `assocgan report {run_dir}` counts them)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Participants on the network open http://{socket.gethostname() if host == '0.0.0.0' else host}:{server.server_address[1]}/")
    sys.stdout.flush()
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C (SIGINT) stops the server even where the process was started with SIGINT ignored, as a
        # background job of a non-interactive shell is (nohup ... &, some CI runners)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped; {count_votes(study.folder)} votes in {db}")
    finally:
        server.server_close()
