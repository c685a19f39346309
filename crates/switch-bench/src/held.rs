//! Held calls: `n` calls set up through the switch alone, in virtual time,
//! and left up. Each is the side-by-side bench's fork3 call: a carrier
//! calls ring group 800 of the simulation's world, which rings phones 100,
//! 101 and 102 (registered at start); 100 answers at once, 101 and 102
//! ring and are CANCELed; the caller ACKs. Then the clock runs on until
//! every transaction has ended, and the switch is weighed: its live heap
//! bytes, as the difference its drop makes.

use crate::heap;
use crate::sim::sip;
use crate::sim::world::World;
use bytes::Bytes;
use records::{Binding, Timestamp};
use sip_message::{HeaderName, Message, Method, Peer, Transport};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use switch::{Datagram, Input, Now, Output, Switch, SwitchStats};

/// The wall clock of virtual time zero.
const WALL_BASE_US: i64 = 1_704_067_200_000_000;
/// Calls are dialed this far apart (a burst of 1,000 calls a second).
const DIAL_GAP: Duration = Duration::from_millis(1);
/// How long the clock runs on after the last call is up: past 64*T1 of
/// every transaction and every leg's cleanup.
const SETTLE: Duration = Duration::from_secs(300);
/// Phones 100, 101 and 102 (ring group 800's members); the first answers.
const PHONES: [(&str, u8); 3] = [("100", 10), ("101", 11), ("102", 12)];

/// The switch with `n` calls up: what it holds, weighed.
pub struct Weighed {
    /// Its live heap bytes.
    pub heap: isize,
    /// What it holds.
    pub stats: SwitchStats,
    /// Messages the scripted parties did not expect (should be 0).
    pub unexpected: u64,
}

fn phone_addr(octet: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, octet)), 5060)
}

fn caller_addr(n: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, 0, 3, 1 + (n / 50_000) as u8);
    SocketAddr::new(IpAddr::V4(ip), 10_000 + (n % 50_000) as u16)
}

/// The switch of the simulation's world, phones 100-102 bound.
fn switch(world: &World, start: Now) -> Switch {
    let (cfg, mut state) = world.switch_config();
    let expires_at = Timestamp::from_micros(WALL_BASE_US + 86_400_000_000);
    state.bindings = PHONES
        .iter()
        .map(|(ext, octet)| Binding {
            aor: format!("{ext}@{}", crate::sim::world::DOMAIN),
            contact: format!("sip:{ext}@{}", phone_addr(*octet)),
            instance: None,
            reg_id: None,
            q: 1000,
            expires_at,
            call_id: format!("bench-register-{ext}"),
            cseq: 1,
            transport: "UDP".into(),
            source: phone_addr(*octet),
            local: world.switch_addr,
            user_agent: String::new(),
            node_id: String::new(),
            conn: None,
            unreachable: false,
        })
        .collect();
    Switch::new(cfg, state, 1, start).expect("the bench world's switch")
}

/// The switch and the scripted parties around it, on a network without
/// delay or loss.
struct Script {
    switch: Switch,
    switch_addr: SocketAddr,
    base: Instant,
    /// Virtual time since `base`.
    elapsed: Duration,
    deadline: Instant,
    /// INVITEs ringing at 101 and 102, by Call-ID and phone, for the 487
    /// after the CANCEL.
    ringing: HashMap<(Bytes, SocketAddr), Message>,
    /// Datagrams on their way to the switch.
    wire: VecDeque<(SocketAddr, Bytes)>,
    unexpected: u64,
}

impl Script {
    fn now(&self) -> Now {
        let wall = Timestamp::from_micros(WALL_BASE_US + self.elapsed.as_micros() as i64);
        Now { at: self.base + self.elapsed, wall }
    }

    /// Hands `input` to the switch, then delivers what is on the wire.
    fn input(&mut self, input: Input) {
        self.handle(input);
        self.deliver();
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        self.switch.handle_input(now, input);
        loop {
            match self.switch.poll_output() {
                Output::Transmit(t) => self.answer(t.peer.remote, &t.message),
                Output::Timeout(at) => break self.deadline = at,
                _ => {}
            }
        }
    }

    /// Delivers datagrams to the switch, the parties answering what it
    /// sends, until the wire is quiet (no delay, no loss).
    fn deliver(&mut self) {
        while let Some((from, bytes)) = self.wire.pop_front() {
            let local = self.switch_addr;
            let peer = Peer { transport: Transport::Udp, remote: from, local, conn: None };
            self.handle(Input::Datagram(Datagram { peer, bytes }));
        }
    }

    fn send(&mut self, from: SocketAddr, m: Message) {
        self.wire.push_back((from, m.to_bytes()));
    }

    /// What the party at `to` says to `m` from the switch.
    fn answer(&mut self, to: SocketAddr, m: &Message) {
        let Some(method) = m.method().cloned() else { return self.caller_hears(to, m) };
        let tag = format!("p{}", to.ip());
        match method {
            Method::Invite if to == phone_addr(PHONES[0].1) => {
                let ok = Message::response_to(m, 200)
                    .to_tag(&tag)
                    .header(HeaderName::Contact, format!("<sip:{}@{to}>", PHONES[0].0))
                    .body("application/sdp", sip::sdp(to, 1))
                    .build();
                self.send(to, ok);
            }
            Method::Invite => {
                self.send(to, Message::response_to(m, 180).to_tag(&tag).build());
                self.ringing.insert((sip::hv(m, HeaderName::CallId), to), m.clone());
            }
            Method::Cancel => {
                self.send(to, Message::response_to(m, 200).to_tag(&tag).build());
                if let Some(invite) = self.ringing.remove(&(sip::hv(m, HeaderName::CallId), to)) {
                    self.send(to, Message::response_to(&invite, 487).to_tag(&tag).build());
                }
            }
            Method::Ack => {}
            _ => {
                self.unexpected += 1;
                self.send(to, Message::response_to(m, 200).build());
            }
        }
    }

    /// The caller's side: it ACKs the 200.
    fn caller_hears(&mut self, caller: SocketAddr, m: &Message) {
        match m.status() {
            Some(200) => {
                let fallback = Bytes::from(format!("sip:{}", self.switch_addr));
                let ack = Message::request(Method::Ack, sip::contact_uri(m, &fallback))
                    .header(HeaderName::Via, sip::via(caller, "z9hG4bKbenchack"))
                    .header(HeaderName::MaxForwards, "70")
                    .header(HeaderName::From, sip::hv(m, HeaderName::From))
                    .header(HeaderName::To, sip::hv(m, HeaderName::To))
                    .header(HeaderName::CallId, sip::hv(m, HeaderName::CallId))
                    .header(HeaderName::CSeq, "1 ACK")
                    .build();
                self.send(caller, ack);
            }
            Some(100..=199) => {}
            _ => self.unexpected += 1,
        }
    }

    fn dial(&mut self, n: usize) {
        let caller = caller_addr(n);
        let invite = Message::request(Method::Invite, format!("sip:800@{}", self.switch_addr))
            .header(HeaderName::Via, sip::via(caller, &format!("z9hG4bKbench{n}")))
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, format!("<sip:+1555{n:07}@10.0.3.254>;tag=c{n}"))
            .header(HeaderName::To, format!("<sip:800@{}>", crate::sim::world::DOMAIN))
            .header(HeaderName::CallId, format!("bench-{n}@{}", caller.ip()))
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, format!("<sip:+1555{n:07}@{caller}>"))
            .body("application/sdp", sip::sdp(caller, n as u64 + 2))
            .build();
        self.send(caller, invite);
        self.deliver();
    }

    /// Runs the switch's timers until `elapsed` reaches `until`.
    fn run_until(&mut self, until: Duration) {
        while self.deadline <= self.base + until {
            self.elapsed = self.elapsed.max(self.deadline - self.base);
            self.input(Input::Timeout);
        }
        self.elapsed = until;
    }
}

/// Sets up `n` calls, lets every transaction end, and weighs the switch.
pub fn weigh(n: usize) -> Weighed {
    let world = World::new();
    let base = Instant::now();
    let start = Now { at: base, wall: Timestamp::from_micros(WALL_BASE_US) };
    let mut s = Script {
        switch: switch(&world, start),
        switch_addr: world.switch_addr,
        base,
        elapsed: Duration::ZERO,
        deadline: base,
        ringing: HashMap::new(),
        wire: VecDeque::new(),
        unexpected: 0,
    };
    s.input(Input::Timeout);
    for i in 0..n {
        s.run_until(DIAL_GAP * i as u32);
        s.dial(i);
    }
    s.run_until(DIAL_GAP * n as u32 + SETTLE);
    let stats = s.switch.stats();
    let (unexpected, ringing) = (s.unexpected, std::mem::take(&mut s.ringing));
    drop(ringing);
    let with = heap::live();
    drop(s);
    Weighed { heap: with - heap::live(), stats, unexpected }
}
