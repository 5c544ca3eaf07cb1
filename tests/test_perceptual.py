"""The user study (Table 4): groups made from a run's checkpoints, the voting page and its database, driven
over HTTP and in headless Chromium, and the table the report makes of the votes."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from assocgan import load_generator
from assocgan.cli import main
from assocgan.config import RunConfig
from assocgan.errors import UserError
from assocgan.evaluate import evaluate_task, predict
from assocgan.imaging import to_uint8
from assocgan.io import read_json, write_json
from assocgan.perceptual.groups import load_groups, prepare, task_generator
from assocgan.perceptual.server import MAX_BODY, make_server, serve_in_thread
from assocgan.perceptual.votes import DB, Store, wilson
from assocgan.report.tables import method_label
from assocgan.runner import benchmark_for
from browser import Browser

TINY = ["--preset", "smoke", "--size", "16", "--steps", "4", "--n-train", "4", "--n-test", "4", "--batch-size", "2", "--threads", "1"]
METHODS = ["tl", "single", "piggyback-ti"]  # single and piggyback-ti answer with the task identity
N_GROUPS = 8  # 2 per task


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("perceptual") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", *TINY, "--methods", ",".join(METHODS), "--out", str(out)]) == 0
    prepare(out, groups=N_GROUPS, say=lambda s: None)
    return out


@pytest.fixture(scope="module")
def bench(run_dir):
    return benchmark_for(RunConfig(**read_json(run_dir / "results.json")["config"]))


@pytest.fixture
def study_dir(run_dir, tmp_path) -> Path:
    """A copy of the prepared run folder without votes."""
    d = tmp_path / "run"
    shutil.copytree(run_dir, d, ignore=shutil.ignore_patterns(f"{DB}*", "tb"))
    return d


@contextlib.contextmanager
def serving(folder: Path):
    server = make_server(load_groups(folder), "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def request(url: str, method: str = "GET", body: bytes | str | dict | None = None, ctype: str | None = None, headers: dict | None = None):
    """(status, headers, body) of one request, without following redirects."""
    if isinstance(body, dict):
        body, ctype = json.dumps(body), ctype or "application/json"
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, method=method, headers={**({"Content-Type": ctype} if ctype else {}), **(headers or {})})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def join(base: str, name: str) -> str:
    status, _, body = request(base + "start", "POST", {"name": name})
    assert status == 200, body
    return json.loads(body)["token"]


def vote(base: str, token: str, group, choice) -> tuple[int, dict]:
    status, _, body = request(f"{base}p/{token}/vote", "POST", {"group": group, "choice": choice})
    return status, json.loads(body)


def next_group(base: str, token: str) -> dict:
    status, _, body = request(f"{base}p/{token}/next.json")
    assert status == 200
    return json.loads(body)


def db_rows(folder: Path) -> dict[str, list]:
    db = sqlite3.connect(folder / "perceptual" / DB)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in ("participants", "votes")}
    finally:
        db.close()


def assert_report_counts_the_database(folder: Path, capsys) -> None:
    """``assocgan report --markdown``'s Table 4 equals a count made from the database directly."""
    assert main(["report", str(folder), "--markdown"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("**User study") :]
    header = next(ln for ln in block.splitlines() if ln.startswith("| Method"))
    results = read_json(folder / "results.json")
    db = sqlite3.connect(folder / "perceptual" / DB)
    counts = dict(((t, m), n) for t, m, n in db.execute("SELECT task, method, COUNT(*) FROM votes GROUP BY task, method"))
    n_votes = db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]
    people = db.execute("SELECT COUNT(DISTINCT participant) FROM votes").fetchone()[0]
    db.close()
    tasks = results["tasks"]
    assert [int(n) for n in re.findall(r"\(n=(\d+)\)", header)] == [sum(v for (t, _), v in counts.items() if t == task) for task in tasks] + [n_votes]
    assert f"{people} participant" in block
    for m in load_groups(folder).methods:
        row = next(ln for ln in block.splitlines() if ln.startswith(f"| {method_label(m, results['methods'][m])} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        ks = [int(re.search(r"\((\d+)\)", c)[1]) for c in cells]
        assert ks == [counts.get((t, m), 0) for t in tasks] + [sum(counts.get((t, m), 0) for t in tasks)]
        lo, hi = wilson(ks[-1], n_votes)
        assert cells[-1] == f"{ks[-1] / n_votes:.2f} ({ks[-1]}) [{lo:.2f}, {hi:.2f}]"


# ---- groups and generators ------------------------------------------------------------------
def test_each_method_answers_each_task_as_in_the_run(run_dir, bench):
    results = read_json(run_dir / "results.json")
    for m in METHODS:
        for j, task in enumerate(bench.tasks):
            score = evaluate_task(task_generator(run_dir, m, j), task)["psnr"]
            assert score == pytest.approx(results["methods"][m]["psnr"][-1][j], abs=1e-5), (m, j)
    # the task identity matters: single's first specialist is not its last network
    x, _ = bench.tasks[0].test_pairs()
    assert not torch_equal(predict(task_generator(run_dir, "single", 0), x), predict(load_generator(run_dir, "single", task=4), x))


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_groups_spread_over_the_tasks_and_their_images_are_the_outputs(run_dir, bench):
    study = load_groups(run_dir)
    assert study.methods == METHODS and len(study.groups) == N_GROUPS
    assert [sum(g.task == t for g in study.groups) for t in range(4)] == [2, 2, 2, 2]
    assert len({(g.task, g.image) for g in study.groups}) == N_GROUPS
    for g in (study.groups[0], study.groups[-1]):
        x, y = bench.tasks[g.task].test_pairs()
        x, y = x[g.image : g.image + 1], y[g.image : g.image + 1]
        png = lambda what: np.asarray(Image.open(study.image_path(g.id, what)))
        assert (png("input") == to_uint8(x)[0]).all() and (png("target") == to_uint8(y)[0]).all()
        for m in METHODS:
            assert (png(m) == to_uint8(predict(task_generator(run_dir, m, g.task), x))[0]).all(), m
    # preparing again with the same design reuses the files
    stamp = {p: p.stat().st_mtime_ns for p in (run_dir / "perceptual").rglob("*.png")}
    assert prepare(run_dir, say=lambda s: None).design() == study.design()
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "perceptual").rglob("*.png")} == stamp


def test_a_design_with_votes_is_kept(study_dir, capsys):
    prepare(study_dir, groups=4, methods=["tl", "piggyback-ti"], say=lambda s: None)  # no votes yet: a new design is fine
    assert len(list((study_dir / "perceptual" / "images").glob("*.png"))) == 4 * 4  # input, target, 2 methods
    store = Store(load_groups(study_dir))
    store.vote(store.join("ann"), 1, 1)
    with pytest.raises(UserError, match="1 vote on another design"):
        prepare(study_dir, groups=8, say=lambda s: None)
    assert main(["study", "perceptual", str(study_dir), "--show-target", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "perceptual" in err and "move" in err
    assert len(db_rows(study_dir)["votes"]) == 1


@pytest.mark.parametrize(
    "args, says",
    [
        (["--groups", "17"], "--groups 17: task noise has 4 test images, fewer than its 5 groups; give --groups 16 or fewer"),
        (["--groups", "0"], "--groups 0: must be at least 1"),
        (["--methods", "tl,jl"], "--methods: 'jl' is not in"),
        (["--methods", "tl"], "at least 2 methods"),
    ],
)
def test_bad_options_are_one_line_errors(study_dir, args, says, capsys):
    assert main(["study", "perceptual", str(study_dir), *args, "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err


def test_a_run_on_own_data_needs_that_data(study_dir, tmp_path, capsys):
    results = read_json(study_dir / "results.json")
    write_json(study_dir / "results.json", {**results, "benchmark": "mine"})
    shutil.rmtree(study_dir / "perceptual")
    assert main(["study", "perceptual", str(study_dir), "--groups", "8", "--port", "0"]) == 2
    assert "was trained on your own data (mine), which results.json does not locate; give its --data" in capsys.readouterr().err
    (tmp_path / "other" / "a" / "train").mkdir(parents=True)
    assert main(["study", "perceptual", str(study_dir), "--groups", "8", "--data", str(tmp_path / "other"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("assocgan: error: ")
    assert not (study_dir / "perceptual" / "groups.json").exists()


@pytest.mark.parametrize("text, says", [("{", "not valid JSON"), ('{"methods": ["tl"]}', "not a study's groups")])
def test_a_broken_groups_file_is_a_user_error(study_dir, text, says, capsys):
    (study_dir / "perceptual" / "groups.json").write_text(text)
    assert main(["study", "perceptual", str(study_dir), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "groups.json: " + says in err and "move" in err


def test_a_folder_without_a_run_is_a_user_error(tmp_path, capsys):
    assert main(["study", "perceptual", str(tmp_path), "--port", "0"]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_a_port_in_use_is_a_user_error(study_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["study", "perceptual", str(study_dir), "--port", str(port)]) == 2
    assert f"--port {port}: cannot serve there" in capsys.readouterr().err


def test_wilson_interval():
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


# ---- the server over HTTP ----------------------------------------------------------------------
def test_bad_requests_get_a_4xx_and_change_nothing(study_dir):
    with serving(study_dir) as server:
        base = server.url
        token = join(base, "ann")
        g = next_group(base, token)["group"]
        assert vote(base, token, g, 2)[0] == 200
        other = next_group(base, token)["group"]
        vote_url = f"{base}p/{token}/vote"
        form = "application/x-www-form-urlencoded"
        bad = [
            ("unknown group", vote_url, "POST", {"group": 999, "choice": 1}, None, {}, 404),
            ("forged method name as the choice", vote_url, "POST", {"group": other, "choice": "tl"}, None, {}, 400),
            ("forged method name beside the choice", vote_url, "POST", {"group": other, "choice": 1, "method": "tl"}, None, {}, 400),
            ("position not shown", vote_url, "POST", {"group": other, "choice": len(METHODS) + 1}, None, {}, 400),
            ("position zero", vote_url, "POST", {"group": other, "choice": 0}, None, {}, 400),
            ("replayed vote", vote_url, "POST", {"group": g, "choice": 1}, None, {}, 409),
            ("malformed JSON", vote_url, "POST", '{"group": 1, "choice":', "application/json", {}, 400),
            ("JSON not an object", vote_url, "POST", "[1, 2]", "application/json", {}, 400),
            ("oversized body", vote_url, "POST", json.dumps({"group": other, "choice": 1, "pad": "x" * MAX_BODY}), "application/json", {}, 413),
            ("unknown participant", f"{base}p/nobody/vote", "POST", {"group": other, "choice": 1}, None, {}, 404),
            ("form field given twice", vote_url, "POST", f"group={other}&group={g}&choice=1", form, {}, 400),
            ("empty form", vote_url, "POST", "", form, {}, 400),
            ("other content type", vote_url, "POST", f"group={other}&choice=1", "text/plain", {}, 415),
            ("another site's form", vote_url, "POST", f"group={other}&choice=1", form, {"Origin": "http://elsewhere.example"}, 403),
            ("a sandboxed or local page's form (Origin null)", vote_url, "POST", f"group={other}&choice=1", form, {"Origin": "null"}, 403),
            ("deeply nested JSON", vote_url, "POST", "[" * 2000 + "]" * 2000, "application/json", {}, 400),
            ("a name already taken, typed again in other case", f"{base}start", "POST", {"name": "ANN"}, None, {}, 409),
            ("PUT", vote_url, "PUT", {"group": other, "choice": 1}, None, {}, 405),
            ("empty name", f"{base}start", "POST", {"name": "  "}, None, {}, 400),
            ("name too long", f"{base}start", "POST", {"name": "x" * 65}, None, {}, 400),
            ("unknown page", f"{base}admin", "GET", None, None, {}, 404),
            ("image of an unknown group", f"{base}img/{token}/999/1.png", "GET", None, None, {}, 404),
            ("image of a position not shown", f"{base}img/{token}/{other}/{len(METHODS) + 1}.png", "GET", None, None, {}, 404),
            ("hidden target", f"{base}img/{token}/{other}/target.png", "GET", None, None, {}, 404),
        ]
        before = db_rows(study_dir)
        for what, url, method, body, ctype, headers, status in bad:
            got, _, text = request(url, method, body, ctype, headers)
            assert got == status, (what, got, text[:200])
            assert db_rows(study_dir) == before, what
        # the same form, well made, is taken (and answered with the participant's next page)
        status, headers, _ = request(vote_url, "POST", f"group={other}&choice=1", form, {"Origin": base.rstrip("/")})
        assert status == 303 and headers["Location"] == f"/p/{token}"
        assert len(db_rows(study_dir)["votes"]) == 2


def test_no_method_name_reaches_the_page_and_a_vote_counts_for_the_picture_chosen(study_dir):
    study = load_groups(study_dir)
    with serving(study_dir) as server:
        base = server.url
        token = join(base, "cat")
        for k in range(N_GROUPS):
            nxt = next_group(base, token)
            assert not any(m in nxt["html"] for m in METHODS)
            assert nxt["done"] == k and nxt["choices"] == len(METHODS)
            choice = 1 + k % len(METHODS)
            shown = request(base.rstrip("/") + nxt["images"][choice - 1])[2]
            status, reply = vote(base, token, nxt["group"], choice)
            assert status == 200 and reply["done"] == k + 1
            method = db_rows(study_dir)["votes"][-1][4]
            assert shown == study.image_path(nxt["group"], method).read_bytes()
        assert next_group(base, token)["group"] is None
        rows = db_rows(study_dir)["votes"]
        assert sorted(r[2] for r in rows) == [g.id for g in study.groups]  # every group once
        for r in rows:  # the order shown is kept with the vote and holds every method once
            assert sorted(json.loads(r[5])) == sorted(METHODS) and r[4] in json.loads(r[5])


def test_two_browsers_at_once_count_every_vote_once(study_dir, capsys):
    with serving(study_dir) as server:
        base = server.url
        # the same vote sent six times at once: one is recorded
        token = join(base, "dup")
        g = next_group(base, token)["group"]
        barrier = threading.Barrier(6)
        statuses = []

        def same_vote():
            barrier.wait()
            statuses.append(vote(base, token, g, 1)[0])

        threads = [threading.Thread(target=same_vote) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [200] + [409] * 5
        # four participants, each voting from two "browsers" at once, to the end
        acked: list[tuple[str, int]] = []

        tokens = {f"p{k}": join(base, f"p{k}") for k in range(4)}  # each participant's code, used by both of its browsers

        def browse(name: str):
            tok = tokens[name]
            while (nxt := next_group(base, tok))["group"] is not None:
                status, _ = vote(base, tok, nxt["group"], 1 + len(acked) % len(METHODS))
                assert status in (200, 409)
                if status == 200:
                    acked.append((name, nxt["group"]))

        threads = [threading.Thread(target=browse, args=(f"p{k // 2}",)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    rows = db_rows(study_dir)
    names = {pid: name for pid, name, *_ in rows["participants"]}
    recorded = sorted((names[r[1]], r[2]) for r in rows["votes"] if names[r[1]] != "dup")
    assert recorded == sorted(acked) and len(recorded) == 4 * N_GROUPS
    assert_report_counts_the_database(study_dir, capsys)
    # the same table as LaTeX: one line a row, the special characters escaped
    assert main(["report", str(study_dir), "--latex"]) == 0
    latex = capsys.readouterr().out
    table = latex[latex.index("\\caption{User study") :]
    table = table[: table.index("\\end{table}")]
    assert "\\begin{tabular}{lrrrrr}" in table and "95\\% Wilson" in table
    lines = [ln for ln in table.splitlines() if ln.endswith("\\\\")]
    single = method_label("single", read_json(study_dir / "results.json")["methods"]["single"])
    assert len(lines) == 1 + len(METHODS) and lines[2].startswith(f"{single} & ")
    assert all(ln.count(" & ") == 5 for ln in lines)


def test_a_killed_server_loses_no_recorded_vote_and_participants_resume(study_dir):
    def start() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assocgan.cli", "study", "perceptual", str(study_dir), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in proc.stdout:
            m = re.match(r"Open (http://\S+)", line)
            if m:
                return proc, m[1]
        raise AssertionError(f"the server did not start: {proc.wait()}")

    proc, base = start()
    acked: list[tuple[str, int]] = []
    stop = threading.Event()

    def voter(name: str):
        try:
            tok = join(base, name)
            while not stop.is_set() and (nxt := next_group(base, tok))["group"] is not None:
                if vote(base, tok, nxt["group"], 1)[0] == 200:
                    acked.append((name, nxt["group"]))
        except (OSError, http.client.HTTPException, AssertionError):  # the server is gone
            pass

    threads = [threading.Thread(target=voter, args=(f"v{k}",)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-stream, as a crash
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    rows = db_rows(study_dir)
    names = {pid: name for pid, name, *_ in rows["participants"]}
    recorded = {(names[r[1]], r[2]) for r in rows["votes"]}
    assert len(acked) >= 6 and set(acked) <= recorded  # every vote answered as recorded is there
    assert len(recorded) <= len(acked) + len(threads)  # at most the one in flight per voter beyond them
    # restarted, each participant goes on from the first group it has not voted on
    proc, base = start()
    try:
        study = load_groups(study_dir)
        store = Store(study)
        code = {name: token for _, name, token, *_ in db_rows(study_dir)["participants"]}
        for k in range(3):
            p = store.join(code.get(f"v{k}", f"v{k}"))  # the code brings the participant back (one killed before joining joins now)
            tok = p.token
            done = {g for n, g in recorded if n == f"v{k}"}
            assert next_group(base, tok)["group"] == next((g for g in store.sequence(p) if g not in done), None)
            while (nxt := next_group(base, tok))["group"] is not None:
                assert vote(base, tok, nxt["group"], 2)[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and f"{3 * N_GROUPS} votes in" in out
    assert len(db_rows(study_dir)["votes"]) == 3 * N_GROUPS


# ---- in headless Chromium ----------------------------------------------------------------------
GROUP_STATE = (
    "(() => { const m = document.querySelector('main'); if (!m || document.readyState !== 'complete') return null; "
    "const imgs = [...m.querySelectorAll('img')]; if (!imgs.every(i => i.complete && i.naturalWidth > 0)) return null; "
    "return {kind: m.className, group: +m.dataset.group || null, done: +m.dataset.done, total: +m.dataset.total, "
    "inputs: m.querySelectorAll('figure.input img').length, choices: [...m.querySelectorAll('button.choice img')].map(i => i.src), "
    "text: m.innerText, html: document.documentElement.outerHTML, js: document.documentElement.classList.contains('js'), "
    "overflow: document.documentElement.scrollWidth > innerWidth, "
    "buttons: [...m.querySelectorAll('button.choice')].map(b => { const r = b.getBoundingClientRect(); return [r.left, r.right, r.height]; }), "
    "width: innerWidth}; })()"
)


def state(page, done: int | None = None) -> dict:
    cond = GROUP_STATE if done is None else f"(s => s && s.done === {done} && s)({GROUP_STATE})"
    return page.wait(cond)


def check_group_page(s: dict, study, phone: bool = False) -> None:
    assert s["kind"] == "group" and s["inputs"] == 1 and len(s["choices"]) == len(study.methods)
    assert f"{s['done']} of {s['total']} done" in s["text"] and f"Group {s['done'] + 1} of {s['total']}" in s["text"]
    html = re.sub(r"/(p|img)/[A-Za-z0-9_-]+|data-code=\"\">[A-Za-z0-9_-]+", "", s["html"]).lower()  # the participant's token is random
    assert not any(re.search(rf"\b{m}\b", html) for m in study.methods), "a method name is on the page"
    if phone:
        assert not s["overflow"], "the page is wider than the phone"
        assert all(0 <= left and right <= s["width"] and height >= 44 for left, right, height in s["buttons"])


def enter(browser: Browser, url: str, name: str, by_key: bool, **page_options):
    """A new page on which a participant types a name or code and starts (Enter, or a click on Start)."""
    page = browser.page(**page_options)
    page.goto(url)
    page.click("#name")
    page.type(name)
    page.press("Enter") if by_key else page.click("form.join button")
    return page


def vote_through(page, study, vote, midway, js: bool, phone: bool = False):
    """Vote on every group with ``vote(page, k)``; after the middle one, go on with the page ``midway(page, done)``
    returns. Returns the groups in the order shown, and the last page."""
    seen, n = [], len(study.groups)
    for k in range(n):
        s = state(page, k)
        check_group_page(s, study, phone)
        assert s["js"] == js
        seen.append(s["group"])
        vote(page, k)
        if k == n // 2:
            state(page, k + 1)
            page = midway(page, k + 1)
    assert state(page, n)["kind"] == "end"
    return seen, page


def test_two_participants_vote_in_chromium_and_the_report_counts_them(chromium, study_dir, tmp_path, capsys):
    study = load_groups(study_dir)
    n, m = len(study.groups), len(study.methods)
    phone = {"width": 390, "height": 844, "mobile": True, "javascript": False}
    browser = Browser(chromium, tmp_path / "profile")
    try:
        with serving(study_dir) as server:

            def reload(page, done):  # the same group again after a reload
                shown = page.eval("+document.querySelector('main').dataset.group")
                page.reload()
                assert state(page, done)["group"] == shown
                return page

            # ann: JavaScript on, picks with the number keys, reloads the page midway and resumes
            ann = enter(browser, server.url, "ann", by_key=True)
            seen, _ = vote_through(ann, study, lambda page, k: page.press(str(1 + k % m)), reload, js=True)
            # bob: JavaScript off (plain forms), on a phone, clicks; leaves midway and comes back with the code his pages show
            bob = enter(browser, server.url, "bob", by_key=False, **phone)
            seen_bob, bob = vote_through(
                bob,
                study,
                lambda page, k: page.click(f"button.choice[value='{1 + (k * 7) % m}']"),
                lambda page, done: enter(browser, server.url, page.eval("document.querySelector('[data-code]').textContent"), by_key=False, **phone),
                js=False,
                phone=True,
            )
            assert "Thank you, bob" in state(bob, n)["text"]
    finally:
        browser.close()
    ids = sorted(g.id for g in study.groups)
    assert sorted(seen) == ids and sorted(seen_bob) == ids  # every group once each
    rows = db_rows(study_dir)
    assert [r[1] for r in rows["participants"]] == ["ann", "bob"] and len(rows["votes"]) == 2 * n
    assert_report_counts_the_database(study_dir, capsys)
    assert main(["report", str(study_dir)]) == 0
    page = (study_dir / "report.html").read_text()
    assert "User study (the paper&#x27;s Table 4)" in page or "User study (the paper's Table 4)" in page


def raw_exchange(server, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection, stop sending, and read what comes back until the server closes."""
    import socket

    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


def test_a_name_is_no_credential_and_the_code_resumes(study_dir):
    with serving(study_dir) as server:
        base = server.url
        token = join(base, "dee")
        g = next_group(base, token)["group"]
        assert vote(base, token, g, 1)[0] == 200
        for typed in ("dee", "DEE", " Dee "):
            status, _, body = request(base + "start", "POST", {"name": typed})
            assert status == 409 and "taken" in json.loads(body)["error"]
        assert join(base, token) == token  # the code brings the participant back
        assert next_group(base, token)["done"] == 1
        status, _, page = request(f"{base}p/{token}")
        assert status == 200 and f"data-code>{token}<" in page.decode()
    assert [r[1] for r in db_rows(study_dir)["participants"]] == ["dee"]


def test_a_cut_body_a_stalled_client_and_a_client_that_leaves_change_nothing_and_print_nothing(study_dir, monkeypatch, capfd):
    from assocgan.perceptual import server as srv

    monkeypatch.setattr(srv.Handler, "timeout", 1.0)
    with serving(study_dir) as server:
        base = server.url
        token = join(base, "eve")
        g = next_group(base, token)["group"]
        before = db_rows(study_dir)
        host = f"{server.server_address[0]}:{server.server_address[1]}"
        # a body shorter than its Content-Length: "choice=12" cut to "choice=1" is not a vote for 1
        cut = f"group={g}&choice=1".encode()
        head = (
            f"POST /p/{token}/vote HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(cut) + 1}\r\n\r\n"
        ).encode()
        reply = raw_exchange(server, head + cut)
        assert reply.startswith(b"HTTP/1.1 400") and b"shorter than its Content-Length" in reply
        assert db_rows(study_dir) == before
        # a client that sends half a request and stalls is cut off after the read timeout, holding no thread
        import socket
        import time

        stalled = socket.create_connection(server.server_address[:2])
        stalled.sendall(b"GET / HTTP/1.1\r\nHost: x")
        t0 = time.monotonic()
        stalled.settimeout(10)
        assert stalled.recv(100) == b"" and time.monotonic() - t0 < 5  # closed by the server
        stalled.close()
        # clients that go away before reading their answers
        for _ in range(5):
            c = socket.create_connection(server.server_address[:2])
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.sendall(f"GET /p/{token} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            c.close()  # a reset, with the answer unread
        time.sleep(0.5)
        assert next_group(base, token)["done"] == 0  # still serving
        assert db_rows(study_dir) == before
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err


def test_the_server_serves_on_ipv6_loopback(study_dir):
    import socket

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = make_server(load_groups(study_dir), "::1", 0)
    except UserError as e:
        pytest.skip(f"::1 cannot be bound here ({e})")
    serve_in_thread(server)
    try:
        assert server.url.startswith("http://[::1]:")
        status, _, body = request(server.url)
        assert status == 200 and b"<form" in body
    finally:
        server.shutdown()
        server.server_close()
