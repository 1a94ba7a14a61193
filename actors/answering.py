"""Questions and searches over streams' memories, as the LLM actors or the encoder actors serve them.

    answers = AnswerWorker(load_answerer(cfg, "cpu"))
    answers.answer(entries, "What happened?")      # {"text": ..., "citations": [...], ...} or {"error": ...}

A plain class: the actors in actors/runtime.py are thin shells over it and call it from one thread, one
question at a time (the model is the bottleneck anyway). It imports torch and the models, so the runtime
imports it only in the actors that hold a model. A question the answerer refuses comes back as
{"error": why}, which the controller turns into a 400.
"""
from __future__ import annotations

from actors.search import rank
from actors.worker import load_models
from configs import Config
from models.answerer import Answerer, QuestionError


def load_answerer(cfg: Config, device: str, llm=None):
    """The profile's answerer: a pretrained VLM's language side, or the default model's LLM (`llm`, where the
    caller has loaded it already with the encoder, else loaded here)."""
    if cfg.model.vlm:
        from models.vlm.profile import build_answerer

        return build_answerer(cfg, device)
    if llm is None:
        _, llm = load_models(cfg)
    return Answerer(llm.to(device), cfg.answer)


class AnswerWorker:
    def __init__(self, answerer):
        self.answerer = answerer

    def answer(self, entries: list, question: str, options: list | None = None) -> dict:
        """entries: the stream's memory entries to consider (stream.memory.MemoryEntry), in time order."""
        try:
            a = self.answerer.answer(entries, question, options)
        except QuestionError as e:
            return {"error": str(e)}
        return {"text": a.text, "citations": [{"start": c.start, "end": c.end, "score": c.score} for c in a.citations],
                "tokens_used": a.tokens_used, "latency_s": a.latency_s,
                "cubes_considered": a.cubes_considered, "cubes_used": a.cubes_used} | \
            ({"option_logprobs": a.option_logprobs} if a.option_logprobs is not None else {})

    def search(self, stream_ids: list[str], query: str, limit: int, memories: list[list]) -> dict:
        """The entries of the streams' memories (one list each, in the order of `stream_ids`) most relevant to
        `query`, best first (actors/search.py)."""
        try:
            return {"results": rank(self.answerer, dict(zip(stream_ids, memories)), query, limit)}
        except QuestionError as e:
            return {"error": str(e)}
