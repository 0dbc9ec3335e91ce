"""The official `anthropic` Python SDK, unchanged, against a running Palisade gateway.

Driven by crates/cli/tests/sdk.rs, which starts the mock upstream and the gateway and
passes them in through the environment:

  PALISADE_BASE_URL             the gateway
  PALISADE_KEY                  a good key of the test tenant
  PALISADE_REVOKED_KEY          a revoked key of the same tenant
  PALISADE_EXPIRED_KEY          a key whose expiry is in the past
  PALISADE_OTHER_TENANT_RECEIPT a receipt id that belongs to another tenant
  PALISADE_RECEIPTS_OUT         file to which receipt ids seen here are appended

The mock upstream is steered by `[[mock:...]]` directives in the prompt (crates/mock/README.md).
"""

import asyncio
import os

import anthropic
import pytest
from anthropic import Anthropic, AsyncAnthropic

BASE_URL = os.environ["PALISADE_BASE_URL"]
KEY = os.environ["PALISADE_KEY"]
MODEL = "claude-sonnet-4-6"


def client(key=KEY, **kw):
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 20.0)
    return Anthropic(api_key=key, base_url=BASE_URL, **kw)


def record_receipt(headers):
    """Remembers the gateway's receipt id so the Rust side can check that it exists."""
    rid = headers.get("x-palisade-receipt-id")
    assert rid, "every data-plane answer carries x-palisade-receipt-id"
    out = os.environ.get("PALISADE_RECEIPTS_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(rid + "\n")
    return rid


def text_of(message):
    return "".join(b.text for b in message.content if b.type == "text")


def user(text):
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- success paths


def test_create():
    raw = client().messages.with_raw_response.create(
        model=MODEL, max_tokens=256, messages=user("Hello through Palisade")
    )
    record_receipt(raw.headers)
    msg = raw.parse()
    assert isinstance(msg, anthropic.types.Message)
    assert msg.role == "assistant"
    assert msg.stop_reason == "end_turn"
    assert text_of(msg) == "You said: Hello through Palisade"
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert raw.headers.get("request-id", "").startswith("req_")


def test_create_plain_call():
    msg = client().messages.create(
        model=MODEL,
        max_tokens=64,
        messages=user("[[mock:reply=plain answer]] hi"),
    )
    assert text_of(msg) == "plain answer"
    assert msg._request_id


def test_stream_text_and_final_message():
    seen_text = []
    with client().messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=user("[[mock:reply=Streaming through Palisade, event by event.]] [[mock:chunk=5]] go"),
    ) as stream:
        record_receipt(stream.response.headers)
        for text in stream.text_stream:
            seen_text.append(text)
        final = stream.get_final_message()
    assert len(seen_text) > 1, "the text arrives in several deltas"
    assert "".join(seen_text) == "Streaming through Palisade, event by event."
    assert text_of(final) == "Streaming through Palisade, event by event."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def test_stream_events_in_order():
    with client().messages.stream(
        model=MODEL, max_tokens=64, messages=user("[[mock:reply=a b c d e f]] x")
    ) as stream:
        types = [event.type for event in stream]
        text = stream.get_final_text()
    assert types[0] == "message_start"
    assert "content_block_start" in types and "content_block_stop" in types
    assert types[-1] == "message_stop"
    assert text == "a b c d e f"


def test_tool_use_round_trip():
    c = client()
    tools = [
        {
            "name": "get_weather",
            "description": "Current weather for a city",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
    ]
    first = c.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=tools,
        messages=user('[[mock:tool_use=get_weather:{"city":"Paris"}]] What is the weather in Paris?'),
    )
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather"
    assert call.input == {"city": "Paris"}
    assert call.id

    second = c.messages.create(
        model=MODEL,
        max_tokens=256,
        tools=tools,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": call.id, "content": "18C and sunny"},
                ],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert "18C and sunny" in text_of(second)


def test_tool_use_streamed():
    with client().messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
        messages=user('[[mock:tool_use=lookup:{"id":42,"tags":["a","b"]}]] look it up'),
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = [b for b in final.content if b.type == "tool_use"][0]
    assert call.name == "lookup"
    assert call.input == {"id": 42, "tags": ["a", "b"]}


def test_count_tokens():
    c = client()
    raw = c.messages.with_raw_response.count_tokens(model=MODEL, messages=user("abcd" * 10))
    record_receipt(raw.headers)
    counted = raw.parse()
    assert counted.input_tokens == 10
    # The mock's usage and count_tokens agree, so the gateway passed both through intact.
    created = c.messages.create(model=MODEL, max_tokens=16, messages=user("abcd" * 10))
    assert created.usage.input_tokens == counted.input_tokens
    longer = c.messages.count_tokens(
        model=MODEL, system="You are terse.", messages=user("abcd" * 10)
    )
    assert longer.input_tokens > counted.input_tokens


def test_system_prompt_as_string():
    msg = client().messages.create(
        model=MODEL,
        max_tokens=64,
        system="You are terse. [[mock:reply=from the system string]]",
        messages=user("hello"),
    )
    assert text_of(msg) == "from the system string"


def test_system_prompt_as_blocks():
    c = client()
    system = [
        {"type": "text", "text": "You are terse."},
        {
            "type": "text",
            "text": "[[mock:reply=from the system blocks]]",
            "cache_control": {"type": "ephemeral"},
        },
    ]
    msg = c.messages.create(model=MODEL, max_tokens=64, system=system, messages=user("hello"))
    assert text_of(msg) == "from the system blocks"
    with c.messages.stream(model=MODEL, max_tokens=64, system=system, messages=user("hi")) as s:
        assert s.get_final_text() == "from the system blocks"
    counted = c.messages.count_tokens(model=MODEL, system=system, messages=user("hello"))
    assert counted.input_tokens > 0


def test_async_client_create_and_stream():
    async def go():
        async with AsyncAnthropic(api_key=KEY, base_url=BASE_URL, max_retries=0, timeout=20.0) as c:
            msg = await c.messages.create(model=MODEL, max_tokens=32, messages=user("async hello"))
            assert text_of(msg) == "You said: async hello"
            async with c.messages.stream(
                model=MODEL, max_tokens=32, messages=user("[[mock:reply=async stream]] x")
            ) as stream:
                pieces = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
            assert "".join(pieces) == text_of(final) == "async stream"
            with pytest.raises(anthropic.OverloadedError):
                await c.messages.create(
                    model=MODEL, max_tokens=16, messages=user("[[mock:error=529]] hi")
                )

    asyncio.run(go())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "env,code",
    [
        (None, "invalid"),
        ("PALISADE_REVOKED_KEY", "revoked"),
        ("PALISADE_EXPIRED_KEY", "expired"),
    ],
)
def test_401(env, code):
    key = os.environ[env] if env else "pal_notakey_0000000000000000000000000000"
    c = client(key)
    with pytest.raises(anthropic.AuthenticationError) as info:
        c.messages.create(model=MODEL, max_tokens=16, messages=user("hi"))
    err = info.value
    assert err.status_code == 401
    assert isinstance(err.body, dict) and err.body["type"] == "error"
    assert err.body["error"]["type"] == "authentication_error"
    if code != "invalid":
        assert code in err.message.lower()
    # Streaming and count_tokens refuse the same way.
    with pytest.raises(anthropic.AuthenticationError):
        with c.messages.stream(model=MODEL, max_tokens=16, messages=user("hi")) as s:
            s.until_done()
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.count_tokens(model=MODEL, messages=user("hi"))


def test_404_upstream():
    with pytest.raises(anthropic.NotFoundError) as info:
        client().messages.create(model=MODEL, max_tokens=16, messages=user("[[mock:error=404]] hi"))
    assert info.value.status_code == 404
    assert info.value.body["error"]["type"] == "not_found_error"


def test_404_other_tenants_receipt():
    rid = os.environ["PALISADE_OTHER_TENANT_RECEIPT"]
    c = client()
    with pytest.raises(anthropic.NotFoundError):
        c.get(f"/v1/receipts/{rid}", cast_to=object)
    with pytest.raises(anthropic.NotFoundError):
        c.get("/v1/receipts/01900000-0000-7000-8000-000000000000", cast_to=object)


@pytest.mark.parametrize(
    "status,cls,error_type",
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_upstream_error_status(status, cls, error_type):
    c = client()
    with pytest.raises(cls) as info:
        c.messages.create(
            model=MODEL, max_tokens=16, messages=user(f"[[mock:error={status}]] hi")
        )
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.body["error"]["type"] == error_type
    record_receipt(err.response.headers)
    # The same error before a stream starts.
    with pytest.raises(cls):
        with c.messages.stream(
            model=MODEL, max_tokens=16, messages=user(f"[[mock:error={status}]] hi")
        ) as s:
            s.until_done()


def test_timeout():
    c = client(timeout=1.0)
    with pytest.raises(anthropic.APITimeoutError):
        c.messages.create(model=MODEL, max_tokens=16, messages=user("[[mock:hang]] hi"))
    with pytest.raises(anthropic.APITimeoutError):
        with c.messages.stream(model=MODEL, max_tokens=16, messages=user("[[mock:hang]] hi")) as s:
            s.until_done()
