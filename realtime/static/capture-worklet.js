// Microphone capture: float samples at the AudioContext's rate in, 20 ms frames of 24 kHz
// PCM16 out (posted to the page with the frame's RMS level). Resamples only when the context
// could not run at 24 kHz itself: a box filter against aliasing, then linear interpolation.

const FRAME_MS = 20;

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.targetRate = options.processorOptions.targetRate;
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.taps = Math.max(1, Math.round(this.step)); // box filter length when downsampling
    this.history = new Float32Array(this.taps); // last input samples, for the filter
    this.historyIndex = 0;
    this.historySum = 0;
    this.previous = 0; // the last filtered sample of the previous block
    this.position = 0; // of the next output sample, in input samples from this block's start
    this.frameLength = (this.targetRate * FRAME_MS) / 1000;
    this.frame = new Int16Array(this.frameLength);
    this.filled = 0;
    this.energy = 0;
  }

  push(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.energy += clipped * clipped;
    if (this.filled === this.frameLength) {
      const level = Math.sqrt(this.energy / this.filled);
      // the buffer is handed over (not copied), which leaves this.frame empty: start a new one
      this.port.postMessage({ pcm: this.frame.buffer, level }, [this.frame.buffer]);
      this.frame = new Int16Array(this.frameLength);
      this.filled = 0;
      this.energy = 0;
    }
  }

  filter(input) {
    if (this.taps === 1) return input;
    const out = new Float32Array(input.length);
    for (let i = 0; i < input.length; i++) {
      this.historySum += input[i] - this.history[this.historyIndex];
      this.history[this.historyIndex] = input[i];
      this.historyIndex = (this.historyIndex + 1) % this.taps;
      out[i] = this.historySum / this.taps;
    }
    return out;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    if (this.step === 1) {
      for (let i = 0; i < channel.length; i++) this.push(channel[i]);
      return true;
    }
    const input = this.filter(channel);
    const last = input.length - 1;
    // index -1 is the previous block's last sample, so interpolation spans block edges
    let t = this.position;
    for (; t <= last; t += this.step) {
      const i = Math.floor(t);
      const a = i < 0 ? this.previous : input[i];
      const f = t - i;
      this.push(f === 0 ? a : a + (input[i + 1] - a) * f);
    }
    this.position = t - input.length;
    this.previous = input[last];
    return true;
  }
}

registerProcessor("pcm16-capture", Pcm16Capture);
