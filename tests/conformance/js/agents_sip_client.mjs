// The @openai/agents realtime SDK's SIP flow (OpenAIRealtimeSIP) as an application of the server.
//
// Usage: node agents_sip_client.mjs http://HOST:PORT CALL_ID
// Accepts the ringing phone call CALL_ID with the payload OpenAIRealtimeSIP.buildInitialConfig
// builds from its agent (through the `openai` package's realtime.calls.accept), attaches a
// RealtimeSession to the live call (the sideband WebSocket), prints {"attached": true} once it
// is connected, and waits for the caller's weather question to be answered through its
// get_weather tool. Prints one JSON summary line: the assistant's answers, the tool calls, the
// SDK's error events, and every server event that fails the SDK's own event schema.

import { finisher, watch, weatherTool } from './common.mjs';
import { OpenAIRealtimeSIP, RealtimeAgent, RealtimeSession } from '@openai/agents/realtime';
import OpenAI from 'openai';

const [base, callId] = process.argv.slice(2);
if (!base || !callId) {
  console.error('usage: node agents_sip_client.mjs http://HOST:PORT CALL_ID');
  process.exit(2);
}
const API_KEY = 'sk-app';
const TIMEOUT_MS = 30_000;

const summary = { turns: [], toolCalls: [], errors: [], schemaFailures: [], serverEvents: 0 };
const seenTypes = new Set();

const getWeather = weatherTool(summary);
const agent = new RealtimeAgent({ name: 'phone', instructions: 'Answer the phone.', tools: [getWeather] });

const transport = new OpenAIRealtimeSIP();
const session = new RealtimeSession(agent, { transport });
watch(transport, session, summary, seenTypes);
const finish = finisher(session, summary, seenTypes, TIMEOUT_MS);

try {
  const payload = await OpenAIRealtimeSIP.buildInitialConfig(agent);
  const client = new OpenAI({ apiKey: API_KEY, baseURL: `${base}/v1` });
  await client.realtime.calls.accept(callId, payload);
  const answered = new Promise((resolve) => {
    session.on('agent_end', (_context, _agent, text) => {
      if (text) {
        summary.turns.push(text);
        if (summary.toolCalls.length) resolve();
      }
    });
  });
  const url = `${base.replace(/^http/, 'ws')}/v1/realtime?call_id=${callId}`;
  await session.connect({ apiKey: API_KEY, callId, url });
  console.log(JSON.stringify({ attached: true }));
  await answered;
  finish(0);
} catch (error) {
  summary.errors.push(String(error?.stack ?? error));
  finish(1);
}
