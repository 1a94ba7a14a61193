"""Search over history: memory entries of many streams ranked by the model's question-to-cube relevance.

    GET /search?q=a red circle entered&streams=cam1,cam2&start=0&end=3600&limit=20

The score is the Answerer's `relevance`: the selection score (with the default profile's `pointer`
selection, the trained CubePointer's logits against a fixed "none", comparable across windows and so
across streams; XComp attention or key cosine with the other selections) plus, where an EventLocator is
fitted, its log-probability that the event asked about lies in the entry. Best first; each result names
its stream, entry, time span, score and the path of its thumbnail. The default profile's tiny model reads
only its own question forms: "When did a red circle last enter?" finds the entry; free text such as
"red circle" ranks far worse (docs/api.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence
from urllib.parse import quote

if TYPE_CHECKING:  # the gateway reads queries here without loading torch; the LLM actor ranks
    from models.answerer import Answerer
    from models.vlm.answerer import VLMAnswerer
    from stream.memory import MemoryEntry


class SearchError(ValueError):
    """A search that cannot be run (the gateway answers 400)."""


@dataclass
class SearchQuery:
    q: str
    streams: list[str] | None  # None: every stream
    start: float | None
    end: float | None
    limit: int

    @classmethod
    def from_params(cls, params, max_chars: int, max_limit: int) -> SearchQuery:
        """From a request's query parameters; raises SearchError saying what is wrong."""
        unknown = sorted(set(params) - {"q", "streams", "start", "end", "limit"})
        if unknown:
            raise SearchError(f"unknown parameter(s) {', '.join(unknown)}; expected q, streams, start, end, limit")
        q = params.get("q", "").strip()
        if not q:
            raise SearchError("q (the text to search for) is required")
        if len(q) > max_chars:
            raise SearchError(f"q is longer than {max_chars} characters")
        streams = None
        if params.get("streams"):
            streams = [s for s in params["streams"].split(",") if s]
        window = {}
        for key in ("start", "end"):
            try:
                window[key] = float(params[key]) if params.get(key) not in (None, "") else None
            except ValueError:
                raise SearchError(f"{key} must be a number of stream seconds") from None
            if window[key] is not None and window[key] != window[key]:  # NaN
                raise SearchError(f"{key} must be a number of stream seconds")
        if window["start"] is not None and window["end"] is not None and window["start"] > window["end"]:
            raise SearchError("start is after end")
        try:
            limit = int(params.get("limit", 10))
        except ValueError:
            raise SearchError("limit must be an integer") from None
        if not 1 <= limit <= max_limit:
            raise SearchError(f"limit must lie in [1, {max_limit}]")
        return cls(q, streams, window["start"], window["end"], limit)


def rank(answerer: Answerer | VLMAnswerer, memories: dict[str, Sequence[MemoryEntry]], query: str,
         limit: int) -> list[dict]:
    """The `limit` entries of `memories` (stream id -> entries in time order) most relevant to `query`. An
    answerer without `relevance` (a pretrained VLM's) ranks by its selection `scores`."""
    answerer.question_ids(query)  # refuses an empty or too long query (QuestionError)
    score = getattr(answerer, "relevance", answerer.scores)
    scored = []
    for sid, entries in memories.items():
        if entries:
            scores = score(entries, query).tolist()
            scored += [(s, sid, e) for s, e in zip(scores, entries)]
    scored.sort(key=lambda x: -x[0])
    return [{"stream": sid, "entry": e.id, "start": e.start, "end": e.end, "level": e.level, "score": s,
             "thumbnail": f"/streams/{quote(sid)}/thumbnails/{e.id}"} for s, sid, e in scored[:limit]]
