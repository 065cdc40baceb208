//! A network-namespace lab for NAT traversal tests (root only):
//!
//! ```text
//!   h1 10.0.1.2 ── r1 (NAT: masquerade)        ─┐
//!                                               ├─ pub 203.0.113.0/24 (bridge,
//!   h2 10.0.2.2 ── r2 (NAT: masquerade random) ─┘   203.0.113.1: Prosody, coturn)
//! ```
//!
//! r1 keeps the host's port for every destination (endpoint-independent
//! mapping); r2 picks a new random port per destination (a symmetric NAT),
//! or in [`Lab::cone`] behaves like r1.
//! Both drop unsolicited input from the WAN side (without that rule an
//! early punch datagram leaves a conntrack entry that spoils the mapping).
//! Every namespace is removed on drop, also when the test fails.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

pub const PUB_IP: &str = "203.0.113.1";

pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn need(bin: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is not installed: run `scripts/install-deps` (iproute2, nftables)"
    );
}

impl Lab {
    /// Builds the lab with r2 symmetric; namespaces are named
    /// `gsl<pid>x<n>-…`.
    pub fn new() -> Lab {
        Lab::build(true)
    }

    /// The same lab with two cone NATs (r2 keeps ports like r1): a hole
    /// punch with server-reflexive candidates works.
    pub fn cone() -> Lab {
        Lab::build(false)
    }

    fn build(r2_symmetric: bool) -> Lab {
        need("ip");
        need("nft");
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the namespace lab needs root (network namespaces and nftables)"
        );
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("gsl{}x{n}", std::process::id());
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
        };
        for n in ["pub", "r1", "r2", "h1", "h2"] {
            let ns = lab.ns(n);
            run(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns.clone());
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let pubns = lab.ns("pub");
        run(&["ip", "-n", &pubns, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &pubns,
            "addr",
            "add",
            &format!("{PUB_IP}/24"),
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &pubns, "link", "set", "br0", "up"]);
        // A default route into a sink (a veth whose other end drops
        // everything), as a public host has a default route: without it
        // coturn's sends to the hosts' private candidates fail with
        // ENETUNREACH and coturn closes the relay socket.
        run(&[
            "ip", "-n", &pubns, "link", "add", "sink0", "type", "veth", "peer", "name", "sink1",
        ]);
        run(&["ip", "-n", &pubns, "link", "set", "sink0", "up"]);
        run(&["ip", "-n", &pubns, "link", "set", "sink1", "up"]);
        run(&[
            "ip", "-n", &pubns, "route", "add", "default", "dev", "sink0",
        ]);
        lab.router("r1", "h1", 1, false);
        lab.router("r2", "h2", 2, r2_symmetric);
        lab
    }

    fn router(&self, r: &str, h: &str, k: u8, symmetric: bool) {
        let (rns, hns, pubns) = (self.ns(r), self.ns(h), self.ns("pub"));
        run(&[
            "ip", "-n", &rns, "link", "add", "wan", "type", "veth", "peer", "name", r, "netns",
            &pubns,
        ]);
        run(&["ip", "-n", &pubns, "link", "set", r, "master", "br0", "up"]);
        run(&[
            "ip",
            "-n",
            &rns,
            "addr",
            "add",
            &format!("203.0.113.{}/24", 10 + k),
            "dev",
            "wan",
        ]);
        run(&["ip", "-n", &rns, "link", "set", "wan", "up"]);
        run(&[
            "ip", "-n", &rns, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
            "netns", &hns,
        ]);
        run(&[
            "ip",
            "-n",
            &rns,
            "addr",
            "add",
            &format!("10.0.{k}.1/24"),
            "dev",
            "lan",
        ]);
        run(&["ip", "-n", &rns, "link", "set", "lan", "up"]);
        run(&[
            "ip",
            "-n",
            &hns,
            "addr",
            "add",
            &format!("10.0.{k}.2/24"),
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &hns, "link", "set", "eth0", "up"]);
        run(&[
            "ip",
            "-n",
            &hns,
            "route",
            "add",
            "default",
            "via",
            &format!("10.0.{k}.1"),
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &rns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        let masq = if symmetric {
            "masquerade random"
        } else {
            "masquerade"
        };
        let rules = format!(
            "table ip nat {{
  chain post {{ type nat hook postrouting priority 100; oifname \"wan\" {masq}; }}
}}
table ip filter {{
  chain forward_filter {{ type filter hook forward priority 0; ct state established,related accept; iifname \"wan\" drop; }}
  chain input_filter {{ type filter hook input priority 0; iifname \"wan\" ct state established,related accept; iifname \"wan\" drop; }}
}}
"
        );
        let path = std::env::temp_dir().join(format!("{}-{r}.nft", self.prefix));
        std::fs::write(&path, rules).expect("write nft rules");
        run(&[
            "ip",
            "netns",
            "exec",
            &rns,
            "nft",
            "-f",
            path.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(path);
    }

    /// The full name of namespace `short` (pub, r1, r2, h1, h2).
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// `program args…` run inside namespace `short`.
    pub fn command(&self, short: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(short), program]);
        c
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace kills its veths; processes started in it
        // are the callers' (they are stopped before the lab is dropped).
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
