"""Drives `pimoe serve` with the real `openai` client, as users do (tests/serve.rs
starts the server and runs one mode of this script against it).

    client.py api   BASE_URL MODEL KEY  chat, completions, streaming, usage, stop,
                                        seeds, the pimoe extension field, errors
    client.py tools BASE_URL MODEL KEY  a tool call and its result sent back
    client.py load  BASE_URL MODEL KEY  300 mixed requests at concurrency 32
    client.py grid  BASE_URL MODEL KEY MESSAGES.json
                                        one chat call, printed as returned (the
                                        default composition's grid question)

Each mode exits non-zero with a message on the first check that fails, and prints
one JSON line of what it saw on success.
"""

import asyncio
import json
import random
import sys
import urllib.request

import openai
from openai import AsyncOpenAI, OpenAI

# The composition's 2x2 system (tests/common/compose.rs: A row-major, then b).
SOLVE = "Solve A = [4, 1, 2, 5] and b = [1, 2]."


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def extension(obj):
    """The `pimoe` field that standard clients keep as an extra."""
    return (obj.model_extra or {}).get("pimoe")


def metrics(base):
    root = base.rsplit("/v1", 1)[0]
    text = urllib.request.urlopen(root + "/metrics", timeout=30).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def api(base, model, key):
    c = OpenAI(base_url=base, api_key=key, max_retries=0)
    check([m.id for m in c.models.list().data] == [model], "models.list names the served model")

    msgs = [{"role": "user", "content": SOLVE}]
    r = c.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0)
    ch = r.choices[0]
    text = ch.message.content
    ext = extension(ch)
    check(ext is not None and ext["spans"], f"the chat answer carries expert spans: {ch}")
    span = ext["spans"][0]
    check(span["expert"] == "solve", f"span names the expert: {span}")
    x = span["outputs"]
    check(abs(4 * x[0] + 1 * x[1] - 1) < 1e-12 and abs(2 * x[0] + 5 * x[1] - 2) < 1e-12, f"outputs solve A x = b: {x}")
    check(span["inputs"] == [4, 1, 2, 5, 1, 2], f"inputs as T2C read them: {span['inputs']}")
    piece = text[span["start"]:span["end"]]
    check(all(f"{v:.6f}" in piece for v in x), f"the span's text {piece!r} shows the outputs {x}")
    u = r.usage
    check(u.prompt_tokens > 0 and 0 < u.completion_tokens <= 24, f"usage {u}")
    check(u.total_tokens == u.prompt_tokens + u.completion_tokens, f"usage adds up {u}")

    chunks = list(c.chat.completions.create(model=model, messages=msgs, max_tokens=24, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    streamed = "".join(k.choices[0].delta.content or "" for k in chunks if k.choices)
    check(streamed == text, f"streamed chat {streamed!r} == whole {text!r}")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == u.completion_tokens,
          f"the last chunk carries the usage: {chunks[-1]}")
    reasons = [k.choices[0].finish_reason for k in chunks if k.choices and k.choices[0].finish_reason]
    check(reasons == [ch.finish_reason], f"one finish reason, as the whole answer's: {reasons}")
    spans = [s for k in chunks if k.choices and extension(k.choices[0]) for s in extension(k.choices[0]).get("spans", [])]
    check(spans and all(s["expert"] == "solve" for s in spans), "streamed chunks of the expert's span say so")
    check("".join(text[s["start"]:s["end"]] for s in spans) == piece, "the streamed spans cover the span")

    t = c.completions.create(model=model, prompt=SOLVE, max_tokens=24, temperature=0)
    whole = t.choices[0].text
    check(extension(t.choices[0])["spans"], "text completions carry spans too")
    parts = list(c.completions.create(model=model, prompt=SOLVE, max_tokens=24, temperature=0, stream=True))
    check("".join(p.choices[0].text for p in parts) == whole, "streamed completion == whole")

    # A stop sequence from inside the answer cuts it there, held back while streaming.
    stop = whole[6:9]
    cut = whole[: whole.index(stop)]
    s = c.completions.create(model=model, prompt=SOLVE, max_tokens=24, temperature=0, stop=[stop])
    check(s.choices[0].text == cut and s.choices[0].finish_reason == "stop", f"stop {stop!r}: {s.choices[0]}")
    parts = list(c.completions.create(model=model, prompt=SOLVE, max_tokens=24, temperature=0, stop=stop, stream=True))
    check("".join(p.choices[0].text for p in parts) == cut, "a streamed stop sends nothing of the stop sequence")

    sampled = [c.completions.create(model=model, prompt="The dog", max_tokens=12, temperature=0.9, top_p=0.95, seed=7)
               .choices[0].text for _ in range(2)]
    check(sampled[0] == sampled[1], f"a seed fixes the sample: {sampled}")

    try:
        c.chat.completions.create(model=model, messages=msgs, n=2)
        check(False, "n=2 is refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "n", f"the refusal names `n`: {e.body}")
    try:
        c.completions.create(model=model, prompt="word " * 400, max_tokens=4)
        check(False, "a prompt past the context is refused")
    except openai.BadRequestError as e:
        check("tokens" in e.message and "context" in e.message, f"the refusal gives token counts: {e.message}")
    try:
        c.completions.create(model="gpt-4o", prompt="hi", max_tokens=2)
        check(False, "another model is refused")
    except openai.NotFoundError as e:
        check(model in e.message, f"the refusal names the served model: {e.message}")
    print(json.dumps({"chat": text, "completion": whole, "spans": ext["spans"], "usage": u.model_dump()}))


def tools(base, model, key):
    """The tool-call pipeline through the tools API: the model calls the tool, the
    client computes and sends the result back, the model answers."""
    c = OpenAI(base_url=base, api_key=key, max_retries=0)
    spec = [{"type": "function", "function": {"name": "solve", "description": "solves a linear system"}}]
    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "solve", "arguments": "{}"}}]}
    # A worked exchange first, as the baseline shows the model one per tool.
    msgs = [{"role": "user", "content": "Solve A = [2, 0, 0, 2] and b = [2, 4]."}, call,
            {"role": "tool", "tool_call_id": "call_0", "content": "x = [1, 2]"},
            {"role": "assistant", "content": "x is [1, 2]."},
            {"role": "user", "content": SOLVE}]
    r = c.chat.completions.create(model=model, messages=msgs, tools=spec, max_tokens=16, temperature=0)
    ch = r.choices[0]
    check(ch.finish_reason == "tool_calls" and ch.message.tool_calls, f"the model calls the tool: {ch}")
    tc = ch.message.tool_calls[0]
    check(tc.function.name == "solve" and json.loads(tc.function.arguments) == {}, f"the call: {tc}")
    stream = list(c.chat.completions.create(model=model, messages=msgs, tools=spec, max_tokens=16, temperature=0,
                                            stream=True))
    deltas = [d for k in stream if k.choices for d in (k.choices[0].delta.tool_calls or [])]
    check(deltas and deltas[0].function.name == "solve", f"the streamed call: {stream}")
    msgs += [ch.message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": tc.id, "content": "x = [0.166667, 0.333333]"}]
    r2 = c.chat.completions.create(model=model, messages=msgs, tools=spec, max_tokens=16, temperature=0)
    check(r2.choices[0].message.content, f"an answer after the tool's result: {r2.choices[0]}")
    print(json.dumps({"call": tc.function.name, "answer": r2.choices[0].message.content}))


async def load(base, model, key, n=300, concurrency=32):
    c = AsyncOpenAI(base_url=base, api_key=key, max_retries=0, timeout=300)
    rng = random.Random(0)
    words = "the grid carries power from each bus to the next along its lines".split()
    reqs = []
    for i in range(n):
        long_prompt = i % 3 == 0
        k = rng.randint(12, 30) if long_prompt else rng.randint(2, 12)
        prompt = " ".join(rng.choice(words) for _ in range(k))
        if i % 7 == 3:
            prompt = SOLVE + " " + prompt  # the expert fires
        if i % 23 == 5:
            prompt = "word " * 300  # past the context
        reqs.append({
            "prompt": prompt,
            "max_tokens": rng.randint(4, 48),
            "stream": i % 2 == 1,
            "disconnect": i % 10 == 9,
            "temperature": 0.0 if i % 4 else 0.8,
            "seed": i,
        })
    sem = asyncio.Semaphore(concurrency)

    async def one(r):
        async with sem:
            args = dict(model=model, prompt=r["prompt"], max_tokens=r["max_tokens"], temperature=r["temperature"],
                        seed=r["seed"])
            try:
                if r["disconnect"]:
                    s = await c.completions.create(stream=True, **args)
                    async for _ in s:
                        break
                    await s.close()
                    return ("disconnected",)
                if r["stream"]:
                    s = await c.completions.create(stream=True, **args)
                    text, finish = "", None
                    async for k in s:
                        text += k.choices[0].text
                        finish = k.choices[0].finish_reason or finish
                    return ("ok", text, finish)
                t = await c.completions.create(**args)
                return ("ok", t.choices[0].text, t.choices[0].finish_reason)
            except openai.APIStatusError as e:
                return ("error", e.status_code, e.message)

    results = await asyncio.gather(*(one(r) for r in reqs))
    counts = {}
    for r, res in zip(reqs, results):
        counts[res[0]] = counts.get(res[0], 0) + 1
        if res[0] == "error":
            check(res[1] == 400 and "context window" in res[2], f"only prompts past the context fail, cleanly: {res}")
        if r["prompt"].startswith("word word") and not r["disconnect"]:
            check(res[0] == "error", f"a prompt past the context is refused: {res}")
    check(counts.get("ok", 0) >= 200, f"most requests complete: {counts}")
    # The same requests alone, one at a time: the same text.
    for r, res in zip(reqs, results):
        if res[0] != "ok":
            continue
        alone = await c.completions.create(model=model, prompt=r["prompt"], max_tokens=r["max_tokens"],
                                           temperature=r["temperature"], seed=r["seed"])
        check(alone.choices[0].text == res[1], f"batched {res[1]!r} == alone {alone.choices[0].text!r} for {r}")
    m = metrics(base)
    check(m["pimoe_kv_blocks_used"] == 0 and m["pimoe_running_sequences"] == 0 and m["pimoe_queue_depth"] == 0,
          f"everything freed at the end: {m}")
    check(m["pimoe_kv_blocks_free"] > 0, "the pool is reported")
    check(m["pimoe_preemptions_total"] > 0, f"the small KV pool ran out under load: {m}")
    check(m.get('pimoe_expert_firings_total{expert="solve"}', 0) > 0, "expert firings are counted")
    print(json.dumps({"counts": counts, "disconnects": m["pimoe_disconnects_total"],
                      "preemptions": m["pimoe_preemptions_total"],
                      "requests_200": m.get('pimoe_requests_total{code="200"}', 0)}))


def grid(base, model, key, path):
    c = OpenAI(base_url=base, api_key=key, max_retries=0)
    with open(path) as f:
        messages = json.load(f)
    r = c.chat.completions.create(model=model, messages=messages, max_tokens=48, temperature=0)
    ch = r.choices[0]
    print(json.dumps({"text": ch.message.content, "finish": ch.finish_reason, "pimoe": extension(ch)}))


if __name__ == "__main__":
    mode, base, model, key = sys.argv[1:5]
    if mode == "grid":
        grid(base, model, key, sys.argv[5])
        sys.exit(0)
    if mode == "api":
        api(base, model, key)
    elif mode == "tools":
        tools(base, model, key)
    elif mode == "load":
        asyncio.run(load(base, model, key))
    else:
        sys.exit(f"unknown mode {mode}")
