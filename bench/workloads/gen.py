#!/usr/bin/env python3
"""Writes the request bodies of the published benchmark (bench/published.sh) into this directory.

Deterministic (no randomness): re-running it reproduces the committed files byte for byte.

  chat.json   4 KB chat prompt with a little PII (one email address, one phone number).
  agent.json  An agent turn: 6 tools offered, a prior assistant tool_use, and a user
              tool_result of 16 KB (CRM records as JSON text, a few emails in them); the
              mock answers with a short text and a createRecord tool_use (mock directives).
  stream.json A prompt whose echo is exactly 4,000 characters, cut by the mock into 1,000
              text deltas of 4 characters (`[[mock:chunk=4]]`): a streamed answer of 1,000
              output tokens (the mock counts 4 characters per token). palisade-load --stream
              adds "stream": true.
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODEL = "claude-sonnet-4-5"

SENTENCES = [
    "Please review the following quarterly report and summarise the main risks. ",
    "The revenue grew in every region except the north, where two large contracts ended. ",
    "Operating costs rose slightly because of new hiring in the support organisation. ",
    "Customer churn stayed flat, but the enterprise segment asked for longer payment terms. ",
    "The board wants a short list of actions for the next two quarters, ranked by impact. ",
    "Keep the tone neutral and avoid speculation about individual employees. ",
]


def prose(n):
    out, i = "", 0
    while len(out) < n:
        out += SENTENCES[i % len(SENTENCES)]
        i += 1
    return out[:n]


def write(name, body):
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n"
    (HERE / name).write_text(data)
    return len(data.encode())


def chat():
    pii = (
        "If anything is unclear, contact the analyst, Jane Doe, at jane.doe@example.com "
        "or on +1 415-555-0132 before Friday. "
    )
    head = prose(1800)
    text = head + pii
    text += prose(4000 - len(text.encode()))
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "system": "You are a careful financial analyst.",
        "messages": [{"role": "user", "content": text}],
    }


TOOLS = [
    ("listRecords", "List the records of a collection.", {"collection": {"type": "string"}}, ["collection"]),
    ("getRecord", "Read one record.", {"collection": {"type": "string"}, "id": {"type": "string"}}, ["collection", "id"]),
    ("searchRecords", "Full-text search in a collection.", {"collection": {"type": "string"}, "query": {"type": "string"}}, ["collection", "query"]),
    ("createRecord", "Create a record.", {"collection": {"type": "string"}, "data": {"type": "object"}}, ["collection", "data"]),
    ("deleteRecord", "Delete a record.", {"collection": {"type": "string"}, "id": {"type": "string"}}, ["collection", "id"]),
    ("adminPanel", "Open the admin panel.", {}, []),
]


def records(target_bytes):
    cities = ["Lisbon", "Oslo", "Austin", "Lyon", "Osaka", "Denver", "Porto", "Leeds"]
    stages = ["lead", "trial", "customer", "renewal", "churned"]
    out, i = [], 0
    while True:
        rec = {
            "id": f"cust-{i:06d}",
            "name": f"Acme Subsidiary {i}",
            "city": cities[i % len(cities)],
            "stage": stages[i % len(stages)],
            "seats": 10 + (i * 7) % 490,
            "notes": "Asked about volume pricing and the on-premise option during the last call.",
        }
        if i % 10 == 3:
            rec["contact"] = f"buyer{i}@acme-{i}.example.com"
        trial = json.dumps(out + [rec], separators=(",", ":"))
        if len(trial) > target_bytes:
            return json.dumps(out, separators=(",", ":"))
        out.append(rec)
        i += 1


def agent():
    tools = [
        {
            "name": n,
            "description": d,
            "input_schema": {"type": "object", "properties": p, "required": r},
        }
        for n, d, p, r in TOOLS
    ]
    result = records(16 * 1024)
    call = '{"collection":"notes","data":{"customer":"cust-000017","text":"Follow up on the renewal"}}'
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "system": "You are the CRM assistant of a sales team. Use the tools to read and write records.",
        "tools": tools,
        "messages": [
            {"role": "user", "content": "Find the Acme records that are up for renewal and add a follow-up note."},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "I will search the customer records first."},
                    {
                        "type": "tool_use",
                        "id": "toolu_bench_0001",
                        "name": "searchRecords",
                        "input": {"collection": "customers", "query": "acme"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_bench_0001", "content": result},
                    {
                        "type": "text",
                        "text": "[[mock:reply=Found the renewal records; adding the note now.]] "
                        f"[[mock:tool_use=createRecord:{call}]] Continue.",
                    },
                ],
            },
        ],
    }


def stream():
    text = prose(3990)
    assert len("You said: " + text.strip()) == 4000, len(text.strip())
    return {
        "model": MODEL,
        "max_tokens": 2048,
        "messages": [{"role": "user", "content": "[[mock:chunk=4]] " + text}],
    }


if __name__ == "__main__":
    for name, body in [("chat.json", chat()), ("agent.json", agent()), ("stream.json", stream())]:
        print(f"{name}: {write(name, body)} bytes")
