// What the browser scripts (phones.mjs, console.mjs) share: one JSON object
// per line on stdout, a bounded whole run, and the browser server closed
// (then killed) at the end, whatever happened.
export const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

let server = null;

/** The browser server to close at the end. */
export function track(s) {
  server = s;
  return s;
}

/** Says `extra`, closes the browser (5 s at most), exits with `code`. */
export async function finish(code, extra) {
  if (extra) say(extra);
  const closing = server ? server.close().catch(() => {}) : Promise.resolve();
  await Promise.race([closing, new Promise((r) => setTimeout(r, 5000))]);
  if (server) server.kill().catch(() => {});
  process.exit(code);
}

/** An `error` event, exit code 1. */
export const fail = (message) => finish(1, { event: 'error', message });

/** Fails the run after `ms`, or on SIGTERM. */
export function bound(ms) {
  setTimeout(() => fail(`the whole run took more than ${ms} ms`), ms).unref();
  process.on('SIGTERM', () => fail('SIGTERM'));
}
