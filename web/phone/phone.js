// forkswitch browser phone: JsSIP registering over WS or WSS.
//
// Every state is in the DOM, for people and for tests:
//   #reg[data-state]   idle | connecting | registered | unregistered | failed | disconnected
//   #call[data-state]  idle | ringing | calling | answered | connected | ended
//                      | missed | answered-elsewhere | rejected | failed
//   #history li[data-state]  one entry per call state reached, newest first
// "answered" is the SIP answer (200 sent or received), "connected" the
// WebRTC media path (the peer connection's connectionState). A CANCEL with
// `Reason: SIP;cause=200` (RFC 3326: the call was completed elsewhere) ends
// in "answered-elsewhere", any other CANCEL in "missed".
//
// Query string: user, domain (default test), password, ws (default
// ws://<this host>:5066), autoregister=1, and ice=loopback, which keeps
// only 127.0.0.1 ICE candidates in the SDP (two browsers on one machine).
(function () {
  'use strict';

  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const loopbackOnly = query.get('ice') === 'loopback';
  const media = { mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } };

  let ua = null;
  let session = null;
  // The current call's last SDP each way (after any rewrite) and its
  // RTCPeerConnection, for tests.
  const sdp = { local: null, remote: null };
  window.forkswitchPhone = { sdp, pc: null };

  $('user').value = query.get('user') || '';
  $('domain').value = query.get('domain') || 'test';
  $('password').value = query.get('password') || '';
  $('ws').value = query.get('ws') || `ws://${location.hostname || '127.0.0.1'}:5066`;

  function setReg(state, text) {
    $('reg').dataset.state = state;
    $('reg').textContent = text || state;
  }

  function setCall(state, text) {
    $('call').dataset.state = state;
    $('call').textContent = state;
    $('peer').textContent = text;
    const li = document.createElement('li');
    li.dataset.state = state;
    li.textContent = `${new Date().toLocaleTimeString()} ${state}: ${text}`;
    $('history').prepend(li);
    const ringing = state === 'ringing';
    const live = ['ringing', 'calling', 'answered', 'connected'].includes(state);
    $('answer').hidden = !ringing;
    $('reject').hidden = !ringing;
    $('hangup').hidden = !live || ringing;
    $('dial').disabled = live;
  }

  /** Keeps only 127.0.0.1 candidates (ice=loopback). */
  function keepLoopback(text) {
    return text
      .split('\r\n')
      .filter((l) => !l.startsWith('a=candidate:') || l.split(' ')[4] === '127.0.0.1')
      .join('\r\n');
  }

  /** True when a CANCEL's Reason says the call was answered elsewhere. */
  function completedElsewhere(message) {
    const reason = (message && message.getHeader && message.getHeader('Reason')) || '';
    return /^\s*SIP\s*;(.*;)?\s*cause\s*=\s*200\b/i.test(reason);
  }

  function watchConnection(pc, who) {
    if (!pc || pc.forkswitchWatched) return;
    pc.forkswitchWatched = true;
    window.forkswitchPhone.pc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected' && session) setCall('connected', `media with ${who}`);
    });
    pc.addEventListener('track', (e) => {
      $('remote-audio').srcObject = e.streams[0] || new MediaStream([e.track]);
    });
  }

  function attach(s, incoming) {
    session = s;
    sdp.local = null;
    sdp.remote = null;
    const id = s.remote_identity;
    const who = (id && (id.display_name || (id.uri && id.uri.user))) || 'unknown';
    const ours = () => session === s;
    s.on('sdp', (e) => {
      if (loopbackOnly) e.sdp = keepLoopback(e.sdp);
      sdp[e.originator] = e.sdp;
    });
    s.on('peerconnection', (e) => watchConnection(e.peerconnection, who));
    s.on('accepted', () => {
      watchConnection(s.connection, who);
      if (ours()) setCall('answered', who);
    });
    s.on('ended', (e) => {
      if (!ours()) return;
      session = null;
      setCall('ended', `${who} (${e.cause})`);
    });
    s.on('failed', (e) => {
      if (!ours()) return;
      session = null;
      if (incoming && e.originator === 'remote' && e.cause === JsSIP.C.causes.CANCELED) {
        if (completedElsewhere(e.message)) setCall('answered-elsewhere', `${who}: answered elsewhere`);
        else setCall('missed', `missed call from ${who}`);
      } else if (incoming && e.originator === 'local' && e.cause === JsSIP.C.causes.REJECTED) {
        setCall('rejected', who);
      } else {
        setCall('failed', `${who} (${e.cause})`);
      }
    });
    watchConnection(s.connection, who);
    if (incoming) setCall('ringing', `call from ${who}`);
    else setCall('calling', who);
  }

  function register() {
    if (ua) ua.stop();
    const user = $('user').value.trim();
    const domain = $('domain').value.trim();
    setReg('connecting', `connecting to ${$('ws').value}`);
    try {
      ua = new JsSIP.UA({
        sockets: [new JsSIP.WebSocketInterface($('ws').value.trim())],
        uri: `sip:${user}@${domain}`,
        authorization_user: user,
        password: $('password').value,
        register: true,
      });
    } catch (e) {
      setReg('failed', `bad settings: ${e.message || e}`);
      return;
    }
    ua.on('registered', () => setReg('registered', `registered as ${user}@${domain}`));
    ua.on('unregistered', () => setReg('unregistered'));
    ua.on('registrationFailed', (e) => setReg('failed', `registration failed: ${e.cause}`));
    ua.on('disconnected', () => setReg('disconnected'));
    ua.on('newRTCSession', (e) => {
      if (e.originator === 'remote') {
        if (session) {
          e.session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
          return;
        }
        attach(e.session, true);
      }
    });
    ua.start();
  }

  $('account').addEventListener('submit', (e) => {
    e.preventDefault();
    register();
  });
  $('dialer').addEventListener('submit', (e) => {
    e.preventDefault();
    const number = $('number').value.trim();
    if (!ua || !number || session) return;
    try {
      attach(ua.call(number, media), false);
    } catch (err) {
      setCall('failed', `${number} (${err.message || err})`);
    }
  });
  $('answer').addEventListener('click', () => session && session.answer(media));
  $('reject').addEventListener('click', () => {
    if (session) session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
  });
  $('hangup').addEventListener('click', () => session && session.terminate());

  if (query.get('autoregister') === '1') register();
})();
