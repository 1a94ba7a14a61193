"""The Answerer on a small untrained model: limits, selection within the budget, citations."""
import copy

import pytest
import torch

from configs import load_config
from models.answerer import NAMED_SLACK_S, Answerer, QuestionError, named_span, priority
from models.llm import POINTER, CubeLLM, CubePointer, Prompt, build_tokenizer, detokenize
from stream.cube import Cube


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 2}})
    tok = build_tokenizer(["What colour was the object that entered at t=12s ?", "red green yes no question answer"])
    return cfg, CubeLLM(cfg, tokenizer=tok).eval()


def cubes(n, k=4, d=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [Cube("s", i, 5.0 * i, 5.0 * i + 4.5, 10, torch.randn(k, d, generator=g), 0.5) for i in range(n)]


def test_bad_questions_are_clear_errors(llm):
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    for q in ("", "   ", None):
        with pytest.raises(QuestionError, match="empty"):
            a.answer(cubes(3), q)
    with pytest.raises(QuestionError, match="limit"):
        a.answer(cubes(3), "red " * (cfg.answer.max_question_tokens + 1))


def test_selection_fits_the_budget_keeps_the_newest_in_time_order(llm):
    cfg, model = llm
    acfg = copy.deepcopy(cfg.answer)
    acfg.context_tokens, acfg.window_cubes, acfg.newest_cubes = 120, 16, 2
    a = Answerer(model, acfg)
    mem = cubes(60)
    question = "What colour was the object that entered ?"  # names no time: scores decide
    chosen, order, scores = a.select(mem, question)
    per_cube = len(model.ids("t=295s :")) + 4
    assert len(chosen) == (120 - len(a.question_ids(question))) // per_cube
    assert chosen == sorted(chosen) and {58, 59} <= set(chosen)
    assert scores.shape == (60,) and sorted(order) == list(range(60))
    # apart from the newest, the chosen are the best scored
    rest = [i for i in chosen if i < 58]
    others = [i for i in range(58) if i not in chosen]
    assert min(scores[rest]) >= max(scores[others])


def test_a_named_time_selects_and_cites_the_cubes_around_it(llm):
    cfg, model = llm
    acfg = copy.deepcopy(cfg.answer)
    acfg.context_tokens, acfg.newest_cubes = 120, 2
    a = Answerer(model, acfg)
    mem = cubes(60)  # cube i spans [5i, 5i + 4.5]
    assert named_span("between t=100s and t=160s ?") == (100.0, 160.0) and named_span("what now ?") is None
    chosen, order, _ = a.select(mem, "What colour was the object that entered at t=152s ?")
    fit = len(chosen)
    assert order[0] == 30 and {58, 59} <= set(chosen)
    near = sorted(chosen[:-2], key=lambda i: abs(5 * i + 2.25 - 152))
    assert near[0] == 30 and max(abs(i - 30) for i in near) <= (fit - 2) // 2 + 1  # a block around the time
    ans = a.answer(mem, "What colour was the object that entered at t=152s ?")
    assert (ans.citations[0].start, ans.citations[0].end) == (150.0, 154.5)


def test_a_named_time_comes_first_only_so_far_then_scores():
    """Within NAMED_SLACK_S of a named time, cubes come nearest first; past it, by score alone: a
    high-scoring cube minutes away outranks one just past the slack."""
    spans = [(5.0 * i, 5.0 * i + 4.5) for i in range(60)]  # cube i spans [5i, 5i + 4.5]
    scores = torch.zeros(60)
    scores[3], scores[45] = 5.0, 1.0
    order = priority(spans, scores, (152.0, 152.0))
    near = [i for i in range(60) if max(0.0, spans[i][0] - 152, 152 - spans[i][1]) <= NAMED_SLACK_S]
    assert order[:len(near)] == sorted(near, key=lambda i: max(0.0, spans[i][0] - 152, 152 - spans[i][1]))
    assert order[0] == 30 and order[len(near):len(near) + 2] == [3, 45]
    assert priority(spans, scores)[:2] == [3, 45]  # no named time: scores alone

def test_answer_reports_citations_tokens_and_latency(llm):
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    mem = cubes(8)
    ans = a.answer(mem, "What colour was the object that entered at t=12s ?")
    assert isinstance(ans.text, str)
    assert ans.citations and len(ans.citations) <= cfg.answer.citations
    spans = {(c.start, c.end) for c in mem}
    assert all((c.start, c.end) in spans for c in ans.citations)
    # citations follow priority: nearest the named time first (scores only break ties)
    near = [max(0.0, c.start - 12, 12 - c.end) for c in ans.citations]
    assert near[0] == 0 and near == sorted(near)
    assert ans.tokens_used > 8 * 4 and ans.latency_s > 0 and ans.cubes_used == 8


def test_options_answer_with_the_most_likely_one(llm):
    """With options the answer is the one of highest log-likelihood: each option's, read in one padded batch
    from the prompt's KV cache, is what the training loss gives that option alone (its mean cross-entropy
    times its tokens, the prompt run with it)."""
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    mem = cubes(8)
    question = "What colour was the object that entered at t=12s ?"
    options = ["red", "green", "yes no", "red green red"]  # of different lengths: padding must not count
    ans = a.answer(mem, question, options)
    assert ans.text == options[max(range(4), key=ans.option_logprobs.__getitem__)]
    chosen, _, _ = a.select(mem, question)
    prompt = model.prompt([(mem[i].start, mem[i].end, mem[i].tokens) for i in chosen], question, now=mem[-1].end)
    with torch.no_grad():
        alone = [-float(model.loss([prompt], [o])) * (len(model.ids(o)) + 1) for o in options]
    assert ans.option_logprobs == pytest.approx(alone, abs=1e-4)
    again = a.answer(mem, question, options[::-1])  # the order given changes nothing but the order reported
    assert again.text == ans.text and again.option_logprobs == pytest.approx(ans.option_logprobs[::-1], abs=1e-5)
    assert a.answer(mem, question).option_logprobs is None


def test_bad_options_are_clear_errors(llm):
    cfg, model = llm
    a = Answerer(model, cfg.answer)
    question = "What colour was the object that entered at t=12s ?"
    for options, match in ((["red"], "2 to"), (["red", "red "], "repeats"), ("red", "list"), (["red", 3], "list"),
                           (["red", ""], "list"), (["red", "zebra"], "does not know"),
                           (["red", "red " * (cfg.answer.max_answer_tokens + 1)], "limit"),
                           ([f"red {'green ' * i}" for i in range(cfg.answer.max_options + 1)], "2 to")):
        with pytest.raises(QuestionError, match=match):
            a.answer(cubes(3), question, options)


def test_detokenize_joins_numbers_and_words():
    assert detokenize(["t", "=", "1", "2", "s"]) == "t=12s"
    assert detokenize(["red", "circle"]) == "red circle"
    assert detokenize(["7"]) == "7"


def test_times_in_the_prompt_carry_their_value(llm):
    cfg, model = llm
    text = "What colour was the object that entered at t=12s ?"
    plain = model.embed_ids(model.ids(text))
    assert torch.equal(model.embed_text(text), plain)  # the time embedding starts at zero: nothing changes
    trained = copy.deepcopy(model)
    torch.manual_seed(0)
    torch.nn.init.normal_(trained.time_embed.proj.weight)
    with torch.no_grad():
        timed = trained.embed_text(text)
        words = model.tokenizer.convert_ids_to_tokens(model.ids(text))
        at = words.index("t")  # "t = 1 2 s" are the 5 tokens from here
        assert torch.allclose(timed[at:at + 5], plain[at:at + 5] + trained.time_embed(12.0))
        assert torch.equal(timed[:at], plain[:at]) and torch.equal(timed[at + 5:], plain[at + 5:])
        # near times embed alike, far ones apart: what lets attention match a question's time to a cube's
        e = [trained.time_embed(t) for t in (100.0, 101.0, 160.0)]
        cos = torch.nn.functional.cosine_similarity
        assert cos(e[0], e[1], dim=0) > cos(e[0], e[2], dim=0)


def test_when_is_answered_by_pointing_at_a_cube_and_writing_its_time():
    """Trained on prompts where one cube is marked, the LLM answers POINTER and the pointer picks the marked
    cube: the answer is that cube's time, written exactly (no digits generated)."""
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 2}})
    tok = build_tokenizer(["When did a red circle last enter ?", "question answer"])
    assert POINTER not in tok.get_vocab()
    model = CubeLLM(cfg, tokenizer=tok)  # a tokenizer from before the pointer: it gets the token, the LM a row
    assert model.lm.get_input_embeddings().num_embeddings == len(tok) and model.ids(POINTER) == [len(tok) - 1]
    mark = torch.randn(128)

    def example(g):
        n = int(torch.randint(3, 8, (), generator=g))
        marked = int(torch.randint(0, n, (), generator=g))
        starts = (torch.rand(n, generator=g) * 50).cumsum(0) + 3.0
        cubes = [(float(s), float(s) + 2, torch.randn(4, 128, generator=g) + 3 * mark * (i == marked))
                 for i, s in enumerate(starts)]
        return model.prompt(cubes, "When did a red circle last enter ?"), marked, float(starts[marked])

    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        batch = [example(g) for _ in range(8)]
        loss = model.loss([p for p, _, _ in batch], [POINTER] * 8, [[m] for _, m, _ in batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tests = [example(torch.Generator().manual_seed(100 + i)) for i in range(20)]
    answers = [model.generate(p, 4)[0] for p, _, _ in tests]
    right = sum(a == f"t={round(start)}s" for a, (_, _, start) in zip(answers, tests))
    assert right >= 18, answers

    # selection by the pointer: over a memory far longer than the prompt, scored in windows, the marked cube
    # is among those shown and the answer is its time
    g = torch.Generator().manual_seed(7)
    marked = 23
    memory = [Cube("s", i, 4.0 * i, 4.0 * i + 3, 8, torch.randn(4, 128, generator=g) + 3 * mark * (i == marked), 1.0)
              for i in range(40)]
    answer_cfg = copy.deepcopy(cfg.answer)
    answer_cfg.selection, answer_cfg.window_cubes, answer_cfg.context_tokens = "pointer", 8, 60
    answerer = Answerer(model, answer_cfg)
    chosen, _, _ = answerer.select(memory, "When did a red circle last enter ?")
    assert marked in chosen and len(chosen) < 8
    assert answerer.answer(memory, "When did a red circle last enter ?").text == "t=92s"


def test_last_of_two_look_alikes_is_told_by_age_across_windows():
    """Two cubes look alike; "last" means the later. The pointer learns it (its recency term trains), and since
    a cube's age counts from the stream's newest time, not the prompt's, the later wins across windows too,
    where it is the oldest cube of its window and the earlier one is not. As in training, windows also show
    one of the two alone: the later (the answer) or the earlier (the answer is "none"). Only their ages
    tell those apart, as across windows."""
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 2}})
    model = CubeLLM(cfg, tokenizer=build_tokenizer(["When did a red circle last enter ?", "question answer"]))
    mark = torch.randn(128)

    def example(g):
        n = int(torch.randint(3, 8, (), generator=g))
        first, later = sorted(torch.randperm(n, generator=g)[:2].tolist())
        starts = (torch.rand(n, generator=g) * 50 + 2).cumsum(0)
        cubes = [(float(s), float(s) + 2, torch.randn(4, 128, generator=g) + 3 * mark * (i in (first, later)))
                 for i, s in enumerate(starts)]
        now = float(starts[-1]) + 2 + float(torch.rand((), generator=g)) * 400  # prompts are picked from long memories
        return model.prompt(cubes, "When did a red circle last enter ?", now=now), later, (cubes, now, first)

    def alone(cubes, now, first, later, which):  # -> the prompt of cubes around one look-alike, its answer
        if which == "later":
            return model.prompt(cubes[first + 1:], "When did a red circle last enter ?", now=now), [later - first - 1]
        return model.prompt(cubes[:later], "When did a red circle last enter ?", now=now), []

    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        batch = [example(g) for _ in range(8)]
        singles = [alone(*shown, later, "later" if i % 2 else "earlier") for i, (_, later, shown) in enumerate(batch)]
        loss = model.loss([p for p, _, _ in batch] + [p for p, _ in singles],
                          [POINTER] * 8 + [POINTER if m else None for _, m in singles],
                          [[m] for _, m, _ in batch] + [m for _, m in singles])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    tests = [example(torch.Generator().manual_seed(100 + i)) for i in range(20)]
    assert sum(int(model.pointer_scores(p).argmax()) == later for p, later, _ in tests) >= 18
    assert model.pointer.recency.weight.abs().sum() > 0

    g = torch.Generator().manual_seed(7)
    marks = (6, 9)  # the later is the first cube of the second window
    memory = [Cube("s", i, 20.0 * i, 20.0 * i + 3, 8, torch.randn(4, 128, generator=g) + 3 * mark * (i in marks), 1.0)
              for i in range(12)]
    answer_cfg = copy.deepcopy(cfg.answer)
    answer_cfg.selection, answer_cfg.window_cubes = "pointer", 9
    scores = Answerer(model, answer_cfg).scores(memory, "When did a red circle last enter ?")
    assert scores[9] > scores[6] and int(scores.argmax()) == 9


def test_the_pointer_learns_none_so_that_windows_compare():
    """Taught also on prompts without the answer's cube (pointed []: "none of these", logit 0), the pointer's
    logits mean the same in every prompt: above 0 for the marked cube, below 0 for every cube of a prompt
    without one. Selection compares logits across windows of a memory, most of which lack the answer."""
    torch.manual_seed(0)
    cfg = load_config(overrides={"llm": {"num_layers": 2}})
    model = CubeLLM(cfg, tokenizer=build_tokenizer(["When did a red circle last enter ?", "question answer"]))
    mark = torch.randn(128)

    def example(g, marked: bool):
        n = int(torch.randint(4, 9, (), generator=g))
        at = int(torch.randint(0, n, (), generator=g)) if marked else -1
        busy = 1 + 2 * torch.rand(n, 1, 1, generator=g)  # windows differ in how much goes on in them
        cubes = [(4.0 * i, 4.0 * i + 3, busy[i] * torch.randn(4, 128, generator=g) + 3 * mark * (i == at)) for i in range(n)]
        return model.prompt(cubes, "When did a red circle last enter ?"), at

    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        batch = [example(g, marked=i % 2 == 0) for i in range(8)]
        loss = model.loss([p for p, _ in batch], [POINTER if at >= 0 else None for _, at in batch],
                          [[at] if at >= 0 else [] for _, at in batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with_mark = [example(torch.Generator().manual_seed(100 + i), True) for i in range(20)]
    without = [example(torch.Generator().manual_seed(200 + i), False) for i in range(20)]
    assert sum(float(model.pointer_scores(p)[at]) > 0 for p, at in with_mark) >= 18
    assert sum(float(model.pointer_scores(p).max()) < 0 for p, _ in without) >= 18



def test_the_pointer_query_pools_the_question_tokens():
    """Beside the last position's hidden state, the pointer's query reads the question's tokens pooled, so
    that a question's object reaches it even where the last position stopped reading it (as "leave" did in
    the tiny LLM). Zero at start: a checkpoint without it scores as before."""
    torch.manual_seed(0)
    pointer = CubePointer(width=32)
    prompt = Prompt(embeds=torch.zeros(20, 32), cube_spans=[(0, 4), (5, 9), (10, 14)], question_span=(14, 20),
                    cube_starts=[0.0, 5.0, 10.0], now=15.0)
    hidden = torch.randn(20, 32)
    other = hidden.clone()
    other[15:17] = torch.randn(2, 32)  # another object named; the last position (19) and the cubes unchanged
    with torch.no_grad():
        assert torch.equal(pointer(hidden, prompt), pointer(other, prompt))
        torch.nn.init.normal_(pointer.question.weight)
        assert not torch.allclose(pointer(hidden, prompt), pointer(other, prompt))
        moved = hidden.clone()
        moved[:14] = torch.randn(14, 32)  # the cubes' own states still decide which one it is
        assert not torch.allclose(pointer(hidden, prompt), pointer(moved, prompt))
