//! The pods the gateway knows, what their `/ready` says, and how that feeds the router: a
//! `ready` pod routes at full weight, a `warming` pod ramps (slow start) until its reported
//! `warmUntil`, a `draining`, unreachable or ejected pod gets no new requests at once.
//!
//! Membership comes from discovery (a static list, or a registry that adds pods and marks
//! the ones being scaled down). A pod that leaves keeps its entry, out of rotation (entries are
//! a few hundred bytes, so even many thousands of scale events cost little). Its router index
//! stays valid while requests in flight hold it, and goes back to the router once the last of
//! them is released: pods ejected and re-admitted again and again do not grow the router.

use crate::connections::{Connections, PodTimeouts};
use crate::metrics::PodLabel;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;
use tenantscale_core::registry::Member;
use tenantscale_core::routing::{Router, stable_hash};

/// What a pod's last `/ready` answer (or its absence) said.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    /// 200 `{"state": "ready"}`, or any other 200 (a plain backend).
    Ready,
    /// 200 `{"state": "warming", "warmUntil": <Unix ms>}`: ramp for this many more seconds.
    Warming { remaining: f64 },
    /// 503: draining (or not ready).
    Draining,
    /// No answer.
    Unreachable,
}

impl Observed {
    /// Reads a `/ready` answer; `remaining` is computed against `now_unix_ms`.
    pub fn from_ready(status: u16, body: &[u8], now_unix_ms: u64) -> Self {
        if status != 200 {
            return Self::Draining;
        }
        let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        match (v["state"].as_str(), v["warmUntil"].as_u64()) {
            (Some("warming"), Some(until)) => Self::Warming {
                remaining: until.saturating_sub(now_unix_ms) as f64 / 1000.0,
            },
            _ => Self::Ready,
        }
    }
}

/// One configured pod.
#[derive(Debug)]
pub struct Upstream {
    /// `host:port`.
    pub addr: String,
    /// Its keep-alive connections.
    pub connections: Arc<Connections>,
    pub label: PodLabel,
    /// Its `tenantscale_gateway_routed_total` series, resolved once.
    pub routed: Counter,
    /// Its index in the router while it takes requests.
    pub route: Option<usize>,
    pub observed: Observed,
    /// Failures (timeouts, the pod's own 5xx) in a row; reset by a success (a tenant's own
    /// 5xx neither counts nor resets).
    pub failures: u32,
    /// Out of rotation until this gateway time (seconds) after too many failures.
    pub ejected_until: f64,
    /// Listed by discovery and not being scaled down: polled, and routable when ready.
    pub member: bool,
}

impl Upstream {
    /// A pod at `addr`; `None` (logged) if that is no `host:port` the gateway can send to.
    fn new(
        addr: &str,
        timeouts: PodTimeouts,
        routed: &impl Fn(&PodLabel) -> Counter,
    ) -> Option<Self> {
        let connections = match Connections::new(addr, timeouts) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pod = ?addr, error = %e, "pod address refused");
                return None;
            }
        };
        let label = PodLabel {
            pod: addr.to_string(),
        };
        Some(Self {
            addr: addr.to_string(),
            connections: Arc::new(connections),
            routed: routed(&label),
            label,
            route: None,
            observed: Observed::Unreachable,
            failures: 0,
            ejected_until: f64::NEG_INFINITY,
            member: true,
        })
    }
}

/// Failures in a row that eject a pod, and for how long.
pub const EJECT_AFTER_FAILURES: u32 = 5;
pub const EJECTION_SECONDS: f64 = 10.0;

/// The router and the pods behind its indices.
pub struct Pool {
    pub router: Router,
    pub upstreams: Vec<Upstream>,
    /// Router index → position in `upstreams` (router indices are never reused).
    by_route: Vec<usize>,
    /// Slow-start window of the router, seconds.
    warmup: f64,
    /// How long a pod may take to connect, and to go on with a body.
    timeouts: PodTimeouts,
}

impl Pool {
    /// A pool of the pods at `addrs`; `routed` gives each pod's routed-requests counter.
    pub fn new(
        router: Router,
        warmup: f64,
        timeouts: PodTimeouts,
        addrs: &[String],
        routed: impl Fn(&PodLabel) -> Counter,
    ) -> Self {
        Self {
            router,
            upstreams: addrs
                .iter()
                .filter_map(|a| Upstream::new(a, timeouts, &routed))
                .collect(),
            by_route: Vec::new(),
            warmup,
            timeouts,
        }
    }

    /// Applies discovery's membership at `now`: new pods join (routable once their `/ready`
    /// answers), pods marked draining or no longer listed leave rotation at once; an address
    /// that is no `host:port` is refused (logged). Returns whether any pod joined.
    pub fn set_members(
        &mut self,
        members: &[Member],
        now: f64,
        routed: impl Fn(&PodLabel) -> Counter,
    ) -> bool {
        let mut joined = false;
        for up in &mut self.upstreams {
            up.member = false;
        }
        for m in members.iter().filter(|m| !m.draining) {
            match self.upstreams.iter_mut().find(|u| u.addr == m.addr) {
                Some(up) => up.member = true,
                None => {
                    if let Some(up) = Upstream::new(&m.addr, self.timeouts, &routed) {
                        self.upstreams.push(up);
                        joined = true;
                    }
                }
            }
        }
        for i in 0..self.upstreams.len() {
            self.update(i, now);
        }
        joined
    }

    /// The pods to poll: the members' positions in `upstreams`.
    pub fn members(&self) -> Vec<usize> {
        (0..self.upstreams.len())
            .filter(|&i| self.upstreams[i].member)
            .collect()
    }

    /// The pod behind router index `route`.
    pub fn upstream(&self, route: usize) -> &Upstream {
        &self.upstreams[self.by_route[route]]
    }

    fn upstream_mut(&mut self, route: usize) -> &mut Upstream {
        &mut self.upstreams[self.by_route[route]]
    }

    /// Applies a `/ready` observation of pod `i` at gateway time `now`.
    pub fn observe(&mut self, i: usize, observed: Observed, now: f64) {
        self.upstreams[i].observed = observed;
        self.update(i, now);
    }

    /// Puts pod `i` in or out of rotation as its state and ejection say.
    fn update(&mut self, i: usize, now: f64) {
        let up = &self.upstreams[i];
        let wanted = up.member
            && now >= up.ejected_until
            && matches!(up.observed, Observed::Ready | Observed::Warming { .. });
        match (up.route, wanted) {
            (None, true) => {
                // A warming pod reaches full weight when its own warm-up ends.
                let since = match up.observed {
                    Observed::Warming { remaining } => {
                        now + remaining.min(self.warmup) - self.warmup
                    }
                    _ => now - self.warmup,
                };
                let route = self.router.add_pod(stable_hash(up.addr.as_bytes()), since);
                match self.by_route.get_mut(route) {
                    Some(slot) => *slot = i,
                    None => self.by_route.push(i),
                }
                self.upstreams[i].route = Some(route);
            }
            (Some(route), false) => {
                self.router.drain(route);
                self.upstreams[i].route = None;
                self.upstreams[i].connections.close_idle();
                self.remove_if_idle(route);
            }
            _ => {}
        }
    }

    /// A pod refused or broke a connection: it is out until `/ready` answers again; true if
    /// that took it out (it was in rotation under this route).
    pub fn unreachable(&mut self, route: usize, now: f64) -> bool {
        let i = self.by_route[route];
        let was_routed = self.upstreams[i].route == Some(route);
        self.upstreams[i].observed = Observed::Unreachable;
        self.update(i, now);
        was_routed
    }

    /// Counts a 5xx or a broken exchange; true if that ejected the pod.
    pub fn failed(&mut self, route: usize, now: f64) -> bool {
        let up = self.upstream_mut(route);
        up.failures += 1;
        if up.failures < EJECT_AFTER_FAILURES || up.route != Some(route) {
            return false;
        }
        up.failures = 0;
        up.ejected_until = now + EJECTION_SECONDS;
        let i = self.by_route[route];
        self.update(i, now);
        true
    }

    pub fn succeeded(&mut self, route: usize) {
        self.upstream_mut(route).failures = 0;
    }

    /// A request routed to `route` has finished with it.
    pub fn release(&mut self, route: usize) {
        self.router.release(route);
        self.remove_if_idle(route);
    }

    /// Gives `route` back to the router once it is out of rotation and no request holds it
    /// (no failure can be reported under it any more).
    fn remove_if_idle(&mut self, route: usize) {
        if self.upstream(route).route != Some(route) && self.router.load(route) == 0 {
            self.router.remove(route);
        }
    }

    /// Ends ejections whose time is up.
    pub fn tick(&mut self, now: f64) {
        for i in 0..self.upstreams.len() {
            if self.upstreams[i].route.is_none() {
                self.update(i, now);
            }
        }
    }

    /// Each member's state name for metrics.
    pub fn states(&self, now: f64) -> Vec<&'static str> {
        self.upstreams
            .iter()
            .filter(|u| u.member)
            .map(|u| match u.observed {
                _ if now < u.ejected_until => "ejected",
                Observed::Ready => "ready",
                Observed::Warming { .. } => "warming",
                Observed::Draining => "draining",
                Observed::Unreachable => "unreachable",
            })
            .collect()
    }

    /// Outstanding requests per pod (the current route of each, if any), for members and
    /// for departed pods still finishing requests.
    pub fn loads(&self) -> Vec<(PodLabel, u32)> {
        self.upstreams
            .iter()
            .filter(|u| u.member || u.route.is_some())
            .map(|u| (u.label.clone(), u.route.map_or(0, |r| self.router.load(r))))
            .collect()
    }
}

/// How often `/ready` is polled and how long one poll may take (less: one round of polls ends
/// before the next begins).
pub const POLL_EVERY: Duration = Duration::from_secs(1);
pub const POLL_TIMEOUT: Duration = Duration::from_millis(800);
const _: () = assert!(POLL_TIMEOUT.as_millis() < POLL_EVERY.as_millis());

/// `/ready` answers are small; anything longer is not a pod's.
pub const MAX_READY_BODY: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use tenantscale_core::routing::RouterConfig;

    fn pool() -> Pool {
        let router = Router::new(RouterConfig::default(), vec![1, 2, 3]);
        let timeouts = PodTimeouts {
            connect: Duration::from_secs(1),
            body_silence: Duration::from_secs(1),
        };
        Pool::new(
            router,
            60.0,
            timeouts,
            &["a:1".into(), "b:1".into()],
            |_| Counter::default(),
        )
    }

    #[test]
    fn ready_answers_are_read_leniently() {
        let warming = br#"{"state":"warming","warmUntil":31000}"#;
        assert_eq!(
            Observed::from_ready(200, warming, 1000),
            Observed::Warming { remaining: 30.0 }
        );
        assert_eq!(Observed::from_ready(200, b"ok", 0), Observed::Ready);
        assert_eq!(
            Observed::from_ready(200, br#"{"state":"ready"}"#, 0),
            Observed::Ready
        );
        assert_eq!(Observed::from_ready(503, b"", 0), Observed::Draining);
    }

    #[test]
    fn pods_enter_and_leave_rotation_with_their_state() {
        let mut p = pool();
        p.observe(0, Observed::Ready, 0.0);
        p.observe(1, Observed::Warming { remaining: 30.0 }, 0.0);
        let (a, b) = (p.upstreams[0].route.unwrap(), p.upstreams[1].route.unwrap());
        assert_eq!(p.router.weight(a, 0.0), 1.0);
        // Half of its 60 s window is left: it starts at half weight and is full in 30 s.
        assert!((p.router.weight(b, 0.0) - 0.5).abs() < 1e-9);
        assert_eq!(p.router.weight(b, 30.0), 1.0);
        p.observe(0, Observed::Draining, 1.0);
        assert_eq!(p.upstreams[0].route, None);
        assert_eq!(p.router.weight(a, 1.0), 0.0);
        p.observe(0, Observed::Ready, 2.0);
        let again = p.upstreams[0].route.unwrap();
        assert_eq!(again, a, "no request held its index: it is the pod's again");
        assert_eq!(p.upstream(again).addr, "a:1");
    }

    #[test]
    fn repeated_failures_eject_a_pod_for_a_while() {
        let mut p = pool();
        p.observe(0, Observed::Ready, 0.0);
        let r = p.upstreams[0].route.unwrap();
        for _ in 1..EJECT_AFTER_FAILURES {
            assert!(!p.failed(r, 0.0));
        }
        p.succeeded(r);
        for _ in 1..EJECT_AFTER_FAILURES {
            assert!(!p.failed(r, 0.0));
        }
        assert!(p.failed(r, 0.0), "the fifth failure in a row ejects");
        assert_eq!(p.states(0.0)[0], "ejected");
        p.observe(0, Observed::Ready, 1.0);
        assert_eq!(p.upstreams[0].route, None, "still ejected");
        p.tick(EJECTION_SECONDS + 0.1);
        assert!(p.upstreams[0].route.is_some(), "back after the ejection");
    }

    #[test]
    fn membership_adds_pods_and_takes_leaving_ones_out_at_once() {
        let mut p = pool();
        p.observe(0, Observed::Ready, 0.0);
        p.observe(1, Observed::Ready, 0.0);
        let member = |addr: &str, draining| Member {
            addr: addr.into(),
            draining,
        };
        let joined = p.set_members(
            &[
                member("a:1", false),
                member("b:1", true),
                member("c:1", false),
            ],
            1.0,
            |_| Counter::default(),
        );
        assert!(joined);
        assert!(p.upstreams[0].route.is_some(), "a stays");
        assert_eq!(p.upstreams[1].route, None, "b is draining: out at once");
        assert_eq!(p.upstreams[2].addr, "c:1");
        assert_eq!(p.upstreams[2].route, None, "c waits for its /ready");
        assert_eq!(p.members(), vec![0, 2]);
        p.observe(1, Observed::Ready, 1.5);
        assert_eq!(
            p.upstreams[1].route, None,
            "a leaving pod's /ready cannot bring it back"
        );
        p.observe(2, Observed::Ready, 2.0);
        assert!(p.upstreams[2].route.is_some());
        assert!(!p.set_members(&[member("c:1", false)], 3.0, |_| Counter::default()));
        assert_eq!(p.upstreams[0].route, None, "a is no longer listed");
        assert_eq!(p.states(3.0), vec!["ready"]);
    }

    #[test]
    fn pods_ejected_and_readmitted_again_and_again_do_not_grow_the_router() {
        let mut p = pool();
        p.observe(1, Observed::Ready, 0.0);
        let mut now = 0.0;
        for round in 0..1000 {
            now += 1.0;
            p.observe(0, Observed::Ready, now);
            let r = p.upstreams[0].route.unwrap();
            // Every other round a request is still on the pod when it goes out.
            let held = round % 2 == 0;
            if held {
                // Bounded loads spill onto it within a few requests.
                while p.router.load(r) == 0 {
                    p.router.route(0, now);
                }
                p.unreachable(r, now);
            } else {
                p.observe(0, Observed::Unreachable, now);
            }
            assert_eq!(p.upstreams[0].route, None);
            for route in 0..p.by_route.len() {
                if p.router.load(route) > 0 {
                    p.release(route);
                }
            }
        }
        assert!(p.by_route.len() <= 3, "{} router entries", p.by_route.len());
        p.observe(0, Observed::Ready, now + 1.0);
        let (a, b) = (p.upstreams[0].route.unwrap(), p.upstreams[1].route.unwrap());
        assert_eq!(
            (p.upstream(a).addr.as_str(), p.upstream(b).addr.as_str()),
            ("a:1", "b:1")
        );
        assert_eq!(p.router.ready_pods(), 2);
    }

    #[test]
    fn a_registry_address_that_is_no_host_port_is_refused_not_a_panic() {
        let mut p = pool();
        let member = |addr: &str| Member {
            addr: addr.into(),
            draining: false,
        };
        let listed = [
            member("a:1"),
            member("bad\naddr:1"),
            member("c:1\u{0}"),
            member("no-port"),
            member(":80"),
            member("d:99999"),
            member("e:2"),
        ];
        assert!(p.set_members(&listed, 0.0, |_| Counter::default()));
        let addrs: Vec<&str> = p.upstreams.iter().map(|u| u.addr.as_str()).collect();
        assert_eq!(addrs, ["a:1", "b:1", "e:2"]);
        assert_eq!(p.members(), vec![0, 2]);
    }

    #[test]
    fn a_refused_connection_takes_the_pod_out_at_once() {
        let mut p = pool();
        p.observe(0, Observed::Ready, 0.0);
        let r = p.upstreams[0].route.unwrap();
        assert!(p.unreachable(r, 0.5));
        assert_eq!(p.upstreams[0].route, None);
        assert!(!p.unreachable(r, 0.6), "already out");
    }
}
