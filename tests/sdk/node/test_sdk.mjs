// The official `@anthropic-ai/sdk` for Node, unchanged, against a running Palisade gateway.
//
// Driven by crates/cli/tests/sdk.rs, which starts the mock upstream and the gateway and passes
// them in through the environment (see tests/sdk/python/test_sdk.py for the list). The mock is
// steered by `[[mock:...]]` directives in the prompt (crates/mock/README.md).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';

const BASE_URL = process.env.PALISADE_BASE_URL;
const KEY = process.env.PALISADE_KEY;
const MODEL = 'claude-sonnet-4-6';

function client(apiKey = KEY, opts = {}) {
  return new Anthropic({ apiKey, baseURL: BASE_URL, maxRetries: 0, timeout: 20_000, ...opts });
}

/** Remembers the gateway's receipt id so the Rust side can check that it exists. */
function recordReceipt(headers) {
  const rid = headers.get('x-palisade-receipt-id');
  assert.ok(rid, 'every data-plane answer carries x-palisade-receipt-id');
  if (process.env.PALISADE_RECEIPTS_OUT) appendFileSync(process.env.PALISADE_RECEIPTS_OUT, rid + '\n');
  return rid;
}

const textOf = (msg) =>
  msg.content
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('');

const user = (text) => [{ role: 'user', content: text }];

// ------------------------------------------------------------------ success paths

test('create', async () => {
  const { data: msg, response } = await client()
    .messages.create({ model: MODEL, max_tokens: 256, messages: user('Hello through Palisade') })
    .withResponse();
  recordReceipt(response.headers);
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.equal(msg.stop_reason, 'end_turn');
  assert.equal(textOf(msg), 'You said: Hello through Palisade');
  assert.ok(msg.usage.input_tokens > 0 && msg.usage.output_tokens > 0);
  assert.match(response.headers.get('request-id') ?? '', /^req_/);
  assert.match(msg._request_id ?? '', /^req_/);
});

test('messages.stream: text events and final message', async () => {
  const stream = client().messages.stream({
    model: MODEL,
    max_tokens: 256,
    messages: user('[[mock:reply=Streaming through Palisade, event by event.]] [[mock:chunk=5]] go'),
  });
  const pieces = [];
  stream.on('text', (delta) => pieces.push(delta));
  const { response } = await stream.withResponse();
  recordReceipt(response.headers);
  const final = await stream.finalMessage();
  assert.ok(pieces.length > 1, 'the text arrives in several deltas');
  assert.equal(pieces.join(''), 'Streaming through Palisade, event by event.');
  assert.equal(textOf(final), 'Streaming through Palisade, event by event.');
  assert.equal(final.stop_reason, 'end_turn');
  assert.ok(final.usage.output_tokens > 0);
  assert.ok(final.usage.input_tokens > 0);
});

test('messages.stream: async iteration sees the event sequence', async () => {
  const stream = client().messages.stream({
    model: MODEL,
    max_tokens: 64,
    messages: user('[[mock:reply=a b c d e f]] x'),
  });
  const types = [];
  for await (const event of stream) types.push(event.type);
  assert.equal(types[0], 'message_start');
  assert.ok(types.includes('content_block_start') && types.includes('content_block_stop'));
  assert.equal(types.at(-1), 'message_stop');
  assert.equal(await stream.finalText(), 'a b c d e f');
});

test('create with stream: true', async () => {
  const events = await client().messages.create({
    model: MODEL,
    max_tokens: 64,
    stream: true,
    messages: user('[[mock:reply=raw stream]] x'),
  });
  let text = '';
  for await (const e of events) {
    if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
  }
  assert.equal(text, 'raw stream');
});

test('tool use round trip', async () => {
  const c = client();
  const tools = [
    {
      name: 'get_weather',
      description: 'Current weather for a city',
      input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  ];
  const first = await c.messages.create({
    model: MODEL,
    max_tokens: 256,
    tools,
    messages: user('[[mock:tool_use=get_weather:{"city":"Paris"}]] What is the weather in Paris?'),
  });
  assert.equal(first.stop_reason, 'tool_use');
  const calls = first.content.filter((b) => b.type === 'tool_use');
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.deepEqual(calls[0].input, { city: 'Paris' });

  const second = await c.messages.create({
    model: MODEL,
    max_tokens: 256,
    tools,
    messages: [
      { role: 'user', content: 'What is the weather in Paris?' },
      { role: 'assistant', content: first.content },
      {
        role: 'user',
        content: [{ type: 'tool_result', tool_use_id: calls[0].id, content: '18C and sunny' }],
      },
    ],
  });
  assert.equal(second.stop_reason, 'end_turn');
  assert.ok(textOf(second).includes('18C and sunny'), textOf(second));
});

test('tool use streamed (input_json_delta)', async () => {
  const stream = client().messages.stream({
    model: MODEL,
    max_tokens: 256,
    tools: [{ name: 'lookup', input_schema: { type: 'object' } }],
    messages: user('[[mock:tool_use=lookup:{"id":42,"tags":["a","b"]}]] look it up'),
  });
  const final = await stream.finalMessage();
  assert.equal(final.stop_reason, 'tool_use');
  const call = final.content.find((b) => b.type === 'tool_use');
  assert.equal(call.name, 'lookup');
  assert.deepEqual(call.input, { id: 42, tags: ['a', 'b'] });
});

test('count_tokens', async () => {
  const c = client();
  const { data: counted, response } = await c.messages
    .countTokens({ model: MODEL, messages: user('abcd'.repeat(10)) })
    .withResponse();
  recordReceipt(response.headers);
  assert.equal(counted.input_tokens, 10);
  const created = await c.messages.create({ model: MODEL, max_tokens: 16, messages: user('abcd'.repeat(10)) });
  assert.equal(created.usage.input_tokens, counted.input_tokens);
  const longer = await c.messages.countTokens({
    model: MODEL,
    system: 'You are terse.',
    messages: user('abcd'.repeat(10)),
  });
  assert.ok(longer.input_tokens > counted.input_tokens);
});

test('system prompt as a string', async () => {
  const msg = await client().messages.create({
    model: MODEL,
    max_tokens: 64,
    system: 'You are terse. [[mock:reply=from the system string]]',
    messages: user('hello'),
  });
  assert.equal(textOf(msg), 'from the system string');
});

test('system prompt as blocks', async () => {
  const c = client();
  const system = [
    { type: 'text', text: 'You are terse.' },
    { type: 'text', text: '[[mock:reply=from the system blocks]]', cache_control: { type: 'ephemeral' } },
  ];
  const msg = await c.messages.create({ model: MODEL, max_tokens: 64, system, messages: user('hello') });
  assert.equal(textOf(msg), 'from the system blocks');
  const streamed = await c.messages.stream({ model: MODEL, max_tokens: 64, system, messages: user('hi') }).finalText();
  assert.equal(streamed, 'from the system blocks');
  const counted = await c.messages.countTokens({ model: MODEL, system, messages: user('hello') });
  assert.ok(counted.input_tokens > 0);
});

// ------------------------------------------------------------------ errors

for (const [label, env, word] of [
  ['a bad', null, null],
  ['a revoked', 'PALISADE_REVOKED_KEY', 'revoked'],
  ['an expired', 'PALISADE_EXPIRED_KEY', 'expired'],
]) {
  test(`401 for ${label} key`, async () => {
    const c = client(env ? process.env[env] : 'pal_notakey_0000000000000000000000000000');
    const err = await c.messages.create({ model: MODEL, max_tokens: 16, messages: user('hi') }).then(
      () => assert.fail('expected an error'),
      (e) => e,
    );
    assert.ok(err instanceof Anthropic.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.error.type, 'error');
    assert.equal(err.error.error.type, 'authentication_error');
    if (word) assert.ok(err.message.toLowerCase().includes(word), err.message);
    await assert.rejects(
      c.messages.stream({ model: MODEL, max_tokens: 16, messages: user('hi') }).finalMessage(),
      Anthropic.AuthenticationError,
    );
    await assert.rejects(c.messages.countTokens({ model: MODEL, messages: user('hi') }), Anthropic.AuthenticationError);
  });
}

test('404 from the upstream', async () => {
  const err = await client()
    .messages.create({ model: MODEL, max_tokens: 16, messages: user('[[mock:error=404]] hi') })
    .then(
      () => assert.fail('expected an error'),
      (e) => e,
    );
  assert.ok(err instanceof Anthropic.NotFoundError, String(err));
  assert.equal(err.status, 404);
  assert.equal(err.error.error.type, 'not_found_error');
});

test("404 for another tenant's receipt", async () => {
  const c = client();
  await assert.rejects(c.get(`/v1/receipts/${process.env.PALISADE_OTHER_TENANT_RECEIPT}`), Anthropic.NotFoundError);
  await assert.rejects(c.get('/v1/receipts/01900000-0000-7000-8000-000000000000'), Anthropic.NotFoundError);
});

for (const [status, cls, errorType] of [
  [429, Anthropic.RateLimitError, 'rate_limit_error'],
  [500, Anthropic.InternalServerError, 'api_error'],
  [529, Anthropic.OverloadedError, 'overloaded_error'],
]) {
  test(`${status} from the upstream`, async () => {
    const c = client();
    const err = await c.messages
      .create({ model: MODEL, max_tokens: 16, messages: user(`[[mock:error=${status}]] hi`) })
      .then(
        () => assert.fail('expected an error'),
        (e) => e,
      );
    assert.equal(err.constructor, cls, String(err));
    assert.equal(err.status, status);
    assert.equal(err.error.error.type, errorType);
    recordReceipt(err.headers);
    await assert.rejects(
      c.messages.stream({ model: MODEL, max_tokens: 16, messages: user(`[[mock:error=${status}]] hi`) }).finalMessage(),
      cls,
    );
  });
}

test('timeout', async () => {
  const c = client(KEY, { timeout: 1000 });
  await assert.rejects(
    c.messages.create({ model: MODEL, max_tokens: 16, messages: user('[[mock:hang]] hi') }),
    Anthropic.APIConnectionTimeoutError,
  );
  await assert.rejects(
    c.messages.stream({ model: MODEL, max_tokens: 16, messages: user('[[mock:hang]] hi') }).finalMessage(),
    Anthropic.APIConnectionTimeoutError,
  );
});
