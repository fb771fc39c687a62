//! The VRRP state machine of one virtual router: RFC 3768 §6.4 (v2) and RFC 5798 §6.4 (v3),
//! plus keepalived's FAULT state for failed tracking.
//!
//! Pure: inputs are events with the time they happen at (`now`), outputs are actions for the
//! runtime (send, addresses, gratuitous ARP, transitions). Timers are deadlines kept here and
//! read with `next_deadline`; the runtime calls `on_timers(now)` when it is reached, so tests
//! drive it on a made-up clock.

use std::{cmp::Ordering, net::IpAddr, time::Duration, time::Instant};

use super::packet::Version;

/// The states of RFC 5798 §6.4, plus keepalived's FAULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A tracked interface is down or a tracked script failed (weight 0): keepalived's FAULT.
    Fault,
}

impl State {
    /// As keepalived names states (logs, notify scripts, `lvs-agent status`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "INIT",
            Self::Backup => "BACKUP",
            Self::Master => "MASTER",
            Self::Fault => "FAULT",
        }
    }

    /// The value of the state gauge (keepalived's SNMP numbering: init 0, backup 1, master 2,
    /// fault 3).
    #[must_use]
    pub fn gauge(self) -> i64 {
        match self {
            Self::Initialize => 0,
            Self::Backup => 1,
            Self::Master => 2,
            Self::Fault => 3,
        }
    }
}

/// What a virtual router is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub version: Version,
    /// Configured priority, 1-255 (255: the address owner, RFC 5798 §5.2.4).
    pub priority: u8,
    /// Advertisement_Interval. v2 sends it in whole seconds, v3 in centiseconds.
    pub advert_int: Duration,
    /// Preempt_Mode (`nopreempt` clears it).
    pub preempt: bool,
    /// keepalived's `preempt_delay`: a backup waits this long after first seeing a lower
    /// priority master before it lets its down timer take over.
    pub preempt_delay: Duration,
    /// Our primary address on the interface: breaks priority ties (RFC 5798 §6.4.3).
    pub primary: IpAddr,
    /// RFC 9568 §6.4.3: a master answers a lower priority advert with its own at once
    /// (keepalived's default; `lower_prio_no_advert` turns it off).
    pub lower_prio_advert: bool,
    /// Gratuitous ARPs on becoming master, repeated after `garp_master_delay`, and every
    /// `garp_master_refresh` while master (keepalived's defaults: 5, 5 s, 5, off).
    pub garp_repeat: u32,
    pub garp_delay: Duration,
    pub garp_refresh: Option<Duration>,
    pub garp_refresh_repeat: u32,
    /// keepalived's `down_timer_adverts`: the adverts a backup misses before it takes over
    /// (the RFCs' 3; keepalived allows 1-100, non-standard when changed).
    pub down_adverts: u32,
}

impl Params {
    /// keepalived's defaults for everything but version, priority, interval and address.
    #[must_use]
    pub fn new(version: Version, priority: u8, advert_int: Duration, primary: IpAddr) -> Self {
        Self {
            version,
            priority,
            advert_int,
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary,
            lower_prio_advert: true,
            garp_repeat: 5,
            garp_delay: Duration::from_secs(5),
            garp_refresh: None,
            garp_refresh_repeat: 1,
            down_adverts: 3,
        }
    }
}

/// What happens to a virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Startup,
    Shutdown,
    /// A validated advertisement (`packet::verify`). `interval` is Max Adver Int in the
    /// version's unit (v2: seconds, v3: centiseconds).
    Advert {
        priority: u8,
        interval: u16,
        src: IpAddr,
    },
    /// The effective priority after tracking weights (1-254; 255 never changes).
    Priority(u8),
    /// Tracking says the router cannot serve (interface down, script failed) or can again.
    Fault(bool),
    /// vrrp_sync_group (keepalived): another member became master; a backup follows.
    SyncMaster,
    /// vrrp_sync_group: another member left master for backup; a master follows.
    SyncBackup,
}

/// What the runtime is to do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    SendAdvert {
        priority: u8,
    },
    AddVips,
    RemoveVips,
    /// `count` gratuitous ARPs / unsolicited neighbour advertisements per VIP.
    Garp {
        count: u32,
    },
    Transition {
        from: State,
        to: State,
    },
}

#[derive(Debug, Clone)]
pub struct Machine {
    params: Params,
    state: State,
    /// Priority in force (tracking weights applied).
    priority: u8,
    /// Master_Adver_Interval (RFC 5798 §6.1): learnt from the master's adverts in v3.
    master_adver_int: Duration,
    master_down_at: Option<Instant>,
    adver_at: Option<Instant>,
    garp_at: Option<(Instant, u32)>,
    /// When a lower priority master was first seen under `preempt_delay`.
    preempt_at: Option<Instant>,
    /// A backup hears a master it defers to until then (its last advert + Master_Down_Interval).
    heard_until: Option<Instant>,
    faulted: bool,
    transitions: u64,
}

impl Machine {
    #[must_use]
    pub fn new(params: Params) -> Self {
        Self {
            priority: params.priority,
            master_adver_int: params.advert_int,
            params,
            state: State::Initialize,
            master_down_at: None,
            adver_at: None,
            garp_at: None,
            preempt_at: None,
            heard_until: None,
            faulted: false,
            transitions: 0,
        }
    }

    #[must_use]
    pub fn state(&self) -> State {
        self.state
    }

    #[must_use]
    pub fn priority(&self) -> u8 {
        self.priority
    }

    #[must_use]
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    #[must_use]
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Master_Adver_Interval in force (the master's, learnt in v3).
    #[must_use]
    pub fn master_adver_int(&self) -> Duration {
        self.master_adver_int
    }

    /// Skew_Time. RFC 3768 §6.1: `(256 - Priority) / 256` seconds. RFC 5798 §6.1:
    /// `((256 - priority) * Master_Adver_Interval) / 256`, kept to the nanosecond (as
    /// keepalived keeps it to the microsecond) rather than truncated to centiseconds.
    #[must_use]
    pub fn skew_time(&self) -> Duration {
        let weight = 256 - u128::from(self.priority);
        let base = match self.params.version {
            Version::V2 => 1_000_000_000u128,
            Version::V3 => self.master_adver_int.as_nanos(),
        };
        Duration::from_nanos((weight * base / 256) as u64)
    }

    /// Master_Down_Interval: `3 * Advertisement_Interval + Skew_Time` (RFC 3768 §6.1),
    /// `3 * Master_Adver_Interval + Skew_Time` (RFC 5798 §6.1); 3 is keepalived's
    /// `down_timer_adverts`.
    #[must_use]
    pub fn master_down_interval(&self) -> Duration {
        self.params.down_adverts.clamp(1, 100) * self.master_adver_int + self.skew_time()
    }

    /// A backup that hears a live master it defers to (keepalived does not let a sync group
    /// member take over while another member is in that case).
    #[must_use]
    pub fn hears_master(&self, now: Instant) -> bool {
        self.state == State::Backup && self.heard_until.is_some_and(|t| now < t)
    }

    /// The Master_Down_Timer has expired (`on_timers(now)` would take over).
    #[must_use]
    pub fn down_timer_due(&self, now: Instant) -> bool {
        self.state == State::Backup && self.master_down_at.is_some_and(|t| t <= now)
    }

    /// Restarts the Master_Down_Timer instead of taking over (a sync group member held back).
    pub fn defer_takeover(&mut self, now: Instant) {
        if self.state == State::Backup {
            self.master_down_at = Some(now + self.master_down_interval());
        }
    }

    /// The earliest timer deadline, if any runs.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        [self.master_down_at, self.adver_at, self.garp_at.map(|g| g.0)].into_iter().flatten().min()
    }

    /// Fires every timer due at `now`.
    pub fn on_timers(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        // RFC 5798 §6.4.2: "If the Master_Down_Timer fires" -> Master.
        if self.master_down_at.is_some_and(|t| t <= now) {
            self.master_down_at = None;
            if self.state == State::Backup {
                self.become_master(now, &mut out);
            }
        }
        // §6.4.3: "If the Adver_Timer fires": send an advert and reset the timer.
        if self.adver_at.is_some_and(|t| t <= now) && self.state == State::Master {
            out.push(Action::SendAdvert { priority: self.priority });
            self.adver_at = Some(now + self.params.advert_int);
        }
        if let Some((t, count)) = self.garp_at
            && t <= now
        {
            self.garp_at = None;
            if self.state == State::Master {
                out.push(Action::Garp { count });
                if let Some(every) = self.params.garp_refresh {
                    self.garp_at = Some((now + every, self.params.garp_refresh_repeat));
                }
            }
        }
        out
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Startup => {
                if self.state == State::Initialize {
                    if self.faulted {
                        self.go(State::Fault, &mut out);
                    } else {
                        self.start(now, &mut out);
                    }
                }
            }
            Input::Shutdown => {
                // §6.4.3 "If a Shutdown event is received": cancel the Adver_Timer, send an
                // advert with priority 0, -> Initialize. keepalived also removes the VIPs.
                if self.state == State::Master {
                    out.push(Action::SendAdvert { priority: 0 });
                    out.push(Action::RemoveVips);
                }
                self.stop_timers();
                if self.state != State::Initialize {
                    self.go(State::Initialize, &mut out);
                }
            }
            Input::Advert { priority, interval, src } => self.on_advert(priority, interval, src, now, &mut out),
            Input::Priority(p) => {
                // The owner's 255 is not changed by tracking (keepalived).
                if self.params.priority != 255 {
                    self.priority = p.clamp(1, 254);
                }
            }
            Input::Fault(true) => {
                self.faulted = true;
                match self.state {
                    // keepalived: a master going to FAULT gives the VIPs up at once with a
                    // priority 0 advert, so the backup takes over after Skew_Time.
                    State::Master => {
                        out.push(Action::SendAdvert { priority: 0 });
                        out.push(Action::RemoveVips);
                        self.stop_timers();
                        self.go(State::Fault, &mut out);
                    }
                    State::Backup => {
                        self.stop_timers();
                        self.go(State::Fault, &mut out);
                    }
                    State::Fault | State::Initialize => {}
                }
            }
            Input::Fault(false) => {
                self.faulted = false;
                if self.state == State::Fault {
                    self.start(now, &mut out);
                }
            }
            Input::SyncMaster => {
                if self.state == State::Backup {
                    self.become_master(now, &mut out);
                }
            }
            Input::SyncBackup => {
                if self.state == State::Master {
                    self.stop_timers();
                    self.master_down_at = Some(now + self.master_down_interval());
                    out.push(Action::RemoveVips);
                    self.go(State::Backup, &mut out);
                }
            }
        }
        out
    }

    /// A reload's new settings for a router that goes on (keepalived's reload keeps its
    /// state): no transition and no advert here. The configured priority replaces the one in
    /// force (the runtime re-applies tracking weights after); a master advertises at the new
    /// interval from its next advert on, a v2 backup times the master with it (RFC 3768 §6.1:
    /// both ends use the same interval), a v3 backup keeps the interval it learnt (RFC 5798
    /// §6.4.2). A backup whose priority rises above its master's discards that master's next
    /// advert when preempting (§6.4.2) and takes over when its down timer fires.
    pub fn reconfigure(&mut self, params: Params, now: Instant) {
        let old = std::mem::replace(&mut self.params, params);
        if self.params.priority != old.priority {
            self.priority = self.params.priority;
        }
        if !self.params.preempt || self.params.preempt_delay != old.preempt_delay {
            self.preempt_at = None;
        }
        if self.params.advert_int != old.advert_int {
            match self.state {
                State::Master => {
                    self.master_adver_int = self.params.advert_int;
                    self.adver_at = self.adver_at.map(|t| t.min(now + self.params.advert_int));
                }
                _ if self.params.version == Version::V2 => self.master_adver_int = self.params.advert_int,
                _ => {}
            }
        }
        if self.state == State::Master && self.params.garp_refresh != old.garp_refresh {
            self.garp_at = self.params.garp_refresh.map(|every| (now + every, self.params.garp_refresh_repeat));
        }
    }

    /// §6.4.1 Initialize: the owner becomes master at once, others backup.
    fn start(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.priority == 255 {
            self.become_master(now, out);
        } else {
            self.master_adver_int = self.params.advert_int;
            self.master_down_at = Some(now + self.master_down_interval());
            self.go(State::Backup, out);
        }
    }

    fn on_advert(&mut self, priority: u8, interval: u16, src: IpAddr, now: Instant, out: &mut Vec<Action>) {
        match self.state {
            State::Backup => {
                // §6.4.2: priority 0 -> Master_Down_Timer := Skew_Time.
                if priority == 0 {
                    self.master_down_at = Some(now + self.skew_time());
                    self.heard_until = None;
                    return;
                }
                let lower = priority < self.priority;
                if !self.params.preempt || !lower {
                    // v3 learns the master's interval (§6.4.2); v2 intervals are equal
                    // (checked on receipt, RFC 3768 §7.1).
                    if self.params.version == Version::V3 {
                        self.master_adver_int = Duration::from_millis(u64::from(interval) * 10);
                    }
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.heard_until = self.master_down_at;
                    self.preempt_at = None;
                    return;
                }
                // Preempting: a lower priority master. With preempt_delay (keepalived), keep
                // following it until the delay since we first saw it has passed.
                if !self.params.preempt_delay.is_zero() {
                    let since = *self.preempt_at.get_or_insert(now);
                    if now < since + self.params.preempt_delay {
                        self.master_down_at = Some(now + self.master_down_interval());
                    }
                }
                // Otherwise discard it: the down timer expires and we take over.
            }
            State::Master => {
                if priority == 0 {
                    // §6.4.3: send an advert at once, reset the Adver_Timer.
                    out.push(Action::SendAdvert { priority: self.priority });
                    self.adver_at = Some(now + self.params.advert_int);
                    return;
                }
                let ours = (self.priority, self.params.primary);
                let theirs = (priority, src);
                if theirs.0 > ours.0 || (theirs.0 == ours.0 && addr_cmp(theirs.1, ours.1) == Ordering::Greater) {
                    // §6.4.3: a higher priority (or equal with a higher primary address):
                    // cancel the Adver_Timer, learn the interval (v3), -> Backup.
                    self.adver_at = None;
                    self.garp_at = None;
                    if self.params.version == Version::V3 {
                        self.master_adver_int = Duration::from_millis(u64::from(interval) * 10);
                    }
                    self.master_down_at = Some(now + self.master_down_interval());
                    self.heard_until = self.master_down_at;
                    out.push(Action::RemoveVips);
                    self.go(State::Backup, out);
                } else if self.params.lower_prio_advert {
                    // RFC 9568 §6.4.3: answer a lower priority master at once.
                    out.push(Action::SendAdvert { priority: self.priority });
                    self.adver_at = Some(now + self.params.advert_int);
                }
            }
            State::Initialize | State::Fault => {}
        }
    }

    /// §6.4.2 "If the Master_Down_Timer fires": send an advert, broadcast gratuitous ARPs,
    /// start the Adver_Timer, -> Master. The VIPs are added first so that the ARP replies
    /// that follow the gratuitous ones are ours.
    fn become_master(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.master_down_at = None;
        self.preempt_at = None;
        self.heard_until = None;
        out.push(Action::AddVips);
        out.push(Action::SendAdvert { priority: self.priority });
        out.push(Action::Garp { count: self.params.garp_repeat });
        self.adver_at = Some(now + self.params.advert_int);
        self.garp_at =
            (!self.params.garp_delay.is_zero()).then_some((now + self.params.garp_delay, self.params.garp_repeat));
        self.master_adver_int = self.params.advert_int;
        self.go(State::Master, out);
    }

    fn stop_timers(&mut self) {
        self.heard_until = None;
        self.master_down_at = None;
        self.adver_at = None;
        self.garp_at = None;
        self.preempt_at = None;
    }

    fn go(&mut self, to: State, out: &mut Vec<Action>) {
        let from = self.state;
        if from != to {
            self.state = to;
            self.transitions += 1;
            out.push(Action::Transition { from, to });
        }
    }
}

/// Orders primary addresses as RFC 5798 §6.4.3 compares them: as unsigned integers in
/// network byte order.
fn addr_cmp(a: IpAddr, b: IpAddr) -> Ordering {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets().cmp(&b.octets()),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.octets().cmp(&b.octets()),
        (IpAddr::V4(_), IpAddr::V6(_)) => Ordering::Less,
        (IpAddr::V6(_), IpAddr::V4(_)) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    const PEER: &str = "10.0.0.2";
    const US: &str = "10.0.0.1";

    fn machine(version: Version, priority: u8, advert_int: Duration) -> Machine {
        Machine::new(Params::new(version, priority, advert_int, US.parse().unwrap()))
    }

    fn advert(priority: u8, interval: u16) -> Input {
        Input::Advert { priority, interval, src: PEER.parse().unwrap() }
    }

    fn states(actions: &[Action]) -> Vec<State> {
        actions.iter().filter_map(|a| if let Action::Transition { to, .. } = a { Some(*to) } else { None }).collect()
    }

    /// The timer table of RFC 3768 §6.1 / RFC 5798 §6.1 (values of the facts sheet, §6).
    #[test]
    fn timer_table_of_both_versions() {
        let cases = [
            // version, priority, interval, Skew_Time, Master_Down_Interval
            (Version::V2, 100, ms(1000), us(609_375), us(3_609_375)),
            (Version::V2, 254, ms(1000), us(7_812), us(3_007_812)),
            (Version::V2, 1, ms(1000), us(996_093), us(3_996_093)),
            // v2 skew does not scale with the interval (RFC 3768 §6.1).
            (Version::V2, 100, ms(3000), us(609_375), us(9_609_375)),
            (Version::V3, 100, ms(1000), us(609_375), us(3_609_375)),
            (Version::V3, 100, ms(100), us(60_937), us(360_937)),
            (Version::V3, 100, ms(10), us(6_093), us(36_093)),
            (Version::V3, 200, ms(50), us(10_937), us(160_937)),
        ];
        for (v, p, int, skew, down) in cases {
            let m = machine(v, p, int);
            // Microsecond precision, as keepalived.
            let trunc = |d: Duration| us(d.as_micros() as u64);
            assert_eq!(trunc(m.skew_time()), skew, "{v:?} prio {p} int {int:?}");
            assert_eq!(trunc(m.master_down_interval()), down, "{v:?} prio {p} int {int:?}");
        }
    }

    #[test]
    fn down_timer_adverts_changes_the_multiplier() {
        let mut p = Params::new(Version::V3, 100, ms(100), US.parse().unwrap());
        p.down_adverts = 2;
        assert_eq!(Machine::new(p).master_down_interval(), ms(200) + Duration::from_nanos(60_937_500));
    }

    #[test]
    fn backup_takes_over_after_master_down_interval_and_not_before() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 100, ms(1000));
        assert_eq!(states(&m.handle(Input::Startup, t0)), [State::Backup]);
        let down = m.master_down_interval();
        assert_eq!(m.next_deadline(), Some(t0 + down));
        // Adverts from a higher priority master keep resetting the down timer.
        let t1 = t0 + ms(1000);
        assert!(m.handle(advert(150, 1), t1).is_empty());
        assert_eq!(m.next_deadline(), Some(t1 + down));
        assert!(m.on_timers(t1 + down - us(1)).is_empty());
        let out = m.on_timers(t1 + down);
        assert_eq!(
            out,
            [
                Action::AddVips,
                Action::SendAdvert { priority: 100 },
                Action::Garp { count: 5 },
                Action::Transition { from: State::Backup, to: State::Master }
            ]
        );
        // The Adver_Timer runs at Advertisement_Interval.
        let t2 = t1 + down;
        assert_eq!(m.next_deadline(), Some(t2 + ms(1000)));
        assert_eq!(m.on_timers(t2 + ms(1000)), [Action::SendAdvert { priority: 100 }]);
    }

    #[test]
    fn v3_backup_learns_the_masters_interval() {
        let t0 = Instant::now();
        let mut m = machine(Version::V3, 100, ms(1000));
        m.handle(Input::Startup, t0);
        // The master advertises every 10 cs: our down interval follows.
        m.handle(advert(150, 10), t0);
        assert_eq!(m.master_adver_int(), ms(100));
        assert_eq!(m.next_deadline(), Some(t0 + ms(300) + Duration::from_nanos(60_937_500)));
    }

    #[test]
    fn priority_zero_makes_a_backup_wait_only_skew_time() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 100, ms(1000));
        m.handle(Input::Startup, t0);
        m.handle(advert(150, 1), t0);
        let t1 = t0 + ms(500);
        m.handle(advert(0, 1), t1);
        assert_eq!(m.next_deadline(), Some(t1 + m.skew_time()));
        assert_eq!(states(&m.on_timers(t1 + m.skew_time())), [State::Master]);
    }

    #[test]
    fn preempt_takes_over_a_lower_master_and_nopreempt_does_not() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 150, ms(1000));
        m.handle(Input::Startup, t0);
        // Lower priority adverts are discarded: the down timer set at start-up runs out.
        for i in 1..3 {
            assert!(m.handle(advert(100, 1), t0 + ms(1000 * i)).is_empty());
        }
        assert_eq!(m.next_deadline(), Some(t0 + m.master_down_interval()));
        assert_eq!(states(&m.on_timers(t0 + m.master_down_interval())), [State::Master]);

        let mut p = m.params().clone();
        p.preempt = false;
        let mut m = Machine::new(p);
        m.handle(Input::Startup, t0);
        for i in 1..10 {
            m.handle(advert(100, 1), t0 + ms(1000 * i));
            assert!(m.on_timers(t0 + ms(1000 * i)).is_empty());
        }
        assert_eq!(m.state(), State::Backup);
    }

    #[test]
    fn preempt_delay_follows_a_lower_master_for_the_delay() {
        let t0 = Instant::now();
        let mut p = Params::new(Version::V2, 150, ms(1000), US.parse().unwrap());
        p.preempt_delay = Duration::from_secs(10);
        let mut m = Machine::new(p);
        m.handle(Input::Startup, t0);
        let mut t = t0;
        for _ in 0..30 {
            t += ms(1000);
            m.handle(advert(100, 1), t);
            if !m.on_timers(t).is_empty() {
                break;
            }
            if m.next_deadline().is_some_and(|d| d < t + ms(1000)) {
                let d = m.next_deadline().unwrap();
                assert_eq!(states(&m.on_timers(d)), [State::Master]);
                // First seen at t0+1 s; followed until t0+11 s; the down timer set by the
                // last followed advert (at t0+10 s) then expires.
                assert_eq!(d, t0 + ms(10_000) + m.master_down_interval());
                return;
            }
        }
        panic!("never preempted");
    }

    #[test]
    fn master_yields_to_higher_priority_and_to_equal_priority_with_higher_address() {
        let t0 = Instant::now();
        let mut m = machine(Version::V3, 100, ms(100));
        m.handle(Input::Startup, t0);
        m.on_timers(t0 + m.master_down_interval());
        assert_eq!(m.state(), State::Master);
        // Lower: answered at once (RFC 9568), stays master.
        assert_eq!(m.handle(advert(50, 10), t0 + ms(500)), [Action::SendAdvert { priority: 100 }]);
        // Equal priority from 10.0.0.2 > 10.0.0.1: yields.
        let out = m.handle(advert(100, 20), t0 + ms(600));
        assert_eq!(out, [Action::RemoveVips, Action::Transition { from: State::Master, to: State::Backup }]);
        assert_eq!(m.master_adver_int(), ms(200));
        // Equal priority from a lower address does not win over us.
        let mut m = machine(Version::V3, 100, ms(100));
        m.handle(Input::Startup, t0);
        m.on_timers(t0 + m.master_down_interval());
        let low = Input::Advert { priority: 100, interval: 10, src: "10.0.0.0".parse().unwrap() };
        assert_eq!(m.handle(low, t0 + ms(500)), [Action::SendAdvert { priority: 100 }]);
        assert_eq!(m.state(), State::Master);
    }

    #[test]
    fn owner_starts_as_master_and_shutdown_sends_priority_zero() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 255, ms(1000));
        let out = m.handle(Input::Startup, t0);
        assert_eq!(states(&out), [State::Master]);
        assert!(out.contains(&Action::SendAdvert { priority: 255 }));
        // Tracking never changes the owner's priority.
        m.handle(Input::Priority(10), t0);
        assert_eq!(m.priority(), 255);
        let out = m.handle(Input::Shutdown, t0 + ms(10));
        assert_eq!(
            out,
            [
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::Transition { from: State::Master, to: State::Initialize }
            ]
        );
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn master_answers_priority_zero_with_an_advert() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 255, ms(1000));
        m.handle(Input::Startup, t0);
        assert_eq!(m.handle(advert(0, 1), t0 + ms(300)), [Action::SendAdvert { priority: 255 }]);
        assert_eq!(m.next_deadline(), Some(t0 + ms(1300)));
    }

    #[test]
    fn fault_releases_the_vips_and_recovery_returns_to_backup() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 200, ms(1000));
        m.handle(Input::Startup, t0);
        m.on_timers(t0 + m.master_down_interval());
        let out = m.handle(Input::Fault(true), t0 + ms(5000));
        assert_eq!(
            out,
            [
                Action::SendAdvert { priority: 0 },
                Action::RemoveVips,
                Action::Transition { from: State::Master, to: State::Fault }
            ]
        );
        assert_eq!(m.next_deadline(), None);
        // Adverts change nothing in FAULT.
        assert!(m.handle(advert(100, 1), t0 + ms(6000)).is_empty());
        let t1 = t0 + ms(7000);
        assert_eq!(states(&m.handle(Input::Fault(false), t1)), [State::Backup]);
        assert_eq!(m.next_deadline(), Some(t1 + m.master_down_interval()));
        // A fault known before start-up starts in FAULT.
        let mut m = machine(Version::V2, 200, ms(1000));
        m.handle(Input::Fault(true), t0);
        assert_eq!(states(&m.handle(Input::Startup, t0)), [State::Fault]);
    }

    #[test]
    fn tracking_weights_change_the_skew_and_the_adverts() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 100, ms(1000));
        m.handle(Input::Startup, t0);
        m.handle(Input::Priority(200), t0);
        assert_eq!(m.skew_time(), Duration::from_nanos(56 * 1_000_000_000 / 256));
        m.on_timers(t0 + Duration::from_secs(10));
        assert_eq!(m.on_timers(t0 + Duration::from_secs(11)), [Action::SendAdvert { priority: 200 }]);
    }

    #[test]
    fn sync_group_inputs_move_a_member_and_a_heard_master_holds_it() {
        let t0 = Instant::now();
        let mut m = machine(Version::V3, 100, ms(100));
        m.handle(Input::Startup, t0);
        assert!(!m.hears_master(t0));
        m.handle(advert(150, 10), t0);
        assert!(m.hears_master(t0 + ms(300)));
        assert!(!m.hears_master(t0 + m.master_down_interval()));
        // Held back at expiry: the timer restarts, no take-over.
        let due = t0 + m.master_down_interval();
        assert!(m.down_timer_due(due));
        m.defer_takeover(due);
        assert_eq!(m.next_deadline(), Some(due + m.master_down_interval()));
        assert!(m.on_timers(due).is_empty());
        // Another member became master: follow.
        let out = m.handle(Input::SyncMaster, due);
        assert_eq!(states(&out), [State::Master]);
        assert!(out.contains(&Action::AddVips));
        assert!(m.handle(Input::SyncMaster, due).is_empty());
        // Another left master: follow to backup, with a down timer.
        let out = m.handle(Input::SyncBackup, due + ms(50));
        assert_eq!(out, [Action::RemoveVips, Action::Transition { from: State::Master, to: State::Backup }]);
        assert_eq!(m.next_deadline(), Some(due + ms(50) + m.master_down_interval()));
        // Priority 0 from the master: no longer heard.
        m.handle(advert(150, 10), due + ms(60));
        m.handle(advert(0, 10), due + ms(70));
        assert!(!m.hears_master(due + ms(71)));
    }

    #[test]
    fn gratuitous_arps_repeat_after_the_delay_and_refresh() {
        let t0 = Instant::now();
        let mut p = Params::new(Version::V2, 255, ms(1000), US.parse().unwrap());
        p.garp_refresh = Some(Duration::from_secs(60));
        p.garp_refresh_repeat = 2;
        let mut m = Machine::new(p);
        assert!(m.handle(Input::Startup, t0).contains(&Action::Garp { count: 5 }));
        let garps = |out: Vec<Action>| out.into_iter().filter(|a| matches!(a, Action::Garp { .. })).collect::<Vec<_>>();
        assert_eq!(garps(m.on_timers(t0 + ms(4999))), []);
        assert_eq!(garps(m.on_timers(t0 + ms(5000))), [Action::Garp { count: 5 }]);
        assert_eq!(garps(m.on_timers(t0 + ms(65_000))), [Action::Garp { count: 2 }]);
    }

    /// A reload raising a backup's priority above its master's: with preempt the master's
    /// next advert is discarded (RFC 5798 §6.4.2), the down timer runs out and the backup
    /// takes over; without preempt it keeps following. No transition at the reload itself.
    #[test]
    fn reload_raising_a_backups_priority_preempts_on_the_next_advert() {
        for preempt in [true, false] {
            let t0 = Instant::now();
            let mut m = machine(Version::V3, 100, ms(100));
            m.handle(Input::Startup, t0);
            m.handle(advert(150, 10), t0);
            let due = m.next_deadline().unwrap();
            let mut p = m.params().clone();
            p.priority = 200;
            p.preempt = preempt;
            m.reconfigure(p, t0 + ms(50));
            assert_eq!((m.state(), m.priority(), m.transitions()), (State::Backup, 200, 1));
            let t1 = t0 + ms(100);
            m.handle(advert(150, 10), t1);
            let down = m.master_down_interval();
            if preempt {
                // Discarded: the deadline is still the one set by the advert at t0.
                assert_eq!(m.next_deadline(), Some(due));
                assert_eq!(states(&m.on_timers(due)), [State::Master]);
            } else {
                assert_eq!(m.next_deadline(), Some(t1 + down));
                assert!(m.on_timers(due).is_empty());
            }
        }
    }

    /// A reload lowering a master's priority: it stays master (no transition, no advert at
    /// once), advertises the new priority at the new interval, and yields to a higher advert.
    #[test]
    fn reload_lowering_a_masters_priority_keeps_it_master_until_preempted() {
        let t0 = Instant::now();
        let mut m = machine(Version::V3, 200, ms(1000));
        m.handle(Input::Startup, t0);
        let t1 = t0 + m.master_down_interval();
        assert_eq!(states(&m.on_timers(t1)), [State::Master]);
        let mut p = m.params().clone();
        p.priority = 50;
        p.advert_int = ms(100);
        let t2 = t1 + ms(10);
        m.reconfigure(p, t2);
        assert_eq!((m.state(), m.transitions()), (State::Master, 2));
        // The next advert within the new interval, with the new priority.
        assert_eq!(m.next_deadline(), Some(t2 + ms(100)));
        assert_eq!(m.on_timers(t2 + ms(100)), [Action::SendAdvert { priority: 50 }]);
        // A lower advert is answered (RFC 9568 §6.4.3); a higher one (keepalived at 100
        // preempting) takes over.
        assert_eq!(m.handle(advert(40, 10), t2 + ms(150)), [Action::SendAdvert { priority: 50 }]);
        let out = m.handle(advert(100, 10), t2 + ms(160));
        assert_eq!(out[0], Action::RemoveVips);
        assert_eq!(states(&out), [State::Backup]);
    }

    /// A reload with the settings in force keeps the state and the timers.
    #[test]
    fn reload_with_the_same_settings_changes_nothing() {
        let t0 = Instant::now();
        let mut m = machine(Version::V2, 100, ms(1000));
        m.handle(Input::Startup, t0);
        m.handle(advert(150, 1), t0);
        let before = m.next_deadline();
        m.reconfigure(m.params().clone(), t0 + ms(500));
        assert_eq!((m.next_deadline(), m.state(), m.priority()), (before, State::Backup, 100));
    }
}
