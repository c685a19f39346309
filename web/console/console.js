// The forkswitch console (GET /console?accesskey=KEY): the customer's
// groupcalls as trees, live from GET /v1.0/events (Server-Sent Events), and
// the SIP ladder of any groupcall or leg from its messages
// (GET /v1.0/groupcalls/{id}/messages, /v1.0/calls/{id}/messages).
// Vanilla JavaScript, no build step. States are data-* attributes
// (#status[data-state], li.leg[data-state][data-reason], g.arrow[data-label])
// so that tests can await them.
'use strict';
(() => {
  const NIL = '00000000-0000-0000-0000-000000000000';
  const SVG = 'http://www.w3.org/2000/svg';
  const LANE_W = 210;
  const ROW_H = 26;
  const TOP = 54;
  const key = new URLSearchParams(location.search).get('accesskey') || '';
  const groupcalls = new Map();
  const calls = new Map();
  let selected = null; // { kind: 'groupcall' | 'call', id }
  let messages = [];
  let chosen = -1;

  const $ = (sel) => document.querySelector(sel);
  const withKey = (path) => `${path}${path.includes('?') ? '&' : '?'}accesskey=${encodeURIComponent(key)}`;
  async function get(path) {
    const r = await fetch(withKey(path), { headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }
  const showError = (e) => { $('#error').textContent = String(e); };
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'data') Object.assign(e.dataset, v);
      else if (k === 'onclick') e.addEventListener('click', v);
      else e.setAttribute(k, v);
    }
    e.append(...children);
    return e;
  };
  const svg = (tag, attrs = {}, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- the trees -------------------------------------------------------

  async function loadLists() {
    const [g, c] = await Promise.all([
      get('/v1.0/groupcalls?page_size=50'),
      get('/v1.0/calls?page_size=100'),
    ]);
    for (const x of g.result) groupcalls.set(x.id, x);
    for (const x of c.result) calls.set(x.id, x);
    scheduleRender();
  }

  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    requestAnimationFrame(() => { renderPending = false; renderTree(); });
  }

  function legItem(id, caller) {
    const c = calls.get(id);
    const state = c ? c.status : 'dialing';
    const who = c ? (caller ? `${c.source.target} (caller)` : c.destination.target) : id;
    const reason = c && c.hangup_reason ? ` ${c.hangup_reason}` : '';
    const li = el('li', {
      class: `leg${selected && selected.kind === 'call' && selected.id === id ? ' selected' : ''}`,
      data: { callId: id, state, reason: c ? c.hangup_reason : '', role: caller ? 'caller' : 'leg' },
      onclick: (ev) => { ev.stopPropagation(); select('call', id); },
    }, el('span', { class: 'state' }, state), ` ${who}${reason}`);
    return li;
  }

  function groupcallItem(g, depth) {
    const isSel = selected && selected.kind === 'groupcall' && selected.id === g.id;
    const dests = g.destinations.map((d) => d.target).join(', ');
    const answered = g.answer_call_id !== NIL;
    const head = el('div', { class: 'gc-head', onclick: (ev) => { ev.stopPropagation(); select('groupcall', g.id); } },
      el('b', {}, depth ? 'group ' : `${g.source.target} → `), dests,
      el('span', { class: 'gc-status' }, ` ${g.ring_method || 'ring_all'}, ${g.status}${answered ? ', answered' : ''}`));
    const kids = el('ul');
    if (g.master_call_id !== NIL) kids.append(legItem(g.master_call_id, true));
    for (const id of g.call_ids) kids.append(legItem(id, false));
    for (const id of g.groupcall_ids) {
      const child = groupcalls.get(id);
      if (child && depth < 8) kids.append(groupcallItem(child, depth + 1));
    }
    return el('li', {
      class: `groupcall${isSel ? ' selected' : ''}`,
      data: { id: g.id, status: g.status, answered: String(answered), depth: String(depth) },
    }, head, kids);
  }

  function renderTree() {
    const roots = [...groupcalls.values()]
      .filter((g) => g.master_groupcall_id === NIL)
      .sort((a, b) => (a.tm_create < b.tm_create ? 1 : -1))
      .slice(0, 50);
    $('#tree').replaceChildren(...roots.map((g) => groupcallItem(g, 0)));
  }

  // ---- the ladder ------------------------------------------------------

  function label(text) {
    const first = text.split('\r\n', 1)[0] || text.split('\n', 1)[0];
    return first.startsWith('SIP/2.0 ') ? first.slice(8) : first.split(' ')[0];
  }

  /** Lanes: every address in order of appearance, named where a record tells. */
  function lanes(msgs) {
    const order = [];
    const names = new Map();
    const byCallId = new Map([...calls.values()].map((c) => [c.sip_call_id, c]));
    for (const m of msgs) {
      for (const a of [m.src, m.dst]) if (!order.includes(a)) order.push(a);
      const sw = m.direction === 'in' ? m.dst : m.src;
      const far = m.direction === 'in' ? m.src : m.dst;
      names.set(sw, 'forkswitch');
      const c = byCallId.get(m.call_id);
      if (c && !names.has(far)) names.set(far, c.direction === 'incoming' ? `caller ${c.source.target}` : c.destination.target);
    }
    // The switch in the second lane (callers left, legs right).
    const sw = order.find((a) => names.get(a) === 'forkswitch');
    if (sw && order.length > 1) {
      order.splice(order.indexOf(sw), 1);
      order.splice(1, 0, sw);
    }
    return { order, names };
  }

  function renderLadder() {
    const { order, names } = lanes(messages);
    const width = Math.max(order.length, 2) * LANE_W;
    const height = TOP + messages.length * ROW_H + 20;
    const root = svg('svg', { width, height, id: 'ladder-svg' });
    const defs = svg('defs');
    const marker = svg('marker', { id: 'head', markerWidth: 8, markerHeight: 8, refX: 8, refY: 4, orient: 'auto', markerUnits: 'userSpaceOnUse' });
    marker.append(svg('path', { d: 'M0,0 L8,4 L0,8 z', fill: '#555' }));
    defs.append(marker);
    root.append(defs);
    const x = (addr) => order.indexOf(addr) * LANE_W + LANE_W / 2;
    order.forEach((addr) => {
      const g = svg('g', { class: 'lane', 'data-addr': addr, 'data-name': names.get(addr) || '' });
      g.append(svg('text', { class: 'lane-name', x: x(addr), y: 16, 'text-anchor': 'middle' }, (names.get(addr) || '').slice(0, 30)));
      g.append(svg('text', { class: 'lane-addr', x: x(addr), y: 32, 'text-anchor': 'middle' }, addr));
      g.append(svg('line', { class: 'lane-line', x1: x(addr), y1: 40, x2: x(addr), y2: height }));
      root.append(g);
    });
    const t0 = messages.length ? Date.parse(messages[0].time.replace(' ', 'T') + 'Z') : 0;
    messages.forEach((m, i) => {
      const y = TOP + i * ROW_H + 10;
      const lbl = label(m.message);
      const response = /^\d{3}/.test(lbl);
      const kind = lbl === 'CANCEL' ? ' cancel' : response ? (Number(lbl.slice(0, 3)) >= 300 ? ' failure' : ' response') : '';
      const g = svg('g', {
        class: `arrow${kind}${i === chosen ? ' selected' : ''}`,
        'data-i': i, 'data-from': m.src, 'data-to': m.dst, 'data-label': lbl, 'data-call-id': m.call_id,
      });
      const x1 = x(m.src);
      const x2 = x(m.dst);
      g.append(svg('line', { x1, y1: y, x2: x2 + (x2 > x1 ? -2 : 2), y2: y, 'marker-end': 'url(#head)' }));
      g.append(svg('text', { class: 'label', x: (x1 + x2) / 2, y: y - 4, 'text-anchor': 'middle' }, lbl));
      const ms = Date.parse(m.time.replace(' ', 'T') + 'Z') - t0;
      g.append(svg('text', { class: 'time', x: 2, y: y + 4 }, `+${(ms / 1000).toFixed(3)}`));
      g.append(svg('rect', { x: Math.min(x1, x2), y: y - 16, width: Math.abs(x2 - x1) || 10, height: 20, fill: 'transparent' }));
      g.addEventListener('click', () => showMessage(i));
      root.append(g);
    });
    $('#ladder').replaceChildren(root);
  }

  function showMessage(i) {
    chosen = i;
    const m = messages[i];
    $('#message').textContent = `${m.time} ${m.direction} ${m.transport} ${m.src} -> ${m.dst}\n\n${m.message}`;
    $('#message').dataset.i = String(i);
    for (const g of document.querySelectorAll('g.arrow')) g.classList.toggle('selected', Number(g.dataset.i) === i);
  }

  async function loadLadder() {
    if (!selected) return;
    const path = selected.kind === 'groupcall'
      ? `/v1.0/groupcalls/${selected.id}/messages`
      : `/v1.0/calls/${selected.id}/messages`;
    const want = selected;
    const r = await get(path);
    if (want !== selected) return;
    messages = r.result;
    $('#ladder-title').textContent = `${selected.kind} ${selected.id}: ${messages.length} messages`;
    $('#ladder').dataset.messages = String(messages.length);
    renderLadder();
  }

  let ladderTimer = null;
  function scheduleLadder() {
    if (!selected || ladderTimer) return;
    ladderTimer = setTimeout(() => { ladderTimer = null; loadLadder().catch(showError); }, 250);
  }

  function select(kind, id) {
    selected = { kind, id };
    chosen = -1;
    $('#message').textContent = '';
    scheduleRender();
    loadLadder().catch(showError);
  }

  // ---- live ------------------------------------------------------------

  function connect() {
    const events = new EventSource(withKey('/v1.0/events'));
    events.addEventListener('open', () => {
      loadLists().then(() => { $('#status').dataset.state = 'live'; $('#status').textContent = 'live'; })
        .catch(showError);
    });
    events.addEventListener('error', () => {
      $('#status').dataset.state = 'reconnecting';
      $('#status').textContent = 'reconnecting';
    });
    events.addEventListener('groupcall', (e) => {
      const g = JSON.parse(e.data);
      groupcalls.set(g.id, g);
      scheduleRender();
      scheduleLadder();
    });
    events.addEventListener('call', (e) => {
      const c = JSON.parse(e.data);
      calls.set(c.id, c);
      scheduleRender();
      scheduleLadder();
    });
    events.addEventListener('resync', () => loadLists().catch(showError));
  }

  window.forkswitchConsole = { select, groupcalls, calls };
  connect();
})();
