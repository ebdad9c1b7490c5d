// What the JavaScript clients of the conformance suite share: their audio, and the check of
// every server event against the SDK's own schema (the SDK drops events that fail it silently).

import { tool } from '@openai/agents/realtime';
import { z } from 'zod';

/** The sample rate of the Realtime API's default PCM16 audio. */
export const RATE = 24_000;

/** `leadMs` of silence, `speechMs` of a 300 Hz tone, then 700 ms of silence, as PCM16. */
export function utterance(leadMs, speechMs) {
  const samples = new Int16Array(((leadMs + speechMs + 700) * RATE) / 1000);
  const start = (leadMs * RATE) / 1000;
  const end = ((leadMs + speechMs) * RATE) / 1000;
  for (let n = start; n < end; n++) {
    samples[n] = Math.round(0.3 * 32767 * Math.sin((2 * Math.PI * 300 * (n - start)) / RATE));
  }
  return samples.buffer;
}

// The schema the transport parses every server event with; the package does not export it.
const eventsModule = new URL('./openaiRealtimeEvents.mjs', import.meta.resolve('@openai/agents-realtime'));
const { realtimeServerEventSchema } = await import(eventsModule.href);

/**
 * Checks every event `transport` receives: counts it in `summary.serverEvents`, adds its type
 * to `seenTypes` and each schema failure to `summary.schemaFailures`; the session's error
 * events go to `summary.errors`.
 */
export function watch(transport, session, summary, seenTypes) {
  transport.on('*', (event) => {
    summary.serverEvents = (summary.serverEvents ?? 0) + 1;
    seenTypes.add(event.type);
    const parsed = realtimeServerEventSchema.safeParse(event);
    if (!parsed.success) {
      summary.schemaFailures.push({ type: event.type, issues: parsed.error.issues.slice(0, 3) });
    }
  });
  session.on('error', (error) => {
    const detail = error.error?.error ?? error.error;
    summary.errors.push(detail instanceof Error ? detail.message : JSON.stringify(detail));
  });
}

/** Sends `audio` (PCM16) to `session` in 100 ms appends, as a microphone would. */
export function sendSpeech(session, audio) {
  const chunk = (RATE * 2) / 10;
  for (let i = 0; i < audio.byteLength; i += chunk) {
    session.sendAudio(audio.slice(i, i + chunk));
  }
}

/**
 * The script's end: `finish(code)` prints `summary` (with the event types seen) as one JSON
 * line, closes `session` and exits; it is called by itself with 1 after `timeoutMs`.
 */
export function finisher(session, summary, seenTypes, timeoutMs) {
  const timer = setTimeout(() => {
    summary.errors.push(`timed out after ${timeoutMs} ms`);
    finish(1);
  }, timeoutMs);

  function finish(code) {
    clearTimeout(timer);
    summary.eventTypes = [...seenTypes].sort();
    console.log(JSON.stringify(summary));
    try {
      session.close();
    } finally {
      process.exit(code);
    }
  }

  return finish;
}

/** The get_weather function tool of the fake engines' weather question; each call is recorded
 * in `summary.toolCalls`. */
export function weatherTool(summary) {
  return tool({
    name: 'get_weather',
    description: 'Weather of a city.',
    parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      summary.toolCalls.push({ name: 'get_weather', city });
      return 'sunny';
    },
  });
}
