// The @openai/agents realtime SDK with a hosted MCP tool (the server connects to the MCP server
// and calls its tools), as a client of the server.
//
// Usage: node agents_mcp_client.mjs REALTIME_URL MCP_URL always|never
// The agent's only tool is the MCP server at MCP_URL (label "weather"). Speaks one question as
// 24 kHz PCM16 (a tone that the server's fake engines hear as a weather question); approves
// every approval the SDK asks for. The SDK itself sends response.create once an MCP call is
// done (its default), so the spoken answer comes in the next response. Prints one JSON summary
// line: the MCP tools the SDK saw listed, the approvals, the completed MCP calls, the answers,
// the SDK's error events and every server event that fails the SDK's own event schema.

import { hostedMcpTool } from '@openai/agents';
import { finisher, sendSpeech, utterance, watch } from './common.mjs';
import { OpenAIRealtimeWebSocket, RealtimeAgent, RealtimeSession } from '@openai/agents/realtime';

const [url, mcpUrl, approval] = process.argv.slice(2);
if (!url || !mcpUrl || !approval) {
  console.error('usage: node agents_mcp_client.mjs REALTIME_URL MCP_URL always|never');
  process.exit(2);
}
const TIMEOUT_MS = 30_000;

const summary = {
  listed: [],
  approvals: [],
  mcpCalls: [],
  answers: [],
  errors: [],
  schemaFailures: [],
  eventTypes: [],
};
const seenTypes = new Set();

const agent = new RealtimeAgent({
  name: 'assistant',
  instructions: 'Answer briefly.',
  tools: [hostedMcpTool({ serverLabel: 'weather', serverUrl: mcpUrl, requireApproval: approval })],
});
const transport = new OpenAIRealtimeWebSocket({ url });
const session = new RealtimeSession(agent, { transport, model: 'gpt-realtime' });

watch(transport, session, summary, seenTypes);

const listed = new Promise((resolve) => {
  session.on('mcp_tools_changed', (tools) => {
    summary.listed = tools.map((tool) => tool.name);
    if (tools.length) resolve();
  });
});
session.on('tool_approval_requested', async (_context, _agent, request) => {
  summary.approvals.push(request.approvalItem.rawItem.name);
  await session.approve(request.approvalItem);
});
session.on('mcp_tool_call_completed', (_context, _agent, call) => {
  summary.mcpCalls.push({ name: call.name, arguments: call.arguments, output: call.output });
});
const answered = new Promise((resolve) => {
  session.on('agent_end', (_context, _agent, text) => {
    if (text) resolve(text);
  });
});

const finish = finisher(session, summary, seenTypes, TIMEOUT_MS);

try {
  await session.connect({ apiKey: 'sk-local-test' });
  await listed;
  sendSpeech(session, utterance(200, 1600)); // the weather question
  summary.answers.push(await answered);
  finish(0);
} catch (error) {
  summary.errors.push(String(error?.stack ?? error));
  finish(1);
}
