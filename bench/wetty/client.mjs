// The wetty side of the terminal benchmark: wetty speaks socket.io ('data'
// out, 'input' in, 'commit' acknowledging what the client consumed, as its
// own browser client does for flow control), so its client is socket.io's.
// Prints one JSON result line like `loadgen term`.
//
//   node client.mjs URL throughput RUN
//   node client.mjs URL echo RUN KEYS
import { io } from 'socket.io-client';

const [url, mode, run, keysArg] = process.argv.slice(2);
const keys = Number(keysArg ?? 2000);
const cpu0 = process.cpuUsage();
const socket = io(url, { path: '/socket.io', transports: ['websocket'], reconnection: false });

function done(result) {
  const cpu = process.cpuUsage(cpu0);
  result.bench = `term-${mode}`;
  result.system = 'wetty';
  result.run = Number(run);
  result.client_cpu_secs = (cpu.user + cpu.system) / 1e6;
  console.log(JSON.stringify(result));
  socket.close();
  process.exit(0);
}

setTimeout(() => {
  console.error('wetty client: no result within 120 s');
  process.exit(1);
}, 120_000);

if (mode === 'throughput') {
  const t0 = process.hrtime.bigint();
  let bytes = 0;
  let frames = 0;
  socket.on('data', (d) => {
    const n = Buffer.byteLength(d, 'utf8');
    bytes += n;
    frames += 1;
    socket.emit('commit', d.length);
  });
  socket.on('logout', () => {
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    done({ bytes, frames, secs, mb_per_s: bytes / secs / 1e6 });
  });
} else {
  const rtts = [];
  let waitingFor = null;
  let t0 = 0n;
  let i = 0;
  const letters = ['a', 'b', 'c', 'd'];
  const next = () => {
    if (i === keys) {
      rtts.sort((a, b) => a - b);
      const pct = (q) => rtts[Math.min(rtts.length, Math.max(1, Math.ceil(q * rtts.length))) - 1];
      done({ keys, p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: rtts[rtts.length - 1] });
      return;
    }
    waitingFor = letters[i % letters.length];
    i += 1;
    t0 = process.hrtime.bigint();
    socket.emit('input', waitingFor);
  };
  let warm = false;
  socket.on('data', (d) => {
    socket.emit('commit', d.length);
    if (!warm) {
      if (d.includes('z')) {
        warm = true;
        next();
      }
      return;
    }
    if (waitingFor && d.includes(waitingFor)) {
      rtts.push(Number(process.hrtime.bigint() - t0) / 1e6);
      waitingFor = null;
      next();
    }
  });
  socket.on('login', () => {
    // Let `stty raw -echo` take effect, then warm up with one key.
    setTimeout(() => socket.emit('input', 'z'), 700);
  });
}
