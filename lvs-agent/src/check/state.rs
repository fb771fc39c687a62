//! keepalived's health decisions, without I/O or clocks: a checker's retry schedule, a real
//! server's up/down from its checkers, and a virtual server's quorum. The runtime (`mod.rs`)
//! feeds check results in and executes what comes out; durations are returned, never slept.
//!
//! Semantics follow keepalived's `check_api.c` / `ipwrapper.c`:
//! - a checker starts up, or down with `alpha`; while up, a failure is retried `retry` times,
//!   `delay_before_retry` apart, before the checker goes down; while down, one success brings it
//!   up; after a decision (or a success) the next check is `delay_loop` later;
//! - a real server is up only while every one of its checkers is up;
//! - a failed real server is removed, or kept with weight 0 with `inhibit_on_failure`;
//! - a virtual server's quorum is the sum of its live real servers' weights: it is gained at
//!   `quorum + hysteresis` and lost below `quorum - hysteresis`; while it is lost, a
//!   `sorry_server` replaces every real server.

use std::time::Duration;

use crate::config::CheckTiming;

/// One checker's retry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckerState {
    pub up: bool,
    /// Failures in a row while up (the retries used so far).
    failures: u32,
    timing: CheckTiming,
}

/// What a result means for one checker: a change of its state, if any, and when to check next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub changed: Option<bool>,
    pub next: Duration,
}

impl CheckerState {
    /// `alpha`: the checker starts down, so the server takes no traffic before a success.
    #[must_use]
    pub const fn new(alpha: bool, timing: CheckTiming) -> Self {
        Self { up: !alpha, failures: 0, timing }
    }

    /// The wait before the first check: `warmup` when set (keepalived waits a random part of
    /// it), else a random part of `delay_loop`, so many checkers do not fire together.
    /// `fraction` is in [0, 1).
    #[must_use]
    pub fn first_delay(&self, fraction: f64) -> Duration {
        self.timing.warmup.unwrap_or(self.timing.delay_loop).mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// A check finished with `ok`.
    pub fn on_result(&mut self, ok: bool) -> Step {
        let t = self.timing;
        if ok {
            self.failures = 0;
            let changed = (!self.up).then_some(true);
            self.up = true;
            return Step { changed, next: t.delay_loop };
        }
        if !self.up {
            return Step { changed: None, next: t.delay_loop };
        }
        if self.failures < t.retry {
            self.failures += 1;
            return Step { changed: None, next: t.delay_before_retry };
        }
        self.failures = 0;
        self.up = false;
        Step { changed: Some(false), next: t.delay_loop }
    }
}

/// One real server of a pool, as the decisions see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The configured weight.
    pub weight: u32,
    /// MISC_CHECK `misc_dynamic`'s weight (exit code - 2), when one was set.
    pub dynamic_weight: Option<u32>,
    pub inhibit_on_failure: bool,
    /// Up state of each checker (none: always up).
    pub checkers: Vec<bool>,
}

impl Member {
    #[must_use]
    pub fn up(&self) -> bool {
        self.checkers.iter().all(|&u| u)
    }

    /// The weight it serves with while up.
    #[must_use]
    pub fn live_weight(&self) -> u32 {
        self.dynamic_weight.unwrap_or(self.weight)
    }
}

/// A virtual server's real servers and quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub members: Vec<Member>,
    pub quorum: u32,
    pub hysteresis: u32,
    pub has_sorry: bool,
    pub quorum_up: bool,
}

/// What changed, for the runtime to apply, log and notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Real server `member` went up or down (run notify_up / notify_down).
    Member { member: usize, up: bool },
    /// A live real server's weight changed (misc_dynamic).
    Weight { member: usize, weight: u32 },
    /// The pool gained or lost quorum (run quorum_up / quorum_down).
    Quorum { up: bool },
}

/// Where a real server stands in the forwarding plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the plan with this weight (0: quiesced by inhibit_on_failure).
    Serve(u32),
    /// Not in the plan.
    Removed,
}

impl Pool {
    /// A pool in its start state: quorum as the members' start states give it, no event.
    #[must_use]
    pub fn new(members: Vec<Member>, quorum: u32, hysteresis: u32, has_sorry: bool) -> Self {
        let mut pool = Self { members, quorum, hysteresis, has_sorry, quorum_up: true };
        pool.quorum_up = pool.live_weight() >= u64::from(quorum);
        pool
    }

    /// The sum of the live real servers' weights.
    #[must_use]
    pub fn live_weight(&self) -> u64 {
        self.members.iter().filter(|m| m.up()).map(|m| u64::from(m.live_weight())).sum()
    }

    /// Checker `checker` of real server `member` changed to `up`.
    pub fn set_checker(&mut self, member: usize, checker: usize, up: bool) -> Vec<Event> {
        let m = &mut self.members[member];
        let was = m.up();
        m.checkers[checker] = up;
        let now = m.up();
        let mut events = Vec::new();
        if was != now {
            events.push(Event::Member { member, up: now });
        }
        self.requorum(&mut events);
        events
    }

    /// misc_dynamic set real server `member`'s weight (None: back to the configured one).
    pub fn set_weight(&mut self, member: usize, weight: Option<u32>) -> Vec<Event> {
        let m = &mut self.members[member];
        let before = m.live_weight();
        m.dynamic_weight = weight;
        let mut events = Vec::new();
        if m.live_weight() != before {
            events.push(Event::Weight { member, weight: m.live_weight() });
        }
        self.requorum(&mut events);
        events
    }

    /// A pool that carries `quorum_up` from before a reload: the new quorum and weights decide
    /// from there (hysteresis included).
    pub fn carry_quorum(&mut self, quorum_up: bool) -> Vec<Event> {
        self.quorum_up = quorum_up;
        let mut events = Vec::new();
        self.requorum(&mut events);
        events
    }

    fn requorum(&mut self, events: &mut Vec<Event>) {
        let live = self.live_weight();
        let (q, h) = (u64::from(self.quorum), u64::from(self.hysteresis));
        if !self.quorum_up && live >= q + h {
            self.quorum_up = true;
            events.push(Event::Quorum { up: true });
        } else if self.quorum_up && live < q.saturating_sub(h) {
            self.quorum_up = false;
            events.push(Event::Quorum { up: false });
        }
    }

    /// Where member `i` belongs in the plan now.
    #[must_use]
    pub fn placement(&self, i: usize) -> Placement {
        let m = &self.members[i];
        if !self.quorum_up && self.has_sorry {
            // keepalived takes every real server out and puts the sorry server in.
            return Placement::Removed;
        }
        match (m.up(), m.inhibit_on_failure) {
            (true, _) => Placement::Serve(m.live_weight()),
            (false, true) => Placement::Serve(0),
            (false, false) => Placement::Removed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(retry: u32) -> CheckTiming {
        CheckTiming {
            connect_timeout: Duration::from_secs(5),
            retry,
            delay_before_retry: Duration::from_secs(3),
            delay_loop: Duration::from_secs(10),
            warmup: None,
        }
    }

    fn member(weight: u32, checkers: usize) -> Member {
        Member { weight, dynamic_weight: None, inhibit_on_failure: false, checkers: vec![true; checkers] }
    }

    #[test]
    fn a_failure_is_retried_before_the_checker_goes_down() {
        let mut c = CheckerState::new(false, timing(2));
        let s = Duration::from_secs;
        assert_eq!(c.on_result(false), Step { changed: None, next: s(3) });
        assert_eq!(c.on_result(false), Step { changed: None, next: s(3) });
        assert_eq!(c.on_result(false), Step { changed: Some(false), next: s(10) });
        // Down: no retries, one success brings it back.
        assert_eq!(c.on_result(false), Step { changed: None, next: s(10) });
        assert_eq!(c.on_result(true), Step { changed: Some(true), next: s(10) });
    }

    #[test]
    fn a_success_between_failures_resets_the_retries() {
        let mut c = CheckerState::new(false, timing(1));
        assert_eq!(c.on_result(false).changed, None);
        assert_eq!(c.on_result(true).changed, None);
        assert_eq!(c.on_result(false).changed, None, "the retry budget is whole again");
        assert_eq!(c.on_result(false).changed, Some(false));
    }

    #[test]
    fn retry_zero_goes_down_at_the_first_failure() {
        let mut c = CheckerState::new(false, timing(0));
        assert_eq!(c.on_result(false).changed, Some(false));
    }

    #[test]
    fn alpha_starts_down_and_the_first_success_brings_it_up() {
        let mut c = CheckerState::new(true, timing(1));
        assert!(!c.up);
        assert_eq!(c.on_result(true).changed, Some(true));
    }

    #[test]
    fn first_check_waits_a_random_part_of_warmup_or_delay_loop() {
        let c = CheckerState::new(false, timing(1));
        assert_eq!(c.first_delay(0.5), Duration::from_secs(5));
        let mut t = timing(1);
        t.warmup = Some(Duration::from_secs(2));
        assert_eq!(CheckerState::new(false, t).first_delay(0.25), Duration::from_millis(500));
        t.warmup = Some(Duration::ZERO);
        assert_eq!(CheckerState::new(false, t).first_delay(0.9), Duration::ZERO);
    }

    #[test]
    fn a_real_server_is_up_only_while_all_its_checkers_are() {
        let mut p = Pool::new(vec![member(1, 2), member(1, 0)], 1, 0, false);
        assert_eq!(p.set_checker(0, 0, false), [Event::Member { member: 0, up: false }]);
        assert_eq!(p.set_checker(0, 1, false), []);
        assert_eq!(p.placement(0), Placement::Removed);
        assert_eq!(p.set_checker(0, 0, true), [], "still one checker down");
        assert_eq!(p.set_checker(0, 1, true), [Event::Member { member: 0, up: true }]);
        assert_eq!(p.placement(0), Placement::Serve(1));
        assert_eq!(p.placement(1), Placement::Serve(1), "no checker: always up");
    }

    #[test]
    fn inhibit_on_failure_keeps_the_server_with_weight_zero() {
        let mut m = member(5, 1);
        m.inhibit_on_failure = true;
        let mut p = Pool::new(vec![m], 1, 0, false);
        p.set_checker(0, 0, false);
        assert_eq!(p.placement(0), Placement::Serve(0));
        p.set_checker(0, 0, true);
        assert_eq!(p.placement(0), Placement::Serve(5));
    }

    #[test]
    fn misc_dynamic_weight_changes_the_served_weight() {
        let mut p = Pool::new(vec![member(5, 1)], 1, 0, false);
        assert_eq!(p.set_weight(0, Some(7)), [Event::Weight { member: 0, weight: 7 }]);
        assert_eq!(p.placement(0), Placement::Serve(7));
        assert_eq!(p.set_weight(0, Some(7)), []);
        assert_eq!(p.set_weight(0, None), [Event::Weight { member: 0, weight: 5 }]);
        assert_eq!(p.set_weight(0, Some(0)), [Event::Weight { member: 0, weight: 0 }, Event::Quorum { up: false }]);
    }

    #[test]
    fn quorum_with_hysteresis_and_the_sorry_server() {
        // Weights 2, 2, 2; quorum 4, hysteresis 1: lost below 3, regained at 5.
        let mut p = Pool::new(vec![member(2, 1), member(2, 1), member(2, 1)], 4, 1, true);
        assert!(p.quorum_up);
        assert_eq!(p.set_checker(0, 0, false), [Event::Member { member: 0, up: false }], "4 live: kept");
        assert_eq!(
            p.set_checker(1, 0, false),
            [Event::Member { member: 1, up: false }, Event::Quorum { up: false }],
            "2 live < 3: lost"
        );
        assert_eq!(p.placement(2), Placement::Removed, "the sorry server replaces every real server");
        assert_eq!(p.set_checker(0, 0, true), [Event::Member { member: 0, up: true }], "4 live < 5: still lost");
        assert_eq!(p.set_checker(1, 0, true), [Event::Member { member: 1, up: true }, Event::Quorum { up: true }]);
        assert_eq!(p.placement(2), Placement::Serve(2));
    }

    #[test]
    fn without_a_sorry_server_live_servers_keep_serving_below_quorum() {
        let mut p = Pool::new(vec![member(1, 1), member(1, 1)], 2, 0, false);
        assert_eq!(p.set_checker(0, 0, false), [Event::Member { member: 0, up: false }, Event::Quorum { up: false }]);
        assert_eq!(p.placement(1), Placement::Serve(1));
    }

    #[test]
    fn a_reload_keeps_the_quorum_state_and_applies_the_new_quorum() {
        let mut p = Pool::new(vec![member(1, 1), member(1, 1)], 3, 0, true);
        assert!(!p.quorum_up, "a fresh pool starts from its weights");
        assert_eq!(p.carry_quorum(true), [Event::Quorum { up: false }], "2 < 3: lost at once");
        let mut p = Pool::new(vec![member(1, 1), member(1, 1)], 2, 1, true);
        assert_eq!(p.carry_quorum(false), [], "2 < 2 + 1: not regained");
        assert!(!p.quorum_up);
    }

    #[test]
    fn alpha_members_start_below_quorum() {
        let mut m = member(1, 1);
        m.checkers[0] = false;
        let p = Pool::new(vec![m], 1, 0, true);
        assert!(!p.quorum_up);
    }
}
