"""The optional LLM judge: the TinyStories paper's rubric, sent to any OpenAI-compatible
chat endpoint (`/chat/completions`).

Two turns, as in the paper: the model first comments on the student's completion (the
part after `***`), then grades grammar, creativity, consistency and plot out of 10 and
guesses the age group (A: 3 or under ... F: 13-16). The API key comes from the
environment variable named by `key_env` and is never written anywhere.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import time
import urllib.error
import urllib.request

from tinyscale.evals import MissingOptional

FIRST = ("The following exercise, the student is given a beginning of a story. The student "
         "needs to complete it into a full story. The exercise tests the student's language "
         "abilities and creativity. The symbol *** marks the separator between the prescribed "
         "beginning and the student's completion:\n\n{story}\n\nPlease provide your general "
         "assessment about the part written by the student (the one after the *** symbol). "
         "Is it gramatically correct? Is it consistent with the beginning of the story? Pay "
         "special attention to whether the student manages to complete the sentence which is "
         "split in the middle by the separator ***.")
SECOND = ("Now, grade the student's completion in terms of grammar, creativity, consistency "
          "with the story's beginning and whether the plot makes sense. Moreover, please "
          "provide your best guess of what the age of the student might be, as reflected from "
          "the completion. Choose from possible age groups: A: 3 or under. B: 4-5. C: 6-7. "
          "D: 8-9. E: 10-12. F: 13-16.\nAnswer in the format: Grammar: X/10, Creativity: "
          "X/10, Consistency: X/10, Plot: X/10, Age group: L.")
CRITERIA = ("grammar", "creativity", "consistency", "plot")


def parse_grades(text: str) -> dict | None:
    """Grades out of 10 (as floats) and the age group, or None if any is missing."""
    grades = {}
    for name in CRITERIA:
        m = re.search(rf"{name}\W{{0,5}}(\d+(?:\.\d+)?)\s*(?:/|out of)\s*10", text, re.I)
        if not m or not 0 <= float(m.group(1)) <= 10:
            return None
        grades[name] = float(m.group(1))
    age = re.search(r"age(?: group)?\W{0,5}\(?([A-F])\b", text, re.I)
    if not age:
        return None
    grades["age_group"] = age.group(1).upper()
    return grades


class Judge:
    def __init__(self, base_url: str, model: str, key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0):
        if not base_url:
            raise MissingOptional("no judge endpoint is configured (the LLM judge is skipped): "
                                  "set config.eval.judge_url and config.eval.judge_model.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.key_env, self.concurrency = model, key_env, concurrency
        self.retries, self.timeout, self.backoff = retries, timeout, backoff
        self.last_error = ""  # why the latest request failed, for the console

    def _chat(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(self.retries + 1):
            try:
                request = urllib.request.Request(self.url, body, headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as error:
                self.last_error = f"HTTP {error.code}"
                if error.code not in (408, 409, 429) and error.code < 500:
                    raise RuntimeError(f"judge endpoint answered HTTP {error.code}") from None
            except (urllib.error.URLError, TimeoutError) as error:
                self.last_error = f"unreachable ({getattr(error, 'reason', error)})"
            except (KeyError, ValueError, IndexError):
                self.last_error = "an answer that is not a chat completion"
            if attempt < self.retries:
                time.sleep(self.backoff * 2 ** attempt * (0.5 + random.random()))
        raise RuntimeError(f"judge endpoint failed {self.retries + 1} times")

    def grade(self, prompt: str, completion: str) -> dict | None:
        """The grades of one completion, or None when the answers never parse."""
        messages = [{"role": "user", "content": FIRST.format(story=f"{prompt}***{completion}")}]
        for _ in range(2):  # a malformed grading answer is asked once more
            try:
                first = self._chat(messages)
                answer = self._chat(messages + [{"role": "assistant", "content": first},
                                                {"role": "user", "content": SECOND}])
            except RuntimeError:
                return None
            grades = parse_grades(answer)
            if grades:
                return grades
        return None

    def grade_all(self, pairs: list[tuple[str, str]]) -> list[dict | None]:
        """Grades of every pair (None where none came). An endpoint that cannot be
        reached for the first pair is not asked about the others."""
        if not pairs:
            return []
        first = self.grade(*pairs[0])
        if first is None and self.last_error.startswith("unreachable"):
            return [None] * len(pairs)
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            return [first] + list(pool.map(lambda pc: self.grade(*pc), pairs[1:]))
