// The voice page: microphone -> server, response audio -> speakers, transcripts and latency
// on screen. Two ways to connect, as browser apps do: a WebSocket (audio as
// input_audio_buffer.append / response.output_audio.delta events, with the subprotocols a
// browser client of the JS SDK offers), or WebRTC (audio on Opus tracks, events on the
// "oai-events" data channel, the SDP offer posted to /v1/realtime/calls).

const WIRE_RATE = 24000; // audio/pcm, the session's default format both ways
const PLAYBACK_LEAD_S = 0.05; // scheduling slack before the first buffer of a burst
const SETTINGS_KEY = "realtime-voice-settings";
const ICE_GATHERING_WAIT_MS = 2000; // the server takes no trickled candidates

// read by the browser test; also handy in the console
const stats = (window.voiceStats = {
  connected: false,
  events: 0,
  sentMs: 0,
  peakLevel: 0,
  audioDeltas: 0,
  audioMs: 0,
  userTranscripts: 0,
  assistantTranscripts: 0,
  bargeIns: 0,
  latenciesMs: [],
  errors: [],
  transport: null,
  remoteAudioPeak: 0,
  outputBufferStarts: 0,
});

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $("talk"),
  talkLabel: $("talk-label"),
  status: $("status"),
  transcript: $("transcript"),
  empty: $("empty"),
  hint: $("hint"),
  settings: $("settings"),
  instructions: $("instructions"),
  voice: $("voice"),
  silence: $("silence"),
  apiKey: $("api-key"),
  transport: $("transport"),
  applied: $("applied"),
  latencyLast: $("latency-last"),
  latencyMedian: $("latency-median"),
  latencyCount: $("latency-count"),
};

// --- audio helpers ---------------------------------------------------------------------------

function base64FromBytes(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function floatsFromBase64Pcm16(b64) {
  const binary = atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const out = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 32768;
  return out;
}

/** Response audio, scheduled back to back; knows how much of each item was heard. */
class Player {
  constructor(context, onIdle) {
    this.context = context;
    this.onIdle = onIdle;
    this.nextStart = 0;
    this.sources = new Set();
    this.itemId = null;
    this.itemHeard = 0; // seconds of the current item whose buffers finished playing
  }

  enqueue(itemId, samples) {
    const ctx = this.context;
    const buffer = ctx.createBuffer(1, samples.length, WIRE_RATE);
    buffer.copyToChannel(samples, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    if (itemId !== this.itemId) {
      this.itemId = itemId;
      this.itemHeard = 0;
    }
    source.itemId = itemId;
    source.startAt = Math.max(this.nextStart, ctx.currentTime + PLAYBACK_LEAD_S);
    source.onended = () => {
      this.sources.delete(source);
      if (source.itemId === this.itemId) this.itemHeard += buffer.duration;
      if (!this.playing) this.onIdle();
    };
    source.start(source.startAt);
    this.sources.add(source);
    this.nextStart = source.startAt + buffer.duration;
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** Stop now; returns {itemId, playedMs} of the item cut short, or null if nothing played. */
  stop() {
    if (!this.playing) return null;
    const now = this.context.currentTime;
    let heard = this.itemHeard;
    for (const source of this.sources) {
      if (source.itemId === this.itemId) {
        heard += Math.min(Math.max(now - source.startAt, 0), source.buffer.duration);
      }
      source.onended = null;
      source.stop();
    }
    this.sources.clear();
    this.nextStart = 0;
    const cut = { itemId: this.itemId, playedMs: Math.round(heard * 1000) };
    this.itemId = null;
    return cut;
  }
}

// --- transcript ------------------------------------------------------------------------------

const bubbles = new Map(); // item id -> element

function bubble(itemId, role) {
  let el = bubbles.get(itemId);
  if (!el) {
    el = document.createElement("div");
    el.className = `bubble ${role} live`;
    el.innerHTML = `<span class="who">${role === "user" ? "You" : "Assistant"}</span><p></p>`;
    ui.empty.hidden = true;
    ui.transcript.append(el);
    bubbles.set(itemId, el);
  }
  return el;
}

function setText(el, text, live) {
  el.querySelector("p").textContent = text;
  el.classList.toggle("live", live);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function tag(el, text) {
  if (el.querySelector(".tag")) return;
  const span = document.createElement("span");
  span.className = "tag";
  span.textContent = text;
  el.querySelector(".who").append(span);
}

// --- settings --------------------------------------------------------------------------------

function loadSettings() {
  const saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
  ui.instructions.value = saved.instructions || "";
  ui.voice.value = saved.voice || "";
  ui.silence.value = saved.silence || "";
  ui.apiKey.value = saved.apiKey || "";
  ui.transport.value = new URLSearchParams(location.search).get("transport") || saved.transport || "websocket";
}

function saveSettings() {
  localStorage.setItem(
    SETTINGS_KEY,
    JSON.stringify({
      instructions: ui.instructions.value,
      voice: ui.voice.value,
      silence: ui.silence.value,
      apiKey: ui.apiKey.value,
      transport: ui.transport.value,
    }),
  );
}

function sessionUpdate() {
  const input = { transcription: { model: "gpt-4o-mini-transcribe" } };
  const silence = parseInt(ui.silence.value, 10);
  if (silence >= 0) input.turn_detection = { type: "server_vad", silence_duration_ms: silence };
  const session = { type: "realtime", audio: { input } };
  if (ui.voice.value) session.audio.output = { voice: ui.voice.value };
  if (ui.instructions.value.trim()) session.instructions = ui.instructions.value.trim();
  return { type: "session.update", session };
}

// --- the call --------------------------------------------------------------------------------

let call = null;

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

function showLatency(ms) {
  stats.latenciesMs.push(ms);
  const sorted = [...stats.latenciesMs].sort((a, b) => a - b);
  ui.latencyLast.textContent = `${Math.round(ms)}`;
  const middle = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  ui.latencyMedian.textContent = `${Math.round(median)} ms`;
  ui.latencyCount.textContent = `${sorted.length}`;
}

async function openAudio() {
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  let context = new AudioContext({ sampleRate: WIRE_RATE, latencyHint: "interactive" });
  let source;
  try {
    source = context.createMediaStreamSource(media);
  } catch {
    // some browsers cannot feed a microphone into a context at another rate: use the
    // device's rate and let the worklet resample
    await context.close();
    context = new AudioContext({ latencyHint: "interactive" });
    source = context.createMediaStreamSource(media);
  }
  await context.audioWorklet.addModule("/static/capture-worklet.js");
  const capture = new AudioWorkletNode(context, "pcm16-capture", {
    processorOptions: { targetRate: WIRE_RATE },
  });
  const mute = context.createGain();
  mute.gain.value = 0; // keeps the worklet pulled by the graph without echoing the mic
  source.connect(capture).connect(mute).connect(context.destination);
  await context.resume();
  return { media, context, capture };
}

async function start() {
  if (!window.isSecureContext) {
    ui.hint.textContent = "The microphone needs https or localhost.";
    return;
  }
  saveSettings();
  setStatus("Connecting…", "busy");
  ui.talk.setAttribute("aria-pressed", "true");
  ui.talkLabel.textContent = "Stop";
  stats.transport = ui.transport.value;
  if (ui.transport.value === "webrtc") return startWebRtc();
  let audio;
  try {
    audio = await openAudio();
  } catch (error) {
    stop(`Microphone unavailable: ${error.message}`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const key = ui.apiKey.value.trim() || "none";
  let thisCall = null;
  const ws = new WebSocket(`${scheme}://${location.host}/v1/realtime?model=gpt-realtime`, [
    "realtime",
    `openai-insecure-api-key.${key}`,
  ]);
  const player = new Player(audio.context, () => {
    if (call === thisCall) setStatus("Listening", "live");
  });
  call = thisCall = { ws, ...audio, player, speechStoppedAt: null };
  ws.onopen = () => {
    stats.connected = true;
    setStatus("Listening", "live");
    ui.hint.textContent = "Speak; the assistant answers when you pause.";
    send(sessionUpdate());
  };
  ws.onmessage = (message) => {
    if (call === thisCall) handle(JSON.parse(message.data));
  };
  ws.onclose = (event) => {
    if (call === thisCall) stop(event.reason ? `Disconnected: ${event.reason}` : "Disconnected");
  };
  audio.capture.port.onmessage = ({ data }) => {
    ui.talk.style.setProperty("--level", Math.min(1, data.level * 8).toFixed(3));
    stats.peakLevel = Math.max(stats.peakLevel, data.level);
    if (ws.readyState === WebSocket.OPEN) {
      stats.sentMs += (data.pcm.byteLength / 2 / WIRE_RATE) * 1000;
      ws.send(
        JSON.stringify({
          type: "input_audio_buffer.append",
          audio: base64FromBytes(new Uint8Array(data.pcm)),
        }),
      );
    }
  };
}

/** WebRTC: the microphone as a track, the answer on a track, events on "oai-events". */
async function startWebRtc() {
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (error) {
    stop(`Microphone unavailable: ${error.message}`);
    return;
  }
  const pc = new RTCPeerConnection();
  media.getTracks().forEach((track) => pc.addTrack(track, media));
  const channel = pc.createDataChannel("oai-events");
  const speaker = new Audio();
  speaker.autoplay = true;
  const context = new AudioContext();
  const thisCall = { pc, channel, media, context, speaker, speechStoppedAt: null, location: null };
  thisCall.player = { playing: false, stop: () => null }; // the server owns playback here
  call = thisCall;
  pc.ontrack = (event) => {
    const stream = event.streams[0] || new MediaStream([event.track]);
    speaker.srcObject = stream;
    // measure what arrives, for the level meter and the browser test
    const analyser = context.createAnalyser();
    context.createMediaStreamSource(stream).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    const meter = () => {
      if (call !== thisCall) return;
      analyser.getFloatTimeDomainData(data);
      let peak = 0;
      for (const v of data) peak = Math.max(peak, Math.abs(v));
      stats.remoteAudioPeak = Math.max(stats.remoteAudioPeak, peak);
      requestAnimationFrame(meter);
    };
    meter();
  };
  channel.onopen = () => {
    stats.connected = true;
    setStatus("Listening", "live");
    ui.hint.textContent = "Speak; the assistant answers when you pause.";
    send(sessionUpdate());
  };
  channel.onmessage = (message) => {
    if (call === thisCall) handle(JSON.parse(message.data));
  };
  channel.onclose = () => {
    if (call === thisCall) stop("Disconnected");
  };
  pc.onconnectionstatechange = () => {
    if (call === thisCall && ["failed", "closed"].includes(pc.connectionState)) stop("Call ended");
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") resolve();
      });
      setTimeout(resolve, ICE_GATHERING_WAIT_MS);
    });
    const headers = { "Content-Type": "application/sdp" };
    if (ui.apiKey.value.trim()) headers.Authorization = `Bearer ${ui.apiKey.value.trim()}`;
    const response = await fetch("/v1/realtime/calls?model=gpt-realtime", {
      method: "POST",
      body: pc.localDescription.sdp,
      headers,
    });
    if (response.status !== 201) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    thisCall.location = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  } catch (error) {
    if (call === thisCall) stop(`Call failed: ${error.message}`);
  }
}

function stop(reason) {
  const ending = call;
  call = null;
  stats.connected = false;
  if (ending) {
    ending.player.stop();
    if (ending.ws) ending.ws.close();
    if (ending.pc) {
      if (ending.location) fetch(ending.location, { method: "DELETE" }).catch(() => {});
      ending.pc.close();
      ending.speaker.srcObject = null;
    }
    ending.media.getTracks().forEach((track) => track.stop());
    ending.context.close();
  }
  ui.talk.setAttribute("aria-pressed", "false");
  ui.talk.style.setProperty("--level", "0");
  ui.talkLabel.textContent = "Talk";
  setStatus("Not connected", "idle");
  ui.hint.textContent = reason || "Press Talk and speak.";
}

function send(event) {
  if (!call) return;
  if (call.ws && call.ws.readyState === WebSocket.OPEN) call.ws.send(JSON.stringify(event));
  if (call.channel && call.channel.readyState === "open") call.channel.send(JSON.stringify(event));
}

function handle(event) {
  stats.events++;
  switch (event.type) {
    case "session.updated":
      ui.applied.textContent = "applied";
      setTimeout(() => (ui.applied.textContent = ""), 1500);
      break;
    case "input_audio_buffer.speech_started": {
      setStatus("Hearing you", "hearing");
      bubble(event.item_id, "user");
      const cut = call.player.stop();
      if (cut) {
        // barge-in: the user talks over the reply; keep only what was heard
        stats.bargeIns++;
        tag(bubbles.get(cut.itemId) || bubble(cut.itemId, "assistant"), "interrupted");
        send({
          type: "conversation.item.truncate",
          item_id: cut.itemId,
          content_index: 0,
          audio_end_ms: cut.playedMs,
        });
      }
      break;
    }
    case "input_audio_buffer.speech_stopped":
      call.speechStoppedAt = performance.now();
      setStatus("Thinking", "busy");
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const el = bubble(event.item_id, "user");
      el.dataset.text = (el.dataset.text || "") + (event.delta || "");
      setText(el, el.dataset.text, true);
      break;
    }
    case "conversation.item.input_audio_transcription.completed":
      stats.userTranscripts++;
      setText(bubble(event.item_id, "user"), event.transcript.trim() || "…", false);
      break;
    case "response.output_audio.delta": {
      if (call.speechStoppedAt !== null) {
        showLatency(performance.now() - call.speechStoppedAt);
        call.speechStoppedAt = null;
      }
      const samples = floatsFromBase64Pcm16(event.delta);
      stats.audioDeltas++;
      stats.audioMs += (samples.length * 1000) / WIRE_RATE;
      call.player.enqueue(event.item_id, samples);
      setStatus("Speaking", "speaking");
      break;
    }
    case "output_audio_buffer.started":
      // WebRTC: the answer's audio started to play out on the track
      stats.outputBufferStarts++;
      if (call.speechStoppedAt !== null) {
        showLatency(performance.now() - call.speechStoppedAt);
        call.speechStoppedAt = null;
      }
      setStatus("Speaking", "speaking");
      break;
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      setStatus("Listening", "live");
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const el = bubble(event.item_id, "assistant");
      el.dataset.text = (el.dataset.text || "") + event.delta;
      setText(el, el.dataset.text, true);
      break;
    }
    case "response.output_audio_transcript.done":
    case "response.output_text.done":
      stats.assistantTranscripts++;
      setText(bubble(event.item_id, "assistant"), event.transcript ?? event.text, false);
      break;
    case "response.done":
      if (
        event.response.status === "completed" &&
        event.response.output.some((item) => item.type === "mcp_call")
      ) {
        // the session's MCP tools answered: ask for the spoken answer, as OpenAI's clients do
        send({ type: "response.create" });
      }
      if (event.response.status === "cancelled") {
        for (const item of event.response.output) tag(bubble(item.id, "assistant"), "interrupted");
      }
      if (!call.player.playing) setStatus("Listening", "live");
      break;
    case "error":
      stats.errors.push(event.error);
      ui.hint.textContent = `Server error: ${event.error.message}`;
      break;
  }
}

// --- wiring ----------------------------------------------------------------------------------

loadSettings();
let starting = false;
ui.talk.addEventListener("click", async () => {
  if (call) return stop();
  if (starting) return;
  starting = true;
  try {
    await start();
  } finally {
    starting = false;
  }
});
ui.settings.addEventListener("submit", (event) => {
  event.preventDefault();
  saveSettings();
  if (call) send(sessionUpdate());
  else ui.applied.textContent = "saved";
});
