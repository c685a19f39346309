// Two browser phones (the /phone page, JsSIP) in Debian's headless Chromium,
// driven by playwright-core, for crates/forkswitch/tests/phone.rs.
//
//   node tests/browser/phones.mjs ring-group  HTTP_URL WS_URL WSS_URL CERT_PEM
//   node tests/browser/phones.mjs webrtc-call HTTP_URL WS_URL WSS_URL CERT_PEM
//
// The ring group scenario registers test13 over WSS; Chromium trusts the
// switch's certificate CERT_PEM by its public key
// (--ignore-certificate-errors-spki-list), and no other.
//
// Prints one JSON object per line: {"event":"browser","pid":N} first (so the
// caller can kill it), {"event":"ready"} once test12 and test13 are
// registered, {"event":"done",...} at the end; {"event":"error"} and exit
// code 1 on any failure. Every wait is bounded; the whole run is too.
import { chromium } from 'playwright-core';
import { bound, fail, finish, say, track } from './run.mjs';
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

const [scenario, http, ws, wss, certPem] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20000;
const RUN_MS = 90000;

let browser = null;
bound(RUN_MS);

/** Base64 SHA-256 of the certificate's SubjectPublicKeyInfo. */
function spki(pemFile) {
  const der = new X509Certificate(readFileSync(pemFile)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(der).digest('base64');
}

/**
 * Opens the phone page as `user` (password `<user>-secret`), registered
 * through the switch's WebSocket URL `url`.
 */
async function phone(user, extra = '', url = ws) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') process.stderr.write(`[${user} console] ${m.text()}\n`);
  });
  page.on('pageerror', (e) => process.stderr.write(`[${user} pageerror] ${e}\n`));
  const q = new URLSearchParams({ user, password: `${user}-secret`, ws: url, autoregister: '1' });
  await page.goto(`${http}/phone?${q}${extra}`);
  await reach(page, user, '#reg', 'registered');
  return page;
}

/** Waits until `sel`'s data-state is `state` (history entries, for calls). */
async function reach(page, user, sel, state) {
  const target = sel === '#history' ? `#history li[data-state="${state}"]` : `${sel}[data-state="${state}"]`;
  try {
    await page.waitForSelector(target, { state: 'attached', timeout: STEP_MS });
  } catch (e) {
    const now = await page.evaluate(() => ({
      reg: document.querySelector('#reg').textContent,
      call: document.querySelector('#call').dataset.state,
      history: [...document.querySelectorAll('#history li')].map((li) => li.textContent),
    }));
    throw new Error(`${user}: ${target} not reached in ${STEP_MS} ms; now ${JSON.stringify(now)}`);
  }
  say({ event: 'state', user, state });
}

const states = (page) =>
  page.evaluate(() => [...document.querySelectorAll('#history li')].map((li) => li.dataset.state));

/** test12 answers a ring group call (SIPp), test13 shows "answered elsewhere". */
async function ringGroup() {
  const p12 = await phone('test12');
  const p13 = await phone('test13', '', wss);
  say({ event: 'ready' });
  await reach(p12, 'test12', '#call', 'ringing');
  await reach(p13, 'test13', '#call', 'ringing');
  await p12.click('#answer');
  await reach(p12, 'test12', '#history', 'answered');
  await reach(p13, 'test13', '#call', 'answered-elsewhere');
  const s13 = await states(p13);
  if (s13.includes('missed')) throw new Error(`test13 shows a missed call: ${s13}`);
  const shown = await p13.textContent('#peer');
  await p12.click('#hangup');
  await reach(p12, 'test12', '#call', 'ended');
  return { test12: await states(p12), test13: s13, shown };
}

const fingerprint = (sdp) => (sdp || '').match(/a=fingerprint:\S+ (\S+)/)?.[1];
const ufrag = (sdp) => (sdp || '').match(/a=ice-ufrag:(\S+)/)?.[1];

/** The nominated candidate pair's addresses and the RTP packets received. */
const media = (page) =>
  page.evaluate(async () => {
    const stats = await window.forkswitchPhone.pc.getStats();
    const all = [...stats.values()];
    const pair = all.find((s) => s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded');
    const cand = (id) => {
      const c = stats.get(id) || {};
      return { address: c.address || '', port: c.port, type: c.candidateType };
    };
    const rtp = all.filter((s) => s.type === 'inbound-rtp').reduce((n, s) => n + (s.packetsReceived || 0), 0);
    return { local: pair && cand(pair.localCandidateId), remote: pair && cand(pair.remoteCandidateId), rtp };
  });

/** test12 calls test13 and gives up (missed), then calls again: WebRTC media connects on loopback. */
async function webrtcCall() {
  const p12 = await phone('test12', '&ice=loopback');
  const p13 = await phone('test13', '&ice=loopback');
  say({ event: 'ready' });
  // A call given up while it rings is a missed call (a CANCEL without
  // Reason cause=200).
  await p12.fill('#number', 'test13');
  await p12.click('#dial');
  await reach(p13, 'test13', '#call', 'ringing');
  await p12.click('#hangup');
  await reach(p13, 'test13', '#call', 'missed');
  await reach(p12, 'test12', '#call', 'failed');
  // Now one that is answered.
  await p12.click('#dial');
  await reach(p13, 'test13', '#call', 'ringing');
  await p13.click('#answer');
  await reach(p12, 'test12', '#history', 'answered');
  await reach(p12, 'test12', '#history', 'connected');
  await reach(p13, 'test13', '#history', 'connected');
  // What each page sent is what the other got, through the switch.
  const sdp12 = await p12.evaluate(() => window.forkswitchPhone.sdp);
  const sdp13 = await p13.evaluate(() => window.forkswitchPhone.sdp);
  for (const [what, a, b] of [
    ['offer', sdp12.local, sdp13.remote],
    ['answer', sdp13.local, sdp12.remote],
  ]) {
    if (!fingerprint(a) || fingerprint(a) !== fingerprint(b) || ufrag(a) !== ufrag(b)) {
      throw new Error(`the ${what} did not survive the switch:\n--- sent\n${a}\n--- received\n${b}`);
    }
  }
  // Audio (the fake device) flows over a loopback pair.
  let m12;
  let m13;
  const deadline = Date.now() + STEP_MS;
  for (;;) {
    m12 = await media(p12);
    m13 = await media(p13);
    if (m12.rtp > 0 && m13.rtp > 0) break;
    if (Date.now() > deadline) throw new Error(`no RTP: ${JSON.stringify({ m12, m13 })}`);
    await p12.waitForTimeout(200);
  }
  // Only 127.0.0.1 candidates were signalled, so each side sends to
  // 127.0.0.1 or answers a check that came from there. Chrome still
  // checks from every local socket, its 192.0.2.x one too: such a pair
  // stays on this machine (a local address), but is not 127.0.0.1 at both
  // ends; a peer-reflexive remote candidate shows no address.
  for (const m of [m12, m13]) {
    if (m.local.address !== '127.0.0.1' && m.remote.address !== '127.0.0.1') {
      throw new Error(`no loopback end: ${JSON.stringify(m)}`);
    }
  }
  await p12.click('#hangup');
  await reach(p12, 'test12', '#call', 'ended');
  await reach(p13, 'test13', '#call', 'ended');
  return { test12: m12, test13: m13, offer_bytes: sdp12.local.length, answer_bytes: sdp13.local.length };
}

const scenarios = { 'ring-group': ringGroup, 'webrtc-call': webrtcCall };

try {
  if (!scenarios[scenario] || !http || !ws || !wss || !certPem) {
    throw new Error(`usage: phones.mjs ${Object.keys(scenarios).join('|')} HTTP_URL WS_URL WSS_URL CERT_PEM`);
  }
  // A browser server, for its PID; playwright gives it a fresh
  // --user-data-dir (a new temporary profile).
  const server = track(await chromium.launchServer({
    executablePath: CHROMIUM,
    host: '127.0.0.1',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
      `--ignore-certificate-errors-spki-list=${spki(certPem)}`,
    ],
  }));
  say({ event: 'browser', pid: server.process().pid });
  browser = await chromium.connect(server.wsEndpoint());
  say({ event: 'connected', version: browser.version() });
  const result = await scenarios[scenario]();
  await finish(0, { event: 'done', ...result });
} catch (e) {
  await fail(String(e && e.stack ? e.stack : e));
}
