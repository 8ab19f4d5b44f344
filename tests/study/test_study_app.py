"""The study's web application, served by uvicorn on a loopback port inside the test process:
the participant's path, idempotent answers, access rules, the results page and the database
rules behind them."""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import threading
import time

import pytest
from study_helpers import db_rows, image_sources, pattern, write

from cyclemask.errors import ConfigError, InputError
from cyclemask.study.app import PARTICIPANT_COOKIE, AppSettings, create_app
from cyclemask.study.server import base_url, bind_socket, open_study, resolve_per_person
from cyclemask.study.store import DUPLICATE, NOT_NEXT, SAVED, UNKNOWN


@pytest.fixture
def study(study_config):
    s = open_study(study_config)
    yield s
    s.store.close()


@pytest.fixture
def client_for(study):
    """client_for(**AppSettings overrides) -> an httpx client of a server with those settings."""
    import httpx
    import uvicorn

    servers, clients = {}, []

    def make(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in servers:
            settings = AppSettings(per_person=study.per_person, image_dir=study.config.image_dir, token=study.token,
                                   image_size=study.config.size, **overrides)
            sock = bind_socket("127.0.0.1", 0)
            server = uvicorn.Server(uvicorn.Config(create_app(study.store, settings), log_level="warning", lifespan="off"))
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            deadline = time.monotonic() + 60  # hang guard
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
                time.sleep(0.01)
            servers[key] = (server, thread, sock, base_url(sock))
        c = httpx.Client(base_url=servers[key][3], follow_redirects=False, timeout=60)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()
    for server, thread, sock, _ in servers.values():
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def begin(client):
    r = client.post("/start", data={"consent": "yes"})
    assert r.status_code == 303 and r.headers["location"] == "/q"
    return client.cookies.get(PARTICIPANT_COOKIE)


def current(client):
    r = client.get("/q")
    assert r.status_code == 200, r.text
    return int(re.search(r'name="position" value="(\d+)"', r.text).group(1)), re.search(r'src="/img/(\w+)"', r.text).group(1)


def test_a_participant_completes_the_study(study, client_for):
    client = client_for()
    r = client.get("/")
    assert r.status_code == 200 and "6 photos of faces" in r.text and 'name="viewport"' in r.text
    assert client.post("/start", data={}).status_code == 400          # consent is required
    pid = begin(client)
    assert len(pid) >= 22                                              # 128 random bits
    sources = image_sources(study.config.study_dir)
    shown, right = [], 0
    for i in range(6):
        pos, image_id = current(client)
        assert pos == i
        img = client.get(f"/img/{image_id}")
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert "last-modified" not in img.headers and "etag" not in img.headers
        answer = sources[image_id] if i % 2 == 0 else "real"
        right += answer == sources[image_id]
        r = client.post("/answer", data={"position": str(pos), "answer": answer, "confidence": str(1 + i % 3)})
        assert r.status_code == 303
        shown.append(image_id)
    assert sorted(sources[s] for s in shown) == ["generated"] * 3 + ["real"] * 3   # balanced
    assert len(set(shown)) == 6
    assert client.get("/q").headers["location"] == "/done"
    assert client.get("/").headers["location"] == "/done"
    assert f"<strong>{right} of 6</strong>" in client.get("/done").text
    rows = db_rows(study.config.study_dir, "SELECT position, answer, confidence FROM answers ORDER BY position")
    assert [r[0] for r in rows] == list(range(6)) and [r[2] for r in rows] == [1, 2, 3, 1, 2, 3]


def test_double_and_stale_submissions_are_ignored(study, client_for):
    client = client_for()
    begin(client)
    pos, first = current(client)
    for answer in ("real", "real", "generated"):                       # double click, then a changed mind
        assert client.post("/answer", data={"position": str(pos), "answer": answer}).status_code == 303
    assert db_rows(study.config.study_dir, "SELECT answer FROM answers") == [("real",)]
    pos2, second = current(client)
    assert pos2 == 1 and second != first
    client.post("/answer", data={"position": "4", "answer": "real"})  # a position ahead of the next one
    assert current(client) == (1, second)
    assert len(db_rows(study.config.study_dir, "SELECT * FROM answers")) == 1
    for bad in ({"position": "1", "answer": "fake"}, {"position": "x", "answer": "real"},
                {"position": "1", "answer": "real", "confidence": "9"}, {"answer": "real"}):
        r = client.post("/answer", data=bad)
        assert r.status_code == 400 and "could not be read" in r.text
    assert len(db_rows(study.config.study_dir, "SELECT * FROM answers")) == 1


def test_reload_and_return_resume_where_the_participant_was(study, client_for):
    client = client_for()
    pid = begin(client)
    for _ in range(2):
        pos, _ = current(client)
        client.post("/answer", data={"position": str(pos), "answer": "generated"})
    at = current(client)
    assert at == current(client)                                       # reloading changes nothing
    assert client.post("/start", data={"consent": "yes"}).headers["location"] == "/q"   # no second participant
    again = client_for()                                          # the browser comes back later
    again.cookies.set(PARTICIPANT_COOKIE, pid)
    assert again.get("/").headers["location"] == "/q"
    assert current(again) == at == (2, at[1])
    assert db_rows(study.config.study_dir, "SELECT COUNT(*) FROM participants") == [(1,)]


def test_nothing_is_readable_across_participants(study, client_for):
    a, b = client_for(), client_for()
    begin(a)
    begin(b)
    _, a_img = current(a)
    b_images = {row[0] for row in db_rows(study.config.study_dir,
                "SELECT image_id FROM assignments WHERE participant_id = ?", (b.cookies.get(PARTICIPANT_COOKIE),))}
    if a_img not in b_images:
        assert b.get(f"/img/{a_img}").status_code == 404               # not in b's sequence
    stranger = client_for()
    assert stranger.get(f"/img/{a_img}").status_code == 404
    stranger.cookies.set(PARTICIPANT_COOKIE, "made-up-id")
    assert stranger.get(f"/img/{a_img}").status_code == 404
    assert stranger.get("/q").headers["location"] == "/"
    for path in ("/img/..%2F..%2Fstudy.sqlite3", "/img/../study.sqlite3", "/static/../study.sqlite3",
                 "/img/" + a_img + "%00", "/results/answers.csv", "/results", "/images/x.jpg"):
        r = a.get(path)
        assert r.status_code in (403, 404), path
        assert b"SQLite" not in r.content
    # Only the results pages, behind the token, list answers; they name participants by number.
    r = a.get(f"/results?token={study.token}")
    assert r.status_code == 303 and r.headers["location"] == "/results"
    page = a.get("/results").text
    assert a.cookies.get(PARTICIPANT_COOKIE) not in page and "P1" in page


def test_results_page_csv_and_plot(study, client_for):
    client = client_for()
    begin(client)
    sources = image_sources(study.config.study_dir)
    for _ in range(6):
        pos, image_id = current(client)
        client.post("/answer", data={"position": str(pos), "answer": "real"})   # real: 3 right, 3 fooled
    admin = client_for()
    assert admin.get("/results").status_code == 403
    assert admin.get("/results?token=wrong").status_code == 403
    admin.get(f"/results?token={study.token}")
    page = admin.get("/results").text
    assert "participants: 1 (1 finished), answers: 6" in page
    assert "50.00 % (95 % CI 18.8-81.2 %; 3 of 6)" in page                       # overall error
    assert "fool rate (generated images judged real): 100.00 %" in page
    assert "the paper: 40.08 %" in page
    rows = list(csv.DictReader(io.StringIO(admin.get("/results/answers.csv").text)))
    assert len(rows) == 6 and {r["answer"] for r in rows} == {"real"}
    assert sum(r["correct"] == "1" for r in rows) == 3
    assert {r["source"] for r in rows} == {"real", "generated"} and all(r["image"] for r in rows)
    people = list(csv.DictReader(io.StringIO(admin.get(f"/results/participants.csv?token={study.token}").text)))
    assert people[0]["score"] == "3" and people[0]["complete"] == "True"
    images = list(csv.DictReader(io.StringIO(admin.get("/results/images.csv").text)))
    assert len(images) == 16 and sum(int(r["answers"]) for r in images) == 6
    png = admin.get("/results/plot.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    assert admin.get("/results/other.txt").status_code == 404
    assert len(sources) == 16


def test_security_headers_and_host_check(study, client_for):
    client = client_for()
    r = client.get("/")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer"
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 gets nothing.
    for evil in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", "[::2]:80", ""):
        r = client.get("/", headers={"host": evil})
        assert r.status_code == 400 and r.text == "Invalid host header", evil
    assert client.get("/", headers={"host": "localhost:1234"}).status_code == 200
    opened = client_for(allowed_hosts=None)                     # --host 0.0.0.0: any name
    assert opened.get("/", headers={"host": "lab-pc.local:8000"}).status_code == 200


def test_full_study_turns_new_visitors_away(study, client_for):
    client = client_for(max_participants=1)
    begin(client)
    late = client_for(max_participants=1)
    r = late.post("/start", data={"consent": "yes"})
    assert r.status_code == 200 and "The study is full" in r.text and PARTICIPANT_COOKIE not in late.cookies


def test_store_rules(study):
    store = study.store
    pid = store.create_participant(6)
    state = store.participant(pid)
    assert (state.answered, state.n_items) == (0, 6)
    assert store.record_answer(pid, 0, "real", None) == SAVED
    assert store.record_answer(pid, 0, "generated", 3) == DUPLICATE
    assert store.record_answer(pid, 2, "real", None) == NOT_NEXT
    assert store.record_answer("nobody", 0, "real", None) == UNKNOWN
    with pytest.raises(InputError, match="answer must be one of real, generated"):
        store.record_answer(pid, 1, "maybe", None)


def test_every_image_is_shown_about_equally_often(study):
    # 8 real + 8 generated, 4 per participant: after 4 participants each image was drawn once.
    for _ in range(4):
        study.store.create_participant(4)
    counts = [r["assigned"] for r in study.store.image_rows()]
    assert counts == [1] * 16
    for _ in range(3):
        pid = study.store.create_participant(5)                        # odd: 3 + 2 either way
        n_real = db_rows(study.config.study_dir, "SELECT COUNT(*) FROM assignments a JOIN images i ON i.id = a.image_id "
                         "WHERE a.participant_id = ? AND i.source = 'real'", (pid,))[0][0]
        assert n_real in (2, 3)


def test_image_set_is_fixed_once_someone_took_part(study, study_config):
    study.store.create_participant(6)
    study.store.close()
    write(study_config.generated / "new.png", pattern(4242, 128, 128))
    with pytest.raises(InputError, match=r"already has 1 participant\(s\) and was started with another image set "
                                         r"\(1 image\(s\) new in the folders, 0 gone since\)"):
        open_study(study_config)
    with pytest.raises(ConfigError, match="cannot change now"):
        open_study(dataclasses.replace(study_config, size=128))
    (study_config.generated / "new.png").unlink()
    again = open_study(study_config)                                   # the same folders: resumes
    assert again.store.participant_count() == 1 and again.token == study.token
    again.store.close()


def test_host_name():
    from cyclemask.study.app import host_name

    assert host_name("[::1]:8000") == "[::1]" and host_name("127.0.0.1:80") == "127.0.0.1"
    assert host_name("LocalHost") == "localhost" and host_name("::1") == "::1"


def test_per_person_defaults_and_limits():
    assert resolve_per_person(None, 100, 100) == 22
    assert resolve_per_person(None, 5, 100) == 10
    assert resolve_per_person(7, 4, 4) == 7
    with pytest.raises(ConfigError, match="--per-person 8 needs up to 4 generated images per participant; only 3"):
        resolve_per_person(8, 10, 3)
