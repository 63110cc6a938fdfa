//! Where a peer finds others and how it tells them where it is, on hosts that an engine
//! (Kubernetes, compose, Slurm) assigns: seeds named in DNS (`--seed dns:NAME:PORT`), resolved
//! again and again so that peers starting later are found, and the address to advertise when
//! the peer listens on every interface (`--listen 0.0.0.0:PORT`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A seed given by DNS name: every address (A and AAAA) the name resolves to, at `port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsSeed {
    /// The host name, e.g. `rumor-headless.default.svc.cluster.local`.
    pub host: String,
    /// The UDP port the peers listen on.
    pub port: u16,
}

impl FromStr for DnsSeed {
    type Err = String;

    /// `NAME:PORT`, with or without the `dns:` prefix the `--seed` flag uses.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.strip_prefix("dns:").unwrap_or(s);
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}`: expected dns:NAME:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: the port `{port}` is not a number from 0 to 65535"))?;
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let host = host.trim_end_matches('.');
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(format!(
                "`{s}`: `{host}` is not a DNS name (labels of letters, digits, - and _, \
                 separated by dots)"
            ));
        }
        if port == 0 {
            return Err(format!("`{s}`: port 0 cannot be a seed's port"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for DnsSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Serialize for DnsSeed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DnsSeed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How often DNS seeds are resolved again while the peer runs.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(5);

/// Longest wait for one resolution.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolves every seed in `seeds` (all its A and AAAA records), each within
/// [`RESOLVE_TIMEOUT`]. Returns the addresses, sorted and without duplicates, and for each seed
/// that did not resolve, why.
pub async fn resolve(seeds: &[DnsSeed]) -> (Vec<SocketAddr>, Vec<(DnsSeed, String)>) {
    let mut addrs = Vec::new();
    let mut failed = Vec::new();
    for seed in seeds {
        let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(e)) => failed.push((seed.clone(), e.to_string())),
            Err(_) => failed.push((
                seed.clone(),
                format!("no answer within {RESOLVE_TIMEOUT:?}"),
            )),
        }
    }
    addrs.sort();
    addrs.dedup();
    (addrs, failed)
}

/// Why no address to advertise could be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdvertiseError {
    /// No local address routes to the seeds (or, with no seed, to anywhere).
    #[error(
        "listening on {bound} (every interface) and no local address routes to {target}: give \
         the address other peers reach this one at with --advertise HOST:PORT"
    )]
    NoRoute {
        /// The address bound.
        bound: SocketAddr,
        /// What a route was looked for to.
        target: String,
    },
    /// The only route found is loopback, but the seeds are on other hosts.
    #[error(
        "listening on {bound}: the route to the seed {seed} leaves through loopback ({local}), \
         which other hosts cannot reach; give --advertise HOST:PORT"
    )]
    Loopback {
        /// The address bound.
        bound: SocketAddr,
        /// The seed routed to.
        seed: SocketAddr,
        /// The loopback address found.
        local: IpAddr,
    },
}

/// The address this peer tells others to reach it at: `explicit` (`--advertise`) when given;
/// else the bound address when it names one interface; else (bound to `0.0.0.0` or `::`) the
/// local address of the interface that routes to the first seed of the bound address's family,
/// or with no such seed, to the default route. The route is found by connecting a UDP socket,
/// which sends nothing. Loopback is advertised only when the seed is on this host.
///
/// # Errors
/// [`AdvertiseError::NoRoute`] when no interface routes there, [`AdvertiseError::Loopback`]
/// when the route to a remote seed is loopback.
pub fn advertised_addr(
    bound: SocketAddr,
    explicit: Option<SocketAddr>,
    seeds: &[SocketAddr],
) -> Result<SocketAddr, AdvertiseError> {
    if let Some(addr) = explicit {
        return Ok(addr);
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    let seed = seeds
        .iter()
        .find(|s| s.is_ipv4() == bound.is_ipv4())
        .copied();
    // No seed: the route a packet to a documentation address (never sent) would take.
    let target = seed.unwrap_or_else(|| {
        if bound.is_ipv4() {
            SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9))
        } else {
            SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9))
        }
    });
    let no_route = || AdvertiseError::NoRoute {
        bound,
        target: match seed {
            Some(s) => format!("the seed {s}"),
            None => "a default route (no seed given)".into(),
        },
    };
    let local = route_source(bound, target).ok_or_else(no_route)?;
    if local.is_loopback() && !target.ip().is_loopback() {
        return match seed {
            Some(seed) => Err(AdvertiseError::Loopback { bound, seed, local }),
            None => Err(no_route()),
        };
    }
    Ok(SocketAddr::new(local, bound.port()))
}

/// The local address a datagram from `bound`'s family to `target` would leave from.
fn route_source(bound: SocketAddr, target: SocketAddr) -> Option<IpAddr> {
    let any = SocketAddr::new(bound.ip(), 0);
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    let local = socket.local_addr().ok()?.ip();
    (!local.is_unspecified()).then_some(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_seeds_parse_with_or_without_prefix_and_name_what_is_wrong() {
        let s: DnsSeed = "dns:rumor-headless.default.svc.cluster.local:7000"
            .parse()
            .unwrap();
        assert_eq!(s.host, "rumor-headless.default.svc.cluster.local");
        assert_eq!(s.port, 7000);
        assert_eq!(
            s.to_string(),
            "rumor-headless.default.svc.cluster.local:7000"
        );
        assert_eq!("localhost:9".parse::<DnsSeed>().unwrap().host, "localhost");
        for (bad, says) in [
            ("dns:host", "expected dns:NAME:PORT"),
            ("dns:host:70000", "not a number"),
            ("dns:bad host:7000", "not a DNS name"),
            ("dns:a..b:7000", "not a DNS name"),
            ("dns:host:0", "port 0"),
        ] {
            let e = bad.parse::<DnsSeed>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_name_resolves_to_its_addresses_and_a_bad_one_says_why() {
        let ok: DnsSeed = "localhost:7000".parse().unwrap();
        let bad: DnsSeed = "no-such-host.invalid:7000".parse().unwrap();
        let (addrs, failed) = resolve(&[ok, bad.clone()]).await;
        assert!(
            addrs
                .iter()
                .any(|a| a.ip().is_loopback() && a.port() == 7000),
            "{addrs:?}"
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0, bad);
    }

    #[test]
    fn the_advertised_address_is_explicit_bound_or_routed() {
        let bound: SocketAddr = "0.0.0.0:7000".parse().unwrap();
        let explicit: SocketAddr = "10.1.2.3:7000".parse().unwrap();
        assert_eq!(advertised_addr(bound, Some(explicit), &[]), Ok(explicit));
        let one: SocketAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(advertised_addr(one, None, &[]), Ok(one));
        // A seed on this host: loopback is right.
        let seed: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let a = advertised_addr(bound, None, &[seed]).unwrap();
        assert!(a.ip().is_loopback() && a.port() == 7000, "{a}");
        // Never the unspecified address, whatever routes exist here.
        match advertised_addr(bound, None, &[]) {
            Ok(a) => assert!(!a.ip().is_unspecified() && !a.ip().is_loopback(), "{a}"),
            Err(e) => assert!(e.to_string().contains("--advertise"), "{e}"),
        }
    }
}
