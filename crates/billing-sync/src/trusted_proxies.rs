//! Which peers may name the client they forward for (`TRUSTED_PROXIES`): behind a TLS proxy or
//! a load balancer every connection comes from the proxy's address, so the per-address shares
//! (of webhook and API body bytes) would be everyone's share. A request whose peer is a trusted
//! proxy is charged to the address its `X-Forwarded-For` names; with nothing trusted (the
//! default) the header is ignored, as anyone can send it.

use std::net::IpAddr;
use std::str::FromStr;

use billing_sync_webhooks::body_budget::ClientAddress;
use ipnet::IpNet;
use poem::Request;
use poem::http::HeaderMap;

/// The proxies whose `X-Forwarded-For` is believed: addresses and CIDR blocks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of `TRUSTED_PROXIES` that is neither an address nor a CIDR block.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or a CIDR block (e.g. 10.0.0.0/8, 192.0.2.7, fd00::/8)")]
pub struct NotAnAddress(String);

impl FromStr for TrustedProxies {
    type Err = NotAnAddress;

    /// A comma-separated list; empty means none.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| NotAnAddress(entry.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `address` is one of the trusted proxies.
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client a request comes from: when its peer is trusted, the right-most address of
    /// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address it
    /// saw; only the entries our own proxies appended can be believed, whatever a client wrote
    /// before them). `None` when the peer is not trusted or names nobody readable.
    pub fn client_of(&self, peer: IpAddr, headers: &HeaderMap) -> Option<IpAddr> {
        if !self.trusts(peer) {
            return None;
        }
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for entry in forwarded.iter().rev() {
            let Ok(address) = entry.parse::<IpAddr>() else {
                // An entry we cannot read: whoever wrote it is not to be believed further.
                return None;
            };
            if !self.trusts(address) {
                return Some(canonical(address));
            }
        }
        None
    }

    /// Marks `request` with the client address a trusted proxy named, for the body budgets.
    pub fn mark(&self, request: &mut Request) {
        if self.0.is_empty() {
            return;
        }
        let poem::Addr::SocketAddr(peer) = request.remote_addr().0 else {
            return;
        };
        if let Some(client) = self.client_of(peer.ip(), request.headers()) {
            request.extensions_mut().insert(ClientAddress(client));
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:192.0.2.1`, what a dual-stack socket reports) is the
/// IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(proxies: &str, peer: &str, forwarded: &[&str]) -> Option<IpAddr> {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        let proxies: TrustedProxies = proxies.parse().unwrap();
        proxies.client_of(peer.parse().unwrap(), &headers)
    }

    #[test]
    fn a_list_of_addresses_and_blocks_is_read_and_anything_else_refused() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.7,fd00::/8".parse().unwrap();
        assert!(proxies.trusts("10.1.2.3".parse().unwrap()));
        assert!(proxies.trusts("192.0.2.7".parse().unwrap()));
        assert!(proxies.trusts("::ffff:10.9.9.9".parse().unwrap()));
        assert!(proxies.trusts("fd00::1".parse().unwrap()));
        assert!(!proxies.trusts("192.0.2.8".parse().unwrap()));
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::default()
        );
        let err = "10.0.0.0/8,proxy.internal"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(err.to_string().contains("`proxy.internal`"), "{err}");
    }

    #[test]
    fn only_a_trusted_peer_names_the_client_and_only_its_own_entries_count() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        // Nothing trusted: the header is anyone's to write.
        assert_eq!(client("", "10.0.0.5", &["198.51.100.1"]), None);
        // An untrusted peer.
        assert_eq!(client("10.0.0.0/8", "203.0.113.9", &["198.51.100.1"]), None);
        // The proxy appended the address it saw; what the client wrote before it is ignored.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["1.2.3.4, 198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Two proxies of ours in a row, over two header lines.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["198.51.100.1", "10.0.0.9"]),
            ip("198.51.100.1")
        );
        // Only proxies, or garbage where the client should be: nobody named.
        assert_eq!(client("10.0.0.0/8", "10.0.0.5", &["10.0.0.9"]), None);
        assert_eq!(client("10.0.0.0/8", "10.0.0.5", &["not-an-ip"]), None);
        assert_eq!(client("10.0.0.0/8", "10.0.0.5", &[]), None);
    }
}
