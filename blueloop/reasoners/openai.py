"""The `openai` reasoner: any OpenAI-compatible chat-completions endpoint with image input (vLLM,
Ollama, llama.cpp server, SGLang, a cloud API). Plain httpx, not the `openai` package: one POST is
all we need, and owning it keeps the timeouts, the retry policy (edge.backoff) and the exact
request shape in our hands, the same for every server that claims compatibility.

Frames go as `image_url` content parts holding `data:image/jpeg;base64,...` URIs; each task kind has
its own system prompt; 5xx answers, 429 and timeouts are retried with jittered back-off while the
job's deadline allows; other 4xx fail the job with the server's own message.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import httpx

from blueloop.jobs import KINDS, Job, Result, unknown_kind
from blueloop.reasoners import ReasonerError
from blueloop.text import clock
from edge.backoff import Backoff

log = logging.getLogger("blueloop.openai")

MAX_IMAGES = 8
"""Frames sent per request (evenly spaced over the job's): vision models take few images well."""

_COMMON = (
    "You are the analysis service of a security-camera appliance. You get keyframes from one camera "
    "(oldest first, each labelled with its local time) and what the appliance's detector logged. "
    "Answer in plain, short English; never invent people or objects you cannot see."
)
PROMPTS = {
    "describe": _COMMON
    + " Describe what happens in the frames: who or what is there, where, what they do, when.",
    "report": _COMMON
    + " Write an incident report as one self-contained HTML document (inline CSS, no scripts, no external "
    "resources): summary, timeline with times, what was seen, counts. Reply with the HTML only.",
    "read_text": _COMMON
    + " Transcribe all visible text exactly, in reading order (top to bottom, left to right), one line per "
    "line of text. Reply with the text only; reply NO TEXT if there is none.",
    "ui_html": _COMMON
    + " The image is a screen. Reproduce it as one self-contained HTML document (inline CSS, no scripts): "
    "same layout, colours and texts, texts in reading order. Reply with the HTML only.",
    "verify": _COMMON
    + " The appliance raised an alert for the label given. Decide whether that label is really visible."
    ' Reply with JSON only: {"confirmed": true|false, "reason": "..."}.',
}
_HTML_KINDS = {"report", "ui_html"}


class ChatError(Exception):
    """The endpoint refused the request (a 4xx other than 429, or an unusable answer)."""


class OpenAIReasoner:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_file: str | None = None,
        timeout_s: float = 60.0,
        retries: int = 3,
        backoff_s: tuple[float, float] = (0.5, 8.0),
    ) -> None:
        if not base_url:
            raise ReasonerError("--reasoner openai needs --base-url (e.g. http://gpu-box:11434/v1)")
        if not model:
            raise ReasonerError("--reasoner openai needs --model (e.g. qwen2.5vl:7b)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Content-Type": "application/json"}
        if api_key_file:
            try:
                key = Path(api_key_file).read_text().strip()
            except OSError as exc:
                raise ReasonerError(
                    f"cannot read --api-key-file {api_key_file}: {exc.strerror or exc}"
                ) from None
            if not key:
                raise ReasonerError(f"--api-key-file {api_key_file} is empty")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(headers=headers, timeout=timeout_s)

    def messages(self, job: Job) -> list[dict]:
        frames = job.frames
        if len(frames) > MAX_IMAGES:
            step = (len(frames) - 1) / (MAX_IMAGES - 1)
            frames = [frames[round(i * step)] for i in range(MAX_IMAGES)]
        ctx = {
            "camera": job.camera,
            "counts": job.context.get("counts"),
            "recent_events": job.context.get("recent_events", [])[-20:],
        }
        if job.kind == "verify":
            ctx["label"] = job.context.get("label") or (job.context.get("alert") or {}).get("label")
        intro = (
            (job.prompt or f"Task: {job.kind}") + "\n\nContext from the appliance (JSON): " + json.dumps(ctx)
        )
        parts: list[dict] = [{"type": "text", "text": intro}]
        for f in frames:
            parts.append({"type": "text", "text": f"Keyframe at {clock(f.ts)}:"})
            parts.append({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + f.b64()}})
        return [{"role": "system", "content": PROMPTS[job.kind]}, {"role": "user", "content": parts}]

    def reason(self, job: Job) -> Result:
        if job.kind not in KINDS:
            return unknown_kind(job.kind)
        body = {"model": self.model, "messages": self.messages(job), "temperature": 0.2}
        try:
            answer = self._complete(job, body)
        except TimeoutError as exc:
            return Result("timeout", str(exc))
        except ChatError as exc:
            return Result("failed", str(exc))
        return _result(job, answer)

    def _complete(self, job: Job, body: dict) -> str:
        backoff = Backoff(*self.backoff_s)
        last = ""
        for attempt in range(1, self.retries + 2):
            remaining = job.remaining_s
            if remaining <= 0:
                raise TimeoutError(f"deadline passed after {attempt - 1} tries ({last or 'no answer'})")
            timeout = min(self.timeout_s, remaining)
            try:
                response = self.client.post(self.url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                last = f"no answer from {self.url} within {timeout:.1f} s"
            except httpx.HTTPError as exc:
                last = f"cannot reach {self.url}: {exc}"
            else:
                if response.status_code == 200:
                    return _content(response)
                last = f"{self.url} answered {response.status_code}: {_error_text(response)}"
                if response.status_code < 500 and response.status_code != 429:
                    raise ChatError(f"the model server refused the job: {last}")
            if attempt > self.retries:
                break
            delay = backoff.next()
            log.warning(
                "job %s: %s; try %d of %d in %.1f s", job.job_id, last, attempt + 1, self.retries + 1, delay
            )
            if delay >= job.remaining_s:
                raise TimeoutError(f"deadline passed while retrying ({last})")
            time.sleep(delay)
        if "within" in last:
            raise TimeoutError(f"the model server did not answer in time: {last}")
        raise ChatError(f"the model server failed {self.retries + 1} times: {last}")


def _content(response: httpx.Response) -> str:
    try:
        doc = response.json()
        content = doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ChatError(f"unusable chat-completions answer: {response.text[:200]!r}") from None
    if isinstance(content, list):  # some servers answer in content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ChatError("unusable chat-completions answer: message content is not text")
    return content.strip()


def _error_text(response: httpx.Response) -> str:
    try:
        doc = response.json()
        err = doc.get("error") if isinstance(doc, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    except ValueError:
        pass
    return response.text.strip()[:300] or response.reason_phrase


_FENCE = re.compile(r"```(?:html|json)?\s*(.*?)```", re.S | re.I)


def _result(job: Job, answer: str) -> Result:
    fenced = _FENCE.search(answer)
    if job.kind in _HTML_KINDS:
        html = fenced.group(1).strip() if fenced else answer
        start = re.search(r"<!DOCTYPE html|<html", html, re.I)
        html = html[start.start() :] if start else html
        text = re.sub(
            r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"(?is)<(style|script)[^>]*>.*?</\1>", "", html))
        )
        return Result("done", text.strip()[:500], {"model_answer_chars": len(answer)}, html)
    if job.kind == "verify":
        raw = fenced.group(1) if fenced else answer
        match = re.search(r"\{.*\}", raw, re.S)
        try:
            doc = json.loads(match.group(0)) if match else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("confirmed"), bool):
            verdict = "confirmed" if doc["confirmed"] else "retracted"
            return Result(
                "done", f"{verdict}: {doc.get('reason', '')}".strip(": "), {"confirmed": doc["confirmed"]}
            )
        low = answer.lower()
        if low.startswith(("yes", "no")):
            ok = low.startswith("yes")
            return Result("done", ("confirmed: " if ok else "retracted: ") + answer, {"confirmed": ok})
        return Result("failed", f"the model's verify answer is not a verdict: {answer[:200]!r}")
    if job.kind == "read_text":
        text = answer if answer.strip().upper() != "NO TEXT" else ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return Result("done", "\n".join(lines) or "I see no readable text.", {"lines": lines})
    return Result("done", answer, None)
