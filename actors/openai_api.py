"""An OpenAI-compatible chat API over the streams, so existing clients (the `openai` package, chat UIs) can ask.

    POST /v1/chat/completions   {"model": "cubestream/cam1", "messages": [...], "stream": false}
    GET  /v1/models             every stream as a model "cubestream/<id>"

The model names the stream; the last user message is the question. Earlier turns are context where the
profile's model can use them: the default's tiny LLM knows only its own closed vocabulary, so it answers
the last question alone (an answer never depends on words it cannot read). A time window may be given as
extra body fields `start` / `end` (stream seconds; the openai package's `extra_body`), and `options` to
choose among. The answer's citations come back in the extra field `cubestream`. `stream: true` answers
with Server-Sent Events in OpenAI's chunk format, ending with `data: [DONE]`. The bearer token is the API key.
Other OpenAI fields (temperature, max_tokens, ...) are accepted and have no effect.
"""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

PREFIX = "cubestream/"
# OpenAI request fields accepted (and ignored where they have no meaning here), with their types
IGNORED = {"temperature": (int, float), "top_p": (int, float), "n": int, "max_tokens": int,
           "max_completion_tokens": int, "presence_penalty": (int, float), "frequency_penalty": (int, float),
           "user": str, "seed": int, "stop": (str, list), "stream_options": dict, "logprobs": bool,
           "top_logprobs": int, "response_format": dict, "metadata": dict, "store": bool, "logit_bias": dict,
           "parallel_tool_calls": bool, "service_tier": str}


class ChatError(ValueError):
    """A chat request that cannot be answered; answered in OpenAI's error shape with `status`."""

    def __init__(self, message: str, status: int = 400, param: str | None = None):
        super().__init__(message)
        self.status, self.param = status, param

    def response(self) -> web.Response:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return web.json_response({"error": {"message": str(self), "type": kind, "param": self.param,
                                            "code": "model_not_found" if self.status == 404 else None}},
                                 status=self.status)


@dataclass
class ChatRequest:
    stream_id: str
    model: str
    question: str
    stream: bool
    start: float | None
    end: float | None
    options: list[str] | None
    include_usage: bool


def parse_chat(body: Any) -> ChatRequest:
    """Check an OpenAI chat request; raises ChatError saying what is wrong."""
    if not isinstance(body, dict):
        raise ChatError("the body must be a JSON object")
    for key in body:
        if key not in ("model", "messages", "stream", "start", "end", "options") and key not in IGNORED:
            raise ChatError(f"unsupported field {key!r}", param=key)
    for key, tp in IGNORED.items():
        if key in body and body[key] is not None and (not isinstance(body[key], tp) or isinstance(body[key], bool) and tp is not bool):
            raise ChatError(f"field {key!r} has the wrong type", param=key)
    model = body.get("model")
    if not isinstance(model, str) or not model.startswith(PREFIX) or len(model) == len(PREFIX):
        raise ChatError(f"model must be '{PREFIX}<stream id>' (GET /v1/models lists them)", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatError("messages must be a non-empty list", param="messages")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant", "tool") \
                or _text(m.get("content")) is None:
            raise ChatError("each message needs a role (system, developer, user, assistant or tool) and text content",
                            param="messages")
    users = [m for m in messages if m["role"] == "user"]
    if not users or not _text(users[-1]["content"]).strip():
        raise ChatError("no user message with a question", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ChatError("stream must be true or false", param="stream")
    window = {}
    for key in ("start", "end"):
        v = body.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ChatError(f"{key} must be a number of stream seconds", param=key)
        window[key] = v
    options = body.get("options")
    if options is not None and (not isinstance(options, list) or not all(isinstance(o, str) for o in options)):
        raise ChatError("options must be a list of strings", param="options")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(model[len(PREFIX):], model, _text(users[-1]["content"]).strip(), stream,
                       window["start"], window["end"], options, include_usage)


def _text(content) -> str | None:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") == "text"]
        if all(isinstance(p, str) for p in parts):
            return " ".join(parts)
    return None


def completion(req: ChatRequest, answer: dict) -> dict:
    """The `chat.completion` object for an answer of the runtime's `ask`."""
    completion_tokens = len(answer["text"].split())
    prompt_tokens = max(0, answer.get("tokens_used", 0) - completion_tokens)
    return {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion", "created": int(time.time()),
            "model": req.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["text"]},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "cubestream": {"citations": answer["citations"], "latency_s": answer.get("latency_s")}}


async def stream_completion(request: web.Request, req: ChatRequest, answer: dict) -> web.StreamResponse:
    """The answer as `chat.completion.chunk` Server-Sent Events: the role, the text word by word, the finish."""
    done = completion(req, answer)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    base = {"id": done["id"], "object": "chat.completion.chunk", "created": done["created"], "model": req.model}

    async def send(delta: dict, finish: str | None = None, **extra) -> None:
        chunk = base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]} | extra
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    for piece in re.findall(r"\S+\s*", answer["text"]):
        await send({"content": piece})
    await send({}, "stop", cubestream=done["cubestream"])
    if req.include_usage:
        await resp.write(f"data: {json.dumps(base | {'choices': [], 'usage': done['usage']})}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    return resp


def models(stream_ids: list[str], created: dict[str, float]) -> dict:
    return {"object": "list", "data": [{"id": PREFIX + sid, "object": "model", "created": int(created.get(sid, 0)),
                                        "owned_by": "cubestream"} for sid in stream_ids]}
