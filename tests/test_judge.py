"""The LLM judge: its rubric's answers parsed, an endpoint's failures survived, and its
grades carried from a sweep's evaluations to eval.json, runs.csv and the report."""

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from tests.conftest import ROOT, run_cli
from tinyscale.evals import MissingOptional
from tinyscale.evals.coherence import synth_scores
from tinyscale.evals.judge import CRITERIA, FIRST, Judge, parse_grades

GOOD = "Grammar: 8/10, Creativity: 6/10, Consistency: 7/10, Plot: 5/10, Age group: C."


def test_parse_grades():
    assert parse_grades(GOOD) == {"grammar": 8, "creativity": 6, "consistency": 7,
                                  "plot": 5, "age_group": "C"}
    assert parse_grades("Grammar: 8/10, the rest is unclear") is None
    assert parse_grades("grammar - 9 out of 10; creativity: 4/10; consistency: 10/10; "
                        "plot: 3/10. Age group (B)")["grammar"] == 9


class FakeEndpoint(BaseHTTPRequestHandler):
    """Answers like an OpenAI-compatible chat endpoint, with failures along the way."""
    script: list = []
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeEndpoint.seen.append((self.headers.get("Authorization"), body))
        status, content = FakeEndpoint.script.pop(0) if FakeEndpoint.script else (200, GOOD)
        self.send_response(status)
        self.end_headers()
        if status == 200:
            answer = content if content.startswith("{") else json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": content}}]})
            self.wfile.write(answer.encode())

    def log_message(self, *args):
        pass


def test_judge_against_a_local_endpoint(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TEST_JUDGE_KEY", "sk-secret")
    FakeEndpoint.script = [(429, ""), (500, ""), (200, "{not json"), (200, "Nice story."),
                           (200, "I cannot grade this."),  # malformed grades: asked again
                           (200, "It is fine."), (200, GOOD)]
    judge = Judge(f"http://127.0.0.1:{server.server_port}/v1", "judge-model", "TEST_JUDGE_KEY",
                  concurrency=2, retries=4, backoff=0.01)
    try:
        grades = judge.grade("Once upon a time", " there was a cat.")
        assert grades == parse_grades(GOOD)
        assert all(auth == "Bearer sk-secret" for auth, _ in FakeEndpoint.seen)
        assert FakeEndpoint.seen[-1][1]["model"] == "judge-model"
        assert "***" in FakeEndpoint.seen[-1][1]["messages"][0]["content"]
        results = judge.grade_all([("A", " b."), ("C", " d."), ("E", " f.")])
        assert results == [parse_grades(GOOD)] * 3
    finally:
        server.shutdown()


def test_judge_missing_endpoint_says_how_to_configure():
    with pytest.raises(MissingOptional, match="judge_url"):
        Judge("", "m")



def _story(first_turn: str) -> tuple[str, str]:
    """(prompt, completion) out of the rubric's first question."""
    head, tail = FIRST.split("{story}")
    story = first_turn[len(head):len(first_turn) - len(tail)]
    prompt, completion = story.split("***", 1)
    return prompt, completion


def standin_grades(prompt: str, completion: str) -> dict:
    """What the stand-in judge answers: the rubric's grades read off the SynthStories
    validator (grammar from the grammatical-prefix share, consistency, plot from
    whether the story ends, creativity from the share of distinct words), out of 10."""
    words = completion.split()
    ended = completion.rstrip().endswith((".", "!", "?", '"'))
    s = synth_scores(prompt, completion, ended)
    grades = {"grammar": round(10 * s["grammar_prefix"]),
              "consistency": round(10 * s["consistency"]),
              "plot": round(10 * s["completion"]),
              "creativity": round(10 * len(set(words)) / len(words)) if words else 0}
    grades["age_group"] = "ABC"[min(2, grades["grammar"] // 4)]
    return grades


class GradingEndpoint(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that holds the rubric's two-turn conversation
    and grades each completion by reading it (`standin_grades`); its first answer is
    a 503, which the judge must retry."""
    requests = 0
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with GradingEndpoint.lock:
            GradingEndpoint.requests += 1
            first = GradingEndpoint.requests == 1
        if first:
            self.send_response(503)
            self.end_headers()
            return
        messages = body["messages"]
        if len(messages) == 1:
            content = "The student continues the story."
        else:
            g = standin_grades(*_story(messages[0]["content"]))
            content = (f"Grammar: {g['grammar']}/10, Creativity: {g['creativity']}/10, "
                       f"Consistency: {g['consistency']}/10, Plot: {g['plot']}/10, "
                       f"Age group: {g['age_group']}.")
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps({"choices": [{"message": {
            "role": "assistant", "content": content}}]}).encode())

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_judge_grades_reach_eval_runs_csv_and_the_report(env, tmp_path):
    """A sweep evaluated with a judge endpoint configured: every completion is graded
    (two turns each), each grade lands in samples.jsonl beside its own completion, the
    run's means and age group in eval.json, then runs.csv, the report's judge table,
    the agreement table (offline metric vs the judge's matching grade) and the figure."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), GradingEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sweep = tmp_path / "sweep"
    url = f"http://127.0.0.1:{server.server_port}/v1"
    try:
        result = run_cli("sweep", "run", os.path.join(ROOT, "tests", "data", "tiny_sweep.py:3"),
                         "--sweep-dir", str(sweep), f"--config.eval.judge_url={url}",
                         "--config.eval.judge_concurrency=3", env=env)
        assert result.returncode == 0, result.stderr[-3000:]
    finally:
        server.shutdown()
    runs = sorted((sweep / "runs").iterdir())
    assert len(runs) == 3
    prompts = 0
    for run in runs:
        result = json.loads((run / "eval.json").read_text())
        samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        prompts += len(samples)
        assert result["judge_failed"] == 0 and result["settings"]["judge"]
        for sample in samples:  # each completion carries its own grades (concurrency 3)
            expected = standin_grades(sample["prompt"], sample["continuation"])
            assert {k: round(sample[f"judge_{k}"] * 10) for k in CRITERIA} == \
                {k: expected[k] for k in CRITERIA}
            assert sample["judge_age_group"] == expected["age_group"]
        for k in CRITERIA:
            mean = sum(s[f"judge_{k}"] for s in samples) / len(samples)
            assert result[f"judge_{k}"] == pytest.approx(mean)
        ages = [s["judge_age_group"] for s in samples]
        assert ages.count(result["judge_age_group"]) == max(ages.count(a) for a in ages)
    assert GradingEndpoint.requests == 1 + 2 * prompts  # the 503, then two turns each

    result = run_cli("analyze", str(sweep), "--bootstrap", "0", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(sweep / "runs.csv")
    final = table[table["final"]]  # one row per run at its end (the others: its evals)
    assert len(final) == 3
    for k in CRITERIA:
        assert final[f"judge_{k}"].notna().all()
    assert final["judge_age_group"].isin(list("ABC")).all()
    page = (sweep / "report.html").read_text()
    judge = page[page.index("<h2>LLM judge"):]
    assert all(run.name in judge for run in runs) and "age_group" in judge
    assert "Do the offline metrics agree with the judge?" in judge
    from analysis import report
    agreement = report.compute(str(sweep), bootstrap=0).judge_agreement.set_index("offline metric")
    assert agreement.loc["grammar_prefix", "runs"] == 3  # grammar itself is 0 at 30 steps
    assert -1 <= agreement.loc["grammar_prefix", "spearman"] <= 1
    assert (sweep / "figures" / "judge_vs_params.png").stat().st_size > 10_000
