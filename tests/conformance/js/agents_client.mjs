// The @openai/agents realtime SDK (OpenAIRealtimeWebSocket transport) as a client of the server.
//
// Usage: node agents_client.mjs ws://HOST:PORT/v1/realtime?model=gpt-realtime
// (or REALTIME_URL in the environment). Speaks two turns as 24 kHz PCM16: a short greeting, then
// a longer question that the server's fake engines answer with a get_weather tool call. Prints
// one JSON summary line: the assistant's text per turn, the tool calls, the audio received, the
// SDK's error events, and every server event that fails the SDK's own event schema (the SDK
// drops those silently, so the script checks each frame itself).

import { finisher, sendSpeech, utterance, watch, weatherTool } from './common.mjs';
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from '@openai/agents/realtime';

const url = process.argv[2] ?? process.env.REALTIME_URL;
if (!url) {
  console.error('usage: node agents_client.mjs ws://HOST:PORT/v1/realtime?model=gpt-realtime');
  process.exit(2);
}
const TIMEOUT_MS = 30_000;

const summary = {
  turns: [],
  toolCalls: [],
  audioBytes: 0,
  errors: [],
  schemaFailures: [],
  serverEvents: 0,
  eventTypes: [],
};
const seenTypes = new Set();

const getWeather = weatherTool(summary);
const agent = new RealtimeAgent({
  name: 'assistant',
  instructions: 'Answer briefly.',
  tools: [getWeather],
});
const transport = new OpenAIRealtimeWebSocket({ url });
const session = new RealtimeSession(agent, { transport, model: 'gpt-realtime' });

watch(transport, session, summary, seenTypes);
session.on('audio', (event) => {
  summary.audioBytes += event.data.byteLength;
});

/** Resolves with the assistant's text of the next turn that ends with a spoken answer. */
function answered() {
  return new Promise((resolve) => {
    const onEnd = (_context, _agent, text) => {
      if (text) {
        session.off('agent_end', onEnd);
        resolve(text);
      }
    };
    session.on('agent_end', onEnd);
  });
}

async function speak(audio) {
  const next = answered();
  sendSpeech(session, audio);
  summary.turns.push(await next);
}

const finish = finisher(session, summary, seenTypes, TIMEOUT_MS);

try {
  // the key is sent as `Authorization: Bearer`; the server checks it only when it has one set
  await session.connect({ apiKey: 'sk-local-test' });
  await speak(utterance(200, 300)); // a greeting
  await speak(utterance(200, 1600)); // the weather question: a tool call, then the answer
  finish(0);
} catch (error) {
  summary.errors.push(String(error?.stack ?? error));
  finish(1);
}
