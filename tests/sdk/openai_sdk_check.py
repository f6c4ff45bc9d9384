"""The official OpenAI Python SDK against a live latentkv server.

    openai_sdk_check.py BASE_URL MODEL

Every call a client of our OpenAI-compatible API makes first: models,
completions and chat (streamed and not) with seeds, stops, penalties and
log-probabilities, structured output (the SDK's parse() with a pydantic
model, json_object streamed, vLLM's guided_* extensions), tools (required,
named and streamed, none, auto, results sent back), embeddings, and the
errors
the SDK must not retry. Each check
asserts what the SDK parsed, so a shape it cannot read fails here. Exits 0
when all pass; an assertion's traceback otherwise.
"""
import json
import math
import re
import sys

import openai
import pydantic

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0,
                       timeout=60)

# Models.
ids = [m.id for m in client.models.list().data]
assert ids == [model], ids
assert client.models.retrieve(model).id == model

# Completions: greedy is reproducible; a seed replays sampling; the
# reported seed replays an unseeded request.
kw = dict(model=model, prompt="Once upon a time", max_tokens=12)
a = client.completions.create(temperature=0, **kw)
b = client.completions.create(temperature=0, **kw)
assert a.choices[0].text == b.choices[0].text and a.choices[0].text
assert a.usage.completion_tokens == 12, a.usage
assert a.choices[0].finish_reason == "length"
s1 = client.completions.create(temperature=1.0, seed=42, **kw)
s2 = client.completions.create(temperature=1.0, seed=42, **kw)
assert s1.choices[0].text == s2.choices[0].text
free = client.completions.create(temperature=1.0, **kw)
seed = free.model_extra.get("seed")
assert isinstance(seed, int), free
again = client.completions.create(temperature=1.0, seed=seed, **kw)
assert again.choices[0].text == free.choices[0].text

# Stop strings end the text before them.
stopped = client.completions.create(model=model, prompt="Once upon a time",
                                    max_tokens=40, temperature=0, stop=["."])
assert "." not in stopped.choices[0].text
assert stopped.choices[0].finish_reason == "stop"

# Penalties are accepted; logit_bias against greedy's first token changes
# it (token ids through the return_token_ids extension).
penalised = client.completions.create(temperature=0, presence_penalty=2.0,
                                      frequency_penalty=2.0, **kw)
assert penalised.usage.completion_tokens == 12
with_ids = client.completions.create(
    temperature=0, extra_body={"return_token_ids": True}, **kw)
first = with_ids.choices[0].model_extra["token_ids"][0]
biased = client.completions.create(temperature=0,
                                   logit_bias={str(first): -100}, **kw)
assert biased.choices[0].text != a.choices[0].text

# Log-probabilities: greedy tokens are their position's most likely, and
# the tokens spell the text.
lp = client.completions.create(temperature=0, logprobs=3, **kw)
L = lp.choices[0].logprobs
assert "".join(L.tokens) == lp.choices[0].text
for tok, p, top in zip(L.tokens, L.token_logprobs, L.top_logprobs):
    assert p <= 0 and len(top) == 3
    assert math.isclose(max(top.values()), p, rel_tol=1e-6), (tok, p, top)

# echo with logprobs (what eval harnesses ask for log-likelihoods): the
# prompt first, its first token's log-probability None.
e = client.completions.create(model=model, prompt="Once upon a time",
                              max_tokens=1, temperature=0, logprobs=1,
                              echo=True)
assert e.choices[0].text.startswith("Once upon a time"), e
assert e.choices[0].logprobs.token_logprobs[0] is None
assert all(p <= 0 for p in e.choices[0].logprobs.token_logprobs[1:])

# Chat, not streamed and streamed (with usage and logprobs).
msgs = [{"role": "user", "content": "Tell me a story"}]
chat = client.chat.completions.create(model=model, messages=msgs,
                                      max_tokens=8, temperature=0)
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].message.content
text, entries, usage = "", 0, None
stream = client.chat.completions.create(
    model=model, messages=msgs, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True}, logprobs=True, top_logprobs=2)
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        if c.logprobs is not None:
            for e in c.logprobs.content:
                assert len(e.top_logprobs) == 2
                assert bytes(e.bytes).decode("utf-8", "replace")
                entries += 1
assert text == chat.choices[0].message.content, (text, chat)
assert usage is not None and usage.completion_tokens == 8, usage
assert entries == 8, entries

# Several samples and several prompts: choices numbered prompt * n +
# sample; a seeded request's samples are reproducible.
many = client.completions.create(model=model, prompt=["Once upon", "The dog"],
                                 n=3, max_tokens=6, temperature=1.0, seed=9)
assert [c.index for c in many.choices] == list(range(6)), many
again = client.completions.create(model=model, prompt=["Once upon", "The dog"],
                                  n=3, max_tokens=6, temperature=1.0, seed=9)
assert [c.text for c in many.choices] == [c.text for c in again.choices]
assert many.usage.completion_tokens == 36, many.usage
chat_n = client.chat.completions.create(model=model, messages=msgs, n=2,
                                        max_tokens=4, temperature=1.0)
assert sorted(c.index for c in chat_n.choices) == [0, 1], chat_n
seen = set()
for chunk in client.chat.completions.create(model=model, messages=msgs, n=2,
                                            max_tokens=4, stream=True):
    for c in chunk.choices:
        seen.add(c.index)
assert seen == {0, 1}, seen

# Structured output. The SDK's own parse(): a pydantic model becomes a
# strict json_schema response_format, and the reply parses back into it.
class Pet(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=8)
    legs: int = pydantic.Field(ge=0, le=8)


parse = getattr(client.chat.completions, "parse", None) or \
    client.beta.chat.completions.parse
parsed = parse(model=model, messages=msgs, max_tokens=300, temperature=0,
               response_format=Pet)
pet = parsed.choices[0].message.parsed
assert isinstance(pet, Pet) and len(pet.name) <= 8 and 0 <= pet.legs <= 8, \
    parsed
# A json_schema response_format, streamed: the deltas join into JSON of
# the schema (bounded, so it completes: finish_reason "stop").
schema = {"type": "object", "additionalProperties": False,
          "properties": {"mood": {"enum": ["happy", "sad"]},
                         "age": {"type": "integer", "minimum": 1,
                                 "maximum": 99}},
          "required": ["mood", "age"]}
text, finish = "", None
for chunk in client.chat.completions.create(
        model=model, messages=msgs, max_tokens=300, temperature=0.8, seed=1,
        stream=True, response_format={"type": "json_schema", "json_schema": {
            "name": "m", "strict": True, "schema": schema}}):
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
obj = json.loads(text)
assert finish == "stop" and obj["mood"] in ("happy", "sad"), (finish, text)
assert 1 <= obj["age"] <= 99 and list(obj) == ["mood", "age"], text
# json_object: an object opens the reply (a tiny model may not close it
# within max_tokens).
j = client.chat.completions.create(model=model, messages=msgs, max_tokens=5,
                                   temperature=0,
                                   response_format={"type": "json_object"})
assert j.choices[0].message.content.lstrip().startswith("{"), j
# vLLM's extensions through extra_body.
m = client.completions.create(model=model, prompt="Once upon a time",
                              max_tokens=30, temperature=0,
                              extra_body={"guided_regex": " [A-Z][a-z]{2,6}"})
assert re.fullmatch(r" [A-Z][a-z]{2,6}", m.choices[0].text), m
m = client.completions.create(
    model=model, prompt="Once upon a time", max_tokens=30, temperature=0,
    extra_body={"guided_choice": ["happy", "sad"]})
assert m.choices[0].text in ("happy", "sad"), m

# Tools. "required" and a named function are enforced by a grammar, so
# even this small model's calls parse and follow the parameters' schema;
# streamed calls arrive as deltas the SDK's users accumulate per index.
tools = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"city": {"type": "string", "maxLength": 20},
                                  "unit": {"enum": ["celsius",
                                                    "fahrenheit"]}},
                   "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "get_time",
                                      "parameters": {"type": "object"}}}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]


def check_weather_args(arguments):
    args = json.loads(arguments)
    assert set(args) == {"city", "unit"}, arguments
    assert isinstance(args["city"], str) and len(args["city"]) <= 20
    assert args["unit"] in ("celsius", "fahrenheit"), arguments


r = client.chat.completions.create(model=model, messages=ask, tools=tools,
                                   tool_choice="required",
                                   parallel_tool_calls=False, max_tokens=60,
                                   temperature=0)
msg = r.choices[0].message
assert r.choices[0].finish_reason == "tool_calls", r
assert msg.content is None and len(msg.tool_calls) == 1, r
call = msg.tool_calls[0]
assert call.type == "function" and call.id.startswith("call_"), call
assert call.function.name in ("get_weather", "get_time"), call
if call.function.name == "get_weather":
    check_weather_args(call.function.arguments)
named = {"type": "function", "function": {"name": "get_weather"}}
calls, finish = {}, None
for chunk in client.chat.completions.create(
        model=model, messages=ask, tools=tools, tool_choice=named,
        max_tokens=60, temperature=0.7, seed=3, stream=True):
    for c in chunk.choices:
        finish = c.finish_reason or finish
        for d in c.delta.tool_calls or []:
            entry = calls.setdefault(d.index, {"id": None, "name": "",
                                               "args": ""})
            entry["id"] = d.id or entry["id"]
            if d.function is not None:
                entry["name"] += d.function.name or ""
                entry["args"] += d.function.arguments or ""
assert finish == "tool_calls" and list(calls) == [0], (finish, calls)
assert calls[0]["name"] == "get_weather" and calls[0]["id"], calls
check_weather_args(calls[0]["args"])
# "none": no calls, plain content; "auto": whatever the model chooses,
# in a shape the SDK reads.
r = client.chat.completions.create(model=model, messages=ask, tools=tools,
                                   tool_choice="none", max_tokens=8,
                                   temperature=0)
assert r.choices[0].message.content and not r.choices[0].message.tool_calls
r = client.chat.completions.create(model=model, messages=ask, tools=tools,
                                   max_tokens=8, temperature=0)
assert r.choices[0].message.content or r.choices[0].message.tool_calls, r
# The call and its result go back in the conversation.
r = client.chat.completions.create(
    model=model, tools=tools, max_tokens=8, temperature=0,
    messages=ask + [msg.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": call.id,
                     "content": "22 degrees, sunny"}])
assert r.choices[0].message.content or r.choices[0].message.tool_calls, r

# Embeddings: the SDK asks for base64 by default and decodes it; float
# gives the same numbers. Unit length; for this model a paraphrase lies
# closer than an unrelated sentence (measured: 0.93 against 0.76).
texts = ["The cat sat on the mat.", "A kitten rested on the rug.",
         "Stock markets fell sharply today."]
emb = client.embeddings.create(model=model, input=texts)
vecs = [d.embedding for d in sorted(emb.data, key=lambda d: d.index)]
assert len(vecs) == 3 and len(set(map(len, vecs))) == 1, emb
assert emb.usage.prompt_tokens > 3, emb.usage
def dot(a, b):
    return sum(x * y for x, y in zip(a, b))
assert all(abs(dot(v, v) - 1) < 1e-4 for v in vecs)
assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]), \
    (dot(vecs[0], vecs[1]), dot(vecs[0], vecs[2]))
floats = client.embeddings.create(model=model, input=texts[0],
                                  encoding_format="float")
assert all(abs(a - b) < 1e-6 for a, b in zip(floats.data[0].embedding,
                                              vecs[0]))

# Errors the SDK must not retry: 400s that name the field.
for bad in (dict(extra_body={"guided_decoding_backend": "x"}), dict(n=200),
            dict(top_logprobs=2),
            dict(tools=tools, tool_choice={"type": "function",
                                           "function": {"name": "nope"}})):
    try:
        client.chat.completions.create(model=model, messages=msgs,
                                       max_tokens=2, **bad)
    except openai.BadRequestError as e:
        assert e.status_code == 400
    else:
        raise AssertionError("accepted %r" % bad)
try:
    client.completions.create(model=model, prompt="x", max_tokens=10**6)
except openai.BadRequestError as e:
    assert e.status_code == 400  # can never fit: not a 429 to retry
else:
    raise AssertionError("a request that can never fit was accepted")
try:
    client.models.retrieve("no-such-model")
except openai.NotFoundError:
    pass
else:
    raise AssertionError("an unknown model was found")

print("openai sdk %s: all checks passed" % openai.__version__)
