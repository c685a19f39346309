"""A pjsip phone (PyPI pjsua2-python) for crates/forkswitch/tests/pjsip.rs.

    phone.py answer --user test12 --password S --server 127.0.0.1:5061 --transport tls --ca cert.pem
    phone.py call   --user test11 --password S --server 127.0.0.1:5061 --transport tls --ca cert.pem --dial 800
    phone.py ring   --user test13 --password S --server 127.0.0.1:5060 --transport udp

Registers `user@test` with digest over the transport (TLS: the server's
certificate verified against --ca). `answer` waits for one call, rings,
answers it (with --answer-when PATH: once that file exists, so that a test
can hold the answer until every phone of a fork is rung) and waits for the
far end to hang up; `ring` waits for one call,
rings and never answers (the call ends by CANCEL); `call` dials --dial,
waits for the answer and for --packets RTP packets from the far end, then hangs up (calls to
it get 486). The "incoming" line names the address the INVITE's SDP offers
("offer": "IP:port" of m=audio); the "done" line of a call that was
answered has the RTP packets received and "media": the phone's own RTP
address, the one it sends to (the far end's SDP) and the one RTP came from.
Prints one JSON
object per line ({"event": ...}); exits 0 when the call went as described,
1 otherwise. Every wait is bounded, and so is the whole run.
"""

import argparse
import gc
import json
import os
import sys
import time

import pjsua2 as pj

STEP_S = 20
RUN_S = 60


def say(**o):
    print(json.dumps(o), flush=True)


class Stderr(pj.LogWriter):
    """pjsip's log goes to stderr, keeping stdout for the JSON lines."""

    def write(self, entry):
        sys.stderr.write(entry.msg if entry.msg.endswith("\n") else entry.msg + "\n")


class Phone(pj.Account):
    def __init__(self, mode, holds_answer):
        super().__init__()
        self.mode = mode
        self.holds_answer = holds_answer
        self.reg_code = None
        self.calls = []

    def onRegState(self, prm):
        self.reg_code = prm.code
        say(event="reg_state", code=prm.code, reason=prm.reason)

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        self.calls.append(call)
        info = call.getInfo()
        say(event="incoming", remote=info.remoteUri, offer=offered_audio(prm.rdata.wholeMsg))
        if self.mode == "call":
            busy = pj.CallOpParam()
            busy.statusCode = 486
            call.answer(busy)
            return
        ring = pj.CallOpParam()
        ring.statusCode = 180
        call.answer(ring)
        if self.mode == "ring" or self.holds_answer:
            return
        ok = pj.CallOpParam()
        ok.statusCode = 200
        call.answer(ok)


class Call(pj.Call):
    def __init__(self, acc, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.state = None
        self.last_code = None

    def onCallState(self, prm):
        info = self.getInfo()
        self.state = info.state
        self.last_code = info.lastStatusCode
        say(event="call_state", state=info.stateText, code=info.lastStatusCode)

    def rtp_received(self):
        try:
            return self.getStreamStat(0).rtcp.rxStat.pkt
        except pj.Error:
            return 0

    def media(self):
        """Where its RTP goes and comes from, while the call is up."""
        try:
            info = self.getStreamInfo(0)
            transport = self.getMedTransportInfo(0)
        except pj.Error:
            return None
        return {
            "local": transport.localRtpName,
            "remote": info.remoteRtpAddress,
            "source": transport.srcRtpName,
        }


def offered_audio(msg):
    """ "IP:port" of the first m=audio in a SIP message's SDP (its own c=,
    else the session's), or None."""
    session, media, port, section = None, None, None, "session"
    for line in msg.splitlines():
        if line.startswith("m="):
            if port is not None:
                break
            section = "audio" if line.startswith("m=audio ") else "other"
            if section == "audio":
                port = line.split()[1]
        elif line.startswith("c=IN IP4 ") and section != "other":
            addr = line.split()[2]
            session, media = (addr, media) if section == "session" else (session, addr)
    addr = media or session
    return f"{addr}:{port}" if addr and port else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["answer", "ring", "call"])
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--domain", default="test")
    ap.add_argument("--server", required=True, help="host:port of the switch")
    ap.add_argument("--transport", choices=["udp", "tcp", "tls"], default="tls")
    ap.add_argument("--ca", help="CA file for TLS (the switch's certificate)")
    ap.add_argument("--dial")
    ap.add_argument("--answer-when", help="answer once this file exists")
    ap.add_argument("--packets", type=int, default=1, help="RTP packets the caller waits for")
    args = ap.parse_args()
    start = time.monotonic()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    writer = Stderr()
    cfg.logConfig.writer = writer
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4
    cfg.medConfig.noVad = True  # silence is sent, so RTP flows from the null device
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()

    kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP, "tls": pj.PJSIP_TRANSPORT_TLS}
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    if args.transport == "tls":
        tcfg.tlsConfig.CaListFile = args.ca or ""
        tcfg.tlsConfig.verifyServer = True
        tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    ep.transportCreate(kinds[args.transport], tcfg)
    ep.libStart()
    say(event="started", pjsip=ep.libVersion().full, transport=args.transport)

    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:{args.user}@{args.domain}"
    acfg.regConfig.registrarUri = f"sip:{args.server};transport={args.transport}"
    acfg.regConfig.timeoutSec = 300
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", args.user, 0, args.password))
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
    acc = Phone(args.mode, args.answer_when is not None)
    acc.create(acfg)

    def pump(until, what):
        deadline = time.monotonic() + STEP_S
        while not until():
            if time.monotonic() > deadline or time.monotonic() - start > RUN_S:
                raise TimeoutError(f"{what} not within {STEP_S} s")
            ep.libHandleEvents(20)

    ok = False
    try:
        pump(lambda: acc.reg_code is not None and acc.reg_code >= 200, "registration")
        if acc.reg_code != 200:
            raise RuntimeError(f"registration failed: {acc.reg_code}")
        say(event="registered", user=args.user)
        confirmed = pj.PJSIP_INV_STATE_CONFIRMED
        gone = pj.PJSIP_INV_STATE_DISCONNECTED
        if args.mode == "answer":
            pump(lambda: acc.calls, "an incoming call")
            call = acc.calls[0]
            if args.answer_when is not None:
                pump(lambda: os.path.exists(args.answer_when), f"{args.answer_when} to answer")
                answer = pj.CallOpParam()
                answer.statusCode = 200
                call.answer(answer)
            pump(lambda: call.state in (confirmed, gone), "the ACK")
            if call.state != confirmed:
                raise RuntimeError(f"the call ended before it was confirmed: {call.last_code}")
            say(event="answered")
            seen = {"rtp": 0, "media": None}

            def sample():
                # Counters and addresses go with the call: read them while it is up.
                if call.state == confirmed:
                    seen["rtp"] = max(seen["rtp"], call.rtp_received())
                    seen["media"] = call.media() or seen["media"]
                return call.state == gone

            pump(sample, "the caller's BYE")
            say(event="done", rtp_received=seen["rtp"], media=seen["media"])
        elif args.mode == "ring":
            pump(lambda: acc.calls, "an incoming call")
            call = acc.calls[0]
            pump(lambda: call.state == gone, "the CANCEL")
            say(event="done", code=call.last_code)
        else:
            call = Call(acc)
            host, _, port = args.server.rpartition(":")
            call.makeCall(f"sip:{args.dial}@{host}:{port};transport={args.transport}", pj.CallOpParam(True))
            pump(lambda: call.state in (confirmed, gone), "the answer")
            if call.state != confirmed:
                raise RuntimeError(f"the call was not answered: {call.last_code}")
            say(event="answered")
            pump(lambda: call.rtp_received() >= args.packets, f"{args.packets} RTP packets from the callee")
            rtp, media = call.rtp_received(), call.media()
            call.hangup(pj.CallOpParam())
            pump(lambda: call.state == gone, "the end of the call")
            say(event="done", rtp_received=rtp, media=media)
        ok = True
    except Exception as e:  # noqa: BLE001 - reported, then exit 1
        say(event="error", message=f"{type(e).__name__}: {e}")
    finally:
        # Calls and the account go before the library (their destructors
        # call into it).
        call = None
        acc.calls.clear()
        gc.collect()
        acc.shutdown()
        ep.libDestroy()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
