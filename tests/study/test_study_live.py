"""The study server as a real process on loopback: 50 participants answering at once, and a
server killed with SIGKILL mid-study and started again."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

import pytest
from study_helpers import StudyServer, db_rows, make_folders

httpx = pytest.importorskip("httpx", reason="the live tests need httpx (pip install -e '.[test]')")

# Hang guards: a run that takes longer is stuck, not slow. They assert nothing about speed.
LOAD_GUARD_S = 400
REQUEST_TIMEOUT_S = 120


def _position_and_image(client) -> tuple[int, str]:
    r = client.get("/q")
    assert r.status_code == 200, (r.status_code, r.headers.get("location"))
    return (int(re.search(r'name="position" value="(\d+)"', r.text).group(1)),
            re.search(r'src="/img/(\w+)"', r.text).group(1))


def _participant(url: str, index: int, per_person: int, go: threading.Barrier) -> dict:
    """One simulated participant: start, then answer every image; every third answer is sent twice
    (a double click), the second time with the other answer, which must be ignored."""
    log = {"answers": {}, "images": {}}
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False) as c:
        go.wait(timeout=REQUEST_TIMEOUT_S)
        assert c.get("/").status_code == 200
        assert c.post("/start", data={"consent": "yes"}).status_code == 303
        log["pid"] = c.cookies.get("cyclemask_study")
        for i in range(per_person):
            pos, image_id = _position_and_image(c)
            assert pos == i, f"participant {index}: expected position {i}, got {pos}"
            assert c.get(f"/img/{image_id}").status_code == 200
            answer = ("real", "generated")[(index + i) % 2]
            assert c.post("/answer", data={"position": str(pos), "answer": answer, "confidence": "2"}).status_code == 303
            if i % 3 == 0:
                other = "generated" if answer == "real" else "real"
                assert c.post("/answer", data={"position": str(pos), "answer": other}).status_code == 303
            log["answers"][pos] = answer
            log["images"][pos] = image_id
        assert c.get("/q").headers["location"] == "/done"
    return log


@pytest.mark.slow  # fifty concurrent participants against a live server (~5 s)
def test_fifty_participants_at_once(tmp_path):
    n_people, per_person = 50, 10
    real, gen = make_folders(tmp_path / "in", 12, 12)
    study_dir = tmp_path / "study"
    with StudyServer(real, gen, study_dir, "--per-person", str(per_person)) as server:
        go = threading.Barrier(n_people)
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=n_people) as pool:
            futures = [pool.submit(_participant, server.url, i, per_person, go) for i in range(n_people)]
            finished, unfinished = wait(futures, timeout=LOAD_GUARD_S)
            assert not unfinished, f"hang guard: {len(unfinished)} participants unfinished after {LOAD_GUARD_S} s"
        logs = [f.result() for f in futures]  # re-raises any participant's failure
        print(f"\n{n_people} participants x {per_person} answers (+ double posts) in {time.monotonic() - t0:.1f} s "
              "(loopback, loaded 2-core machine: not a benchmark)")

        # Every answer is stored once, with the value first sent, at the position and image shown.
        stored = db_rows(study_dir, "SELECT a.participant_id, a.position, a.answer, s.image_id FROM answers a "
                                    "JOIN assignments s USING (participant_id, position)")
        assert len(stored) == n_people * per_person
        assert len({(p, pos) for p, pos, _, _ in stored}) == len(stored)
        by_pid = {log["pid"]: log for log in logs}
        assert len(by_pid) == n_people and db_rows(study_dir, "SELECT COUNT(*) FROM participants") == [(n_people,)]
        for pid, pos, answer, image_id in stored:
            assert by_pid[pid]["answers"][pos] == answer, "a later double post replaced the first answer"
            assert by_pid[pid]["images"][pos] == image_id

        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as admin:
            page = admin.get(server.results_url, follow_redirects=True).text
        assert f"participants: {n_people} ({n_people} finished), answers: {n_people * per_person}" in page
        assert server.stop() == 0


def test_killed_server_restarts_and_participants_resume(tmp_path):
    real, gen = make_folders(tmp_path / "in", 6, 6)
    study_dir = tmp_path / "study"
    args = (real, gen, study_dir, "--per-person", "8")
    with StudyServer(*args) as first:
        client = httpx.Client(base_url=first.url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False)
        client.post("/start", data={"consent": "yes"})
        sent = {}
        for i in range(3):
            pos, image_id = _position_and_image(client)
            sent[pos] = (image_id, ("real", "generated")[i % 2])
            assert client.post("/answer", data={"position": str(pos), "answer": sent[pos][1]}).status_code == 303
        fourth = _position_and_image(client)
        assert fourth[0] == 3
        first.kill()                                                  # SIGKILL: no shutdown code runs
        assert first.proc.returncode == -9
    stored = db_rows(study_dir, "SELECT a.position, s.image_id, a.answer FROM answers a "
                                "JOIN assignments s USING (participant_id, position) ORDER BY a.position")
    assert stored == [(p, img, ans) for p, (img, ans) in sorted(sent.items())]

    with StudyServer(*args) as second:
        assert "resuming: 1 participant(s) so far" in second.output()
        assert second.token == first.token                            # the printed results address still works
        client = httpx.Client(base_url=second.url, timeout=REQUEST_TIMEOUT_S, follow_redirects=False,
                              cookies=client.cookies)
        assert client.get("/").headers["location"] == "/q"
        assert _position_and_image(client) == fourth                  # the same image, where they stopped
        for i in range(3, 8):
            pos, _ = _position_and_image(client)
            assert pos == i
            client.post("/answer", data={"position": str(pos), "answer": "real"})
        assert client.get("/q").headers["location"] == "/done"
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as admin:
            page = admin.get(second.results_url, follow_redirects=True).text
        assert "participants: 1 (1 finished), answers: 8" in page
        assert second.stop() == 0                                     # SIGTERM: a clean stop
        assert "server stopped; every answer given is in" in second.output()
    assert db_rows(study_dir, "SELECT COUNT(*) FROM answers") == [(8,)]
