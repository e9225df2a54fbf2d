//! Links a run creates: a veth pair or a persistent TAP device, in the host's namespace or in a
//! [`NetNs`], removed when the guard is dropped.

use super::{check_name, ip, Error, NetNs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A persistent TAP device (`ip tuntap add`): a VMM or daemon attaches to it by name, a
    /// far end reads and writes its other side.
    Tap,
    /// A veth pair; the peer's name is given at creation.
    Veth,
}

/// A link this process created; deleted (with a veth's peer) when dropped.
#[derive(Debug)]
pub struct Link {
    name: String,
    /// The namespace the link is in now (`None`: the host's).
    ns: Option<String>,
    kind: LinkKind,
}

impl Link {
    /// A persistent, single-queue TAP device `name` in `ns` (or the host's namespace), up. A
    /// TAP stays without carrier until a process attaches to it.
    pub fn tap(name: &str, ns: Option<&NetNs>) -> Result<Link, Error> {
        check_name(name)?;
        let link = Link::new(name, ns, LinkKind::Tap);
        link.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        link.set_up()?;
        Ok(link)
    }

    /// A veth pair `name` / `peer`, both ends up, both in `ns` (or the host's namespace). The
    /// returned guard owns the pair (deleting one end deletes both); move the peer elsewhere
    /// with [`Link::move_peer`] if the two ends belong in different namespaces.
    pub fn veth(name: &str, peer: &str, ns: Option<&NetNs>) -> Result<Link, Error> {
        check_name(name)?;
        check_name(peer)?;
        let link = Link::new(name, ns, LinkKind::Veth);
        link.ip(&["link", "add", name, "type", "veth", "peer", "name", peer])?;
        link.set_up()?;
        link.ip(&["link", "set", peer, "up"])?;
        Ok(link)
    }

    fn new(name: &str, ns: Option<&NetNs>, kind: LinkKind) -> Link {
        Link {
            name: name.into(),
            ns: ns.map(|n| n.name().to_string()),
            kind,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// `ip [-n NS] ARGS` in the link's namespace.
    fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut all: Vec<&str> = Vec::new();
        if let Some(ns) = &self.ns {
            all.extend(["-n", ns.as_str()]);
        }
        all.extend_from_slice(args);
        ip(&all)
    }

    fn set_up(&self) -> Result<(), Error> {
        self.ip(&["link", "set", &self.name, "up"]).map(drop)
    }

    /// Moves the link into `ns` and brings it up there (a move takes it down). A TAP keeps its
    /// attached queues: their fds now carry frames of a link in `ns`.
    pub fn move_to(&mut self, ns: &NetNs) -> Result<(), Error> {
        self.ip(&["link", "set", &self.name, "netns", ns.name()])?;
        self.ns = Some(ns.name().into());
        self.set_up()
    }

    /// Moves a veth pair's other end `peer` into `ns`, up.
    pub fn move_peer(&self, peer: &str, ns: &NetNs) -> Result<(), Error> {
        self.ip(&["link", "set", peer, "netns", ns.name()])?;
        ns.ip(&["link", "set", peer, "up"]).map(drop)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let res = match self.kind {
            LinkKind::Tap => self.ip(&["tuntap", "del", "dev", &self.name, "mode", "tap"]),
            LinkKind::Veth => self.ip(&["link", "del", &self.name]),
        };
        // Gone already is fine: the namespace it was in may have been removed first.
        if let Err(e) = res {
            log::debug!("removing link {}: {e}", self.name);
        }
    }
}
