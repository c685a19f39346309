// The operator's console (GET /console) in Debian's headless Chromium,
// driven by playwright-core, for crates/forkswitch/tests/console.rs.
//
//   node tests/browser/console.mjs CONSOLE_URL LOSER_ADDR SCREENSHOT_DIR
//
// Opens the console, says {"event":"ready"} once it is live (its event
// stream open and the lists read); the test then places a ring group call.
// The page must show the groupcall with its legs ringing, then their later
// states (one answered, one cancelled); a click on the groupcall draws its
// ladder, and the CANCEL to LOSER_ADDR (ip:port) carries the Reason header.
// Screenshots go to SCREENSHOT_DIR. One JSON object per line on stdout;
// {"event":"error"} and exit code 1 on any failure. Every wait is bounded.
import { chromium } from 'playwright-core';
import { bound, fail, finish, say, track } from './run.mjs';

const [url, loser, shots] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const STEP_MS = 20000;
const RUN_MS = 90000;

bound(RUN_MS);

/** Waits until `sel` matches at least `n` elements; on timeout, says what the page shows. */
async function waitFor(page, sel, what, n = 1) {
  try {
    await page.waitForFunction(([s, k]) => document.querySelectorAll(s).length >= k, [sel, n], { timeout: STEP_MS });
  } catch (e) {
    const now = await page.evaluate(() => ({
      status: document.querySelector('#status').dataset.state,
      error: document.querySelector('#error').textContent,
      legs: [...document.querySelectorAll('li.leg')].map((l) => `${l.dataset.role} ${l.dataset.state} ${l.dataset.reason}`),
      arrows: [...document.querySelectorAll('g.arrow')].map((g) => `${g.dataset.label} ${g.dataset.from}->${g.dataset.to}`),
    }));
    throw new Error(`${what}: ${n} x ${sel} not there in ${STEP_MS} ms; now ${JSON.stringify(now)}`);
  }
}

async function run(server) {
  const browser = await chromium.connect(server.wsEndpoint());
  const page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  page.on('pageerror', (e) => process.stderr.write(`[console pageerror] ${e}\n`));
  await page.goto(url);
  await waitFor(page, '#status[data-state="live"]', 'the console goes live');
  say({ event: 'ready' });
  // The call appears, both legs ringing.
  await waitFor(page, 'li.groupcall[data-depth="0"]', 'the groupcall appears');
  await waitFor(page, 'li.leg[data-role="leg"][data-state="ringing"]', 'both legs ringing', 2);
  await page.screenshot({ path: `${shots}/1-ringing.png`, fullPage: true });
  say({ event: 'ringing' });
  // Their states change: one answered, the other cancelled.
  await waitFor(page, 'li.leg[data-role="leg"][data-state="hangup"][data-reason="cancel"]', 'the loser cancelled');
  await waitFor(page, 'li.groupcall[data-depth="0"][data-answered="true"]', 'the groupcall answered');
  await waitFor(page, 'li.groupcall[data-depth="0"][data-status="hangup"]', 'the groupcall over');
  const legs = await page.$$eval('li.leg', (ls) => ls.map((l) => ({ role: l.dataset.role, state: l.dataset.state, reason: l.dataset.reason, text: l.textContent })));
  // Its ladder: the CANCEL to the loser, with the Reason header.
  await page.click('li.groupcall[data-depth="0"] > .gc-head');
  const cancel = `g.arrow[data-label="CANCEL"][data-to="${loser}"]`;
  await waitFor(page, cancel, 'the CANCEL on the loser\'s lane');
  await waitFor(page, `g.lane[data-addr="${loser}"]`, 'the loser\'s lane');
  await page.click(cancel);
  const text = await page.textContent('#message');
  if (!text.includes('Reason: SIP;cause=200;text="Call completed elsewhere"')) {
    throw new Error(`the CANCEL has no Reason header:\n${text}`);
  }
  await page.screenshot({ path: `${shots}/2-ladder-cancel.png`, fullPage: true });
  const arrows = await page.$$eval('g.arrow', (gs) => gs.map((g) => `${g.dataset.label} ${g.dataset.from}->${g.dataset.to}`));
  const lanes = await page.$$eval('g.lane', (gs) => gs.map((g) => `${g.dataset.name} ${g.dataset.addr}`));
  return { legs, arrows, lanes, cancel: text.split('\n').slice(0, 3) };
}

try {
  if (!url || !loser || !shots) throw new Error('usage: console.mjs CONSOLE_URL LOSER_ADDR SCREENSHOT_DIR');
  const server = track(await chromium.launchServer({
    executablePath: CHROMIUM,
    host: '127.0.0.1',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  }));
  say({ event: 'browser', pid: server.process().pid });
  const result = await run(server);
  await finish(0, { event: 'done', ...result });
} catch (e) {
  await fail(String(e && e.stack ? e.stack : e));
}
