#!/usr/bin/env python3
"""A client of latentkv's OpenAI-compatible HTTP API using only the Python
standard library (urllib), for tests/integration/http_api_test.cc.

  openai_client.py request URL [BODY]    one request; BODY absent: GET
  openai_client.py stream URL BODY       a streamed request, SSE checked
  openai_client.py disconnect URL BODY   read the first event, then hang up

Prints one JSON object: {"status", "content_type", "body"} for request;
for stream also "events" (count), "framing_errors" (list), "done" (ended
with data: [DONE]), "text", "token_ids", "finish_reasons" (one per chunk,
null included), "usage" (the usage chunk's, or null), "error" (an error
event's, or null); for disconnect "first" (the first event's data).
"""
import json
import sys
import urllib.error
import urllib.request


def open_url(url, body):
    data = body.encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"},
        method="POST" if data is not None else "GET")
    try:
        return urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:  # 4xx/5xx: a response all the same
        return e


def request(url, body):
    resp = open_url(url, body)
    return {"status": resp.status,
            "content_type": resp.headers.get("Content-Type"),
            "body": resp.read().decode()}


def stream(url, body):
    resp = open_url(url, body)
    out = {"status": resp.status,
           "content_type": resp.headers.get("Content-Type"),
           "events": 0, "framing_errors": [], "done": False, "text": "",
           "token_ids": [], "finish_reasons": [], "usage": None,
           "error": None}
    raw = resp.read().decode()
    if resp.status != 200:
        out["body"] = raw
        return out
    if not raw.endswith("\n\n"):
        out["framing_errors"].append("stream does not end with a blank line")
    for event in raw.split("\n\n")[:-1]:
        out["events"] += 1
        if out["done"]:
            out["framing_errors"].append("event after [DONE]: " + event)
        if not event.startswith("data: ") or "\n" in event:
            out["framing_errors"].append("not one data: line: " + event)
            continue
        data = event[len("data: "):]
        if data == "[DONE]":
            out["done"] = True
            continue
        chunk = json.loads(data)
        if "error" in chunk:
            out["error"] = chunk["error"]
            continue
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
        for choice in chunk["choices"]:
            if "delta" in choice:
                out["text"] += choice["delta"].get("content") or ""
            else:
                out["text"] += choice["text"]
            out["token_ids"] += choice.get("token_ids") or []
            out["finish_reasons"].append(choice["finish_reason"])
    return out


def disconnect(url, body):
    resp = open_url(url, body)
    first = b""
    while not first.endswith(b"\n\n"):
        line = resp.readline()
        if not line:
            break
        first += line
    resp.close()  # hangs up while the server is still generating
    return {"status": resp.status, "first": first.decode().strip()}


def main():
    cmd, url = sys.argv[1], sys.argv[2]
    body = sys.argv[3] if len(sys.argv) > 3 else None
    result = {"request": request, "stream": stream,
              "disconnect": disconnect}[cmd](url, body)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
