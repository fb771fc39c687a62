//! The LVS-DR test bed: one L2 segment (a bridge in its own namespace) joining a client, a
//! director and real servers, each in its own namespace, as the operators' guides lay it out.
//!
//! ```text
//!   client 10.77.0.10 ─┐
//!   director 10.77.0.2 ─┤ br0 (namespace lvs-TAG-sw)
//!   rs1 10.77.0.11 ─────┤     VIP 10.77.0.100: on the director's eth0, and on each real
//!   rs2 10.77.0.12 ─────┤     server's lo (arp_ignore=1, arp_announce=2)
//!   rs3 10.77.0.13 ─────┘
//! ```
//!
//! `build_with` can add a second director, `director2` at 10.77.0.3, which starts without the
//! VIP; `move_vip` then plays a VRRP failover (see there).
//!
//! `enable_ipv6` adds the same plan in fd00:77::/64: each host's IPv4 last octet, read as hex
//! digits, is its IPv6 interface id (client fd00:77::10, director fd00:77::2, rs1 fd00:77::11),
//! and VIP6 is fd00:77::100.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    netns::{Netns, sh},
    process::Proc,
    udp::UdpResponder,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const PREFIX_LEN: u8 = 24;
/// The IPv6 VIP (`enable_ipv6`): on the director's eth0 as /128, on each real server's lo.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x100);
pub const PREFIX6_LEN: u8 = 64;
/// What each real server's nginx serves at `/health/ok` (see `DrLab::start_http`).
pub const HEALTH_BODY: &str = "healthy\n";

/// Writes a BPF object (lvs-ebpf's `lvs-floor`, with the `pass` program) where `ip` can load
/// it, for [`DrLab::build`].
pub fn write_object(tag: &str, bytes: &[u8]) -> Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("lvs-{tag}-floor.o"));
    fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// One host on the segment.
pub struct Host {
    pub name: String,
    pub ns: Netns,
    pub ip: Ipv4Addr,
    /// The host's interface on the segment.
    pub iface: &'static str,
    /// The switch-side end of its veth.
    pub port: String,
}

impl Host {
    pub fn mac(&self) -> Result<String> {
        let out = self.ns.ip(&["-br", "link", "show", self.iface])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(2).map(str::to_string).context("no MAC in `ip -br link`")
    }

    /// The host's address in fd00:77::/64 (given by `DrLab::enable_ipv6`): its IPv4 last octet
    /// written as hex digits, so 10.77.0.11 is fd00:77::11.
    #[must_use]
    pub fn ip6(&self) -> Ipv6Addr {
        let id = u16::from_str_radix(&self.ip.octets()[3].to_string(), 16).expect("decimal digits are hex digits");
        Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, id)
    }
}

/// First of the extra client addresses (`add_client_addresses`), clear of the hosts' and the
/// VIP's addresses.
const CLIENT_ALIAS_BASE: u8 = 200;

/// The whole bed. Fields drop in order: servers first, then namespaces, then the work dir.
pub struct DrLab {
    servers: Vec<Proc>,
    udp: Vec<UdpResponder>,
    pub client: Host,
    /// Director 1 (index 0), which holds the VIP when the bed is built.
    pub director: Host,
    /// Directors 2… (indices 1…), built without the VIP.
    pub other_directors: Vec<Host>,
    pub real_servers: Vec<Host>,
    pub switch: Netns,
    /// Configs, logs and pid files of this bed.
    pub dir: PathBuf,
    pub tag: String,
    /// Set by `enable_ipv6`: nginx then listens on IPv6 too.
    ipv6: bool,
    /// Set by `enable_tls`: certificate and key for nginx's port 443.
    tls: Option<(PathBuf, PathBuf)>,
}

impl DrLab {
    /// Builds namespaces `lvs-TAG-*` with `n` real servers. Leftovers of an earlier run with
    /// the same tag are removed first. `pass_object` is a BPF object with an XDP program
    /// named `pass` (lvs-ebpf's `lvs-floor`).
    pub fn build(tag: &str, n: usize, pass_object: &Path) -> Result<Self> {
        Self::build_with(tag, n, 1, pass_object)
    }

    /// `build` with `n_directors` directors (1 to 7) on the segment: director k (from 1) is
    /// namespace `lvs-TAG-director` for k = 1, `lvs-TAG-directorK` after, at 10.77.0.(k+1).
    /// Only director 1 holds the VIP.
    pub fn build_with(tag: &str, n: usize, n_directors: usize, pass_object: &Path) -> Result<Self> {
        if !(1..=7).contains(&n_directors) {
            bail!("{n_directors} directors: the bed has addresses for 1 to 7");
        }
        let prefix = format!("lvs-{tag}-");
        crate::netns::remove_stale(&prefix);
        let dir = std::env::temp_dir().join(format!("lvs-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let switch = Netns::create(&format!("{prefix}sw"))?;
        switch.ip(&["link", "add", "br0", "type", "bridge"])?;
        switch.ip(&["link", "set", "br0", "up"])?;
        let mut port_no = 0;
        let mut host = |name: &str, last_octet: u8| -> Result<Host> {
            port_no += 1;
            let ns = Netns::create(&format!("{prefix}{name}"))?;
            let port = format!("p{port_no}-{name}");
            switch.ip(&["link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name])?;
            switch.ip(&["link", "set", &port, "master", "br0", "up"])?;
            let ip = Ipv4Addr::new(10, 77, 0, last_octet);
            ns.ip(&["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", "eth0"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
            Ok(Host { name: name.to_string(), ns, ip, iface: "eth0", port })
        };
        let client = host("client", 10)?;
        let director = host("director", 2)?;
        let real_servers = (1..=n)
            .map(|i| host(&format!("rs{i}"), 10 + u8::try_from(i).expect("few real servers")))
            .collect::<Result<Vec<_>>>()?;
        // After the real servers, so a one-director bed is wired exactly as before.
        let other_directors = (2..=n_directors)
            .map(|k| host(&format!("director{k}"), 1 + u8::try_from(k).expect("few directors")))
            .collect::<Result<Vec<_>>>()?;

        // The client's kernel leaves TCP checksums to veth offload; a frame the director
        // forwards with XDP_TX loses that state and the real server would drop it as corrupt.
        // Real NICs hand XDP finished frames, so this is a property of the veth bed only.
        client.ns.run("ethtool", &["-K", "eth0", "tx", "off"])?;
        // veth delivers XDP_TX frames only to a peer running XDP (veth_xdp_xmit drops them
        // otherwise, and counts nothing the director can see); a pass program is enough.
        // Turning GRO on at the peer, which also enables its NAPI, did not deliver them here.
        // Every director gets it: any of them may forward.
        for d in std::iter::once(&director).chain(&other_directors) {
            switch.ip(&[
                "link",
                "set",
                "dev",
                &d.port,
                "xdp",
                "obj",
                pass_object.to_str().context("object path")?,
                "program",
                "pass",
            ])?;
        }
        // The director owns the VIP (keepalived's virtual_ipaddress, or by hand with plain LVS).
        director.ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "eth0"])?;
        Ok(Self {
            servers: Vec::new(),
            udp: Vec::new(),
            client,
            director,
            other_directors,
            real_servers,
            switch,
            dir,
            tag: tag.to_string(),
            ipv6: false,
            tls: None,
        })
    }

    /// Director `index` (0 is `director`, 1 is `director2`, …).
    ///
    /// # Panics
    /// If the bed has no such director.
    #[must_use]
    pub fn director_at(&self, index: usize) -> &Host {
        match index {
            0 => &self.director,
            i => self.other_directors.get(i - 1).unwrap_or_else(|| panic!("the bed has no director {}", i + 1)),
        }
    }

    /// Moves the VIP from director `from` to director `to`, as a VRRP failover does.
    ///
    /// keepalived's new master adds the VIP and sends gratuitous ARP, which updates the
    /// client's (in real life, the router's) neighbour entry and teaches the switch where the
    /// MAC is. Here the same three effects are made directly and deterministically: the
    /// address moves, the client's neighbour entry for the VIP is replaced with the new
    /// director's MAC, and the bridge gets a static entry for that MAC on the director's port
    /// (so no frame for it is flooded to the other directors' XDP programs, which would
    /// forward it too).
    pub fn move_vip(&self, from: usize, to: usize) -> Result<()> {
        let (old, new) = (self.director_at(from), self.director_at(to));
        let vip = format!("{VIP}/32");
        old.ns.ip(&["addr", "del", &vip, "dev", old.iface])?;
        new.ns.ip(&["addr", "add", &vip, "dev", new.iface])?;
        let mac = new.mac()?;
        self.switch.run("bridge", &["fdb", "replace", &mac, "dev", &new.port, "master", "static"])?;
        self.client.ns.ip(&[
            "neigh",
            "replace",
            &VIP.to_string(),
            "lladdr",
            &mac,
            "dev",
            self.client.iface,
            "nud",
            "reachable",
        ])?;
        Ok(())
    }

    /// Gives the client `count` more addresses (10.77.0.200, .201, …) and returns them:
    /// schedulers that hash the client's address (sh, mh) need several clients to spread.
    pub fn add_client_addresses(&self, count: u8) -> Result<Vec<Ipv4Addr>> {
        if count > 50 {
            bail!("at most 50 client addresses");
        }
        (0..count)
            .map(|k| {
                let ip = Ipv4Addr::new(10, 77, 0, CLIENT_ALIAS_BASE + k);
                self.client.ns.ip(&["addr", "add", &format!("{ip}/{PREFIX_LEN}"), "dev", self.client.iface])?;
                Ok(ip)
            })
            .collect()
    }

    /// Gives every host its address in fd00:77::/64 (see `Host::ip6`) and director 1 the VIP6
    /// (/128 on eth0), usable at once; `start_http` then also listens on IPv6. Call before
    /// `start_http` and before the agent starts: the agent resolves the real servers' MACs
    /// (neighbour discovery) when it starts, so their addresses must answer by then.
    pub fn enable_ipv6(&mut self) -> Result<()> {
        // The bridge would otherwise learn multicast listeners from MLD reports and could
        // withhold neighbour solicitations (sent to solicited-node groups) from a port whose
        // report it missed; flooding them, as a plain switch does, is deterministic.
        self.switch.ip(&["link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        let hosts = std::iter::once(&self.client)
            .chain([&self.director])
            .chain(&self.other_directors)
            .chain(&self.real_servers);
        for h in hosts {
            // No duplicate address detection: an address in DAD ("tentative") cannot be used
            // as a source or answer solicitations for about a second; nothing else on this
            // segment can hold it. `nodad` covers the address, the sysctls any later one.
            for scope in ["all", "default", h.iface] {
                h.ns.sysctl(&format!("net.ipv6.conf.{scope}.accept_dad"), "0")?;
            }
            h.ns.sysctl(&format!("net.ipv6.conf.{}.disable_ipv6", h.iface), "0")?;
            h.ns.ip(&["addr", "add", &format!("{}/{PREFIX6_LEN}", h.ip6()), "dev", h.iface, "nodad"])?;
        }
        self.director.ns.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", self.director.iface, "nodad"])?;
        self.ipv6 = true;
        Ok(())
    }

    /// Prepares every real server for DR with `lvs-agent realserver up --vip VIP6` (the VIP6
    /// as /128 on lo). Needs `enable_ipv6` first.
    pub fn prepare_real_servers_v6(&self, agent: &Path) -> Result<()> {
        if !self.ipv6 {
            bail!("prepare_real_servers_v6 needs enable_ipv6 first");
        }
        for rs in &self.real_servers {
            sh(rs.ns.cmd(agent.to_str().context("agent path")?).args([
                "realserver",
                "up",
                "--vip",
                &VIP6.to_string(),
            ]))?;
        }
        Ok(())
    }

    /// The usual bed: `n` real servers prepared for DR with the agent under test and serving
    /// HTTP. `floor_object` is lvs-ebpf's `lvs-floor` object (its `pass` program goes on the
    /// director's veth peer); the agent is `process::agent_bin()`.
    pub fn http_bed(tag: &str, n: usize, floor_object: &[u8]) -> Result<Self> {
        let floor = write_object(tag, floor_object)?;
        let mut lab = Self::build(tag, n, &floor)?;
        let _ = fs::remove_file(&floor);
        lab.prepare_real_servers(&crate::process::agent_bin())?;
        lab.start_http()?;
        Ok(lab)
    }

    /// Prepares every real server for DR with `lvs-agent realserver up --vip VIP`.
    pub fn prepare_real_servers(&self, agent: &Path) -> Result<()> {
        for rs in &self.real_servers {
            sh(rs.ns.cmd(agent.to_str().context("agent path")?).args(["realserver", "up", "--vip", &VIP.to_string()]))?;
        }
        Ok(())
    }

    /// Starts nginx on every real server, answering `GET /` on port 80 with the server's name,
    /// and waits until each accepts connections. `GET /health/ok` serves the file
    /// `health_file(i)` (HEALTH_BODY at start): health checks' target, which a test breaks by
    /// removing (404) or rewriting (another digest) that file. With `enable_tls`, port 443
    /// serves the same over TLS.
    pub fn start_http(&mut self) -> Result<()> {
        for i in 0..self.real_servers.len() {
            self.start_http_on(i)?;
        }
        Ok(())
    }

    /// The file real server `index`'s nginx serves at `/health/ok`.
    #[must_use]
    pub fn health_file(&self, index: usize) -> PathBuf {
        self.dir.join(&self.real_servers[index].name).join("www/health/ok")
    }

    /// Starts nginx on real server `index` (see `start_http`) and waits until it accepts
    /// connections. The health file is written only if it does not exist.
    pub fn start_http_on(&mut self, index: usize) -> Result<()> {
        let rs = &self.real_servers[index];
        let dir = self.dir.join(&rs.name);
        fs::create_dir_all(dir.join("www/health"))?;
        let health = self.health_file(index);
        if !health.exists() {
            fs::write(&health, HEALTH_BODY)?;
        }
        let d = dir.display();
        let tls = match &self.tls {
            Some((cert, key)) => format!(
                "    listen 443 ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             default_type text/plain;\n  server {{\n    listen 80 backlog=4096;\n{listen6}{tls}\
             location / {{\n      return 200 \"{name}\\n\";\n    }}\n\
             location /health/ {{\n      root {d}/www;\n    }}\n  }}\n}}\n",
            name = rs.name,
            // nginx makes [::] listeners IPv6-only, so this adds to the IPv4 one.
            listen6 = if self.ipv6 { "    listen [::]:80 backlog=4096;\n" } else { "" },
        );
        let path = dir.join("nginx.conf");
        fs::write(&path, conf)?;
        let mut cmd = rs.ns.cmd("nginx");
        cmd.args(["-c", path.to_str().context("path")?, "-e", &format!("{d}/error.log")]);
        self.servers.push(Proc::spawn(&format!("nginx@{}", rs.name), &mut cmd)?);
        let mut addrs = vec![IpAddr::V4(rs.ip)];
        if self.ipv6 {
            addrs.push(IpAddr::V6(rs.ip6()));
        }
        for addr in addrs {
            let target = SocketAddr::from((addr, 80));
            let ready = self.client.ns.within(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                false
            })?;
            if !ready {
                bail!("nginx on {} did not accept connections on {target} within 10 s", rs.name);
            }
        }
        Ok(())
    }

    /// Stops nginx on real server `index` (SIGTERM, waiting for the exit): its port then
    /// refuses connections.
    pub fn stop_http_on(&mut self, index: usize) -> Result<()> {
        let name = format!("nginx@{}", self.real_servers[index].name);
        let at = self.servers.iter().position(|p| p.name == name).with_context(|| format!("{name} is not running"))?;
        self.servers.remove(at).stop(libc::SIGTERM, Duration::from_secs(10))?;
        Ok(())
    }

    /// Makes a self-signed certificate (openssl) for nginx's TLS listener on port 443; call
    /// before `start_http`.
    pub fn enable_tls(&mut self) -> Result<()> {
        let (cert, key) = (self.dir.join("tls-cert.pem"), self.dir.join("tls-key.pem"));
        sh(std::process::Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lvs-test.example",
            "-keyout",
            key.to_str().context("path")?,
            "-out",
            cert.to_str().context("path")?,
        ]))?;
        self.tls = Some((cert, key));
        Ok(())
    }

    /// Starts a UDP responder on every real server, answering each datagram to VIP:`port` with
    /// the server's name. Needs `prepare_real_servers` first (the VIP on lo).
    ///
    /// It binds VIP:port, not 0.0.0.0:port: a socket bound to the wildcard answers from the
    /// address the route picks, the real server's own, and the client (connected to the VIP)
    /// would discard the reply. DNS servers bind each address for the same reason.
    pub fn start_udp(&mut self, port: u16) -> Result<()> {
        for rs in &self.real_servers {
            self.udp.push(UdpResponder::start(&rs.ns, SocketAddr::from((VIP, port)), &rs.name)?);
        }
        Ok(())
    }

    /// A keepalived.conf for one DR service on the VIP with the given real-server weights.
    #[must_use]
    pub fn keepalived_conf(&self, lb_algo: &str, port: u16, protocol: &str, weights: &[u32]) -> String {
        let mut c = format!(
            "! lvs-xdp test bed {tag}\nvirtual_server {VIP} {port} {{\n    lb_algo {lb_algo}\n    lb_kind DR\n    protocol {protocol}\n",
            tag = self.tag
        );
        for (rs, w) in self.real_servers.iter().zip(weights) {
            c.push_str(&format!("    real_server {} {port} {{\n        weight {w}\n    }}\n", rs.ip));
        }
        c.push_str("}\n");
        c
    }

    /// A keepalived.conf for one DR service on the VIP6, its real servers at their IPv6
    /// addresses, with the given weights. Needs `enable_ipv6`.
    #[must_use]
    pub fn keepalived_conf_v6(&self, lb_algo: &str, port: u16, protocol: &str, weights: &[u32]) -> String {
        let mut c = format!(
            "! lvs-xdp test bed {tag}, IPv6\nvirtual_server {VIP6} {port} {{\n    lb_algo {lb_algo}\n    lb_kind DR\n    protocol {protocol}\n",
            tag = self.tag
        );
        for (rs, w) in self.real_servers.iter().zip(weights) {
            c.push_str(&format!("    real_server {} {port} {{\n        weight {w}\n    }}\n", rs.ip6()));
        }
        c.push_str("}\n");
        c
    }

    /// Starts `lvs-agent run` in the director namespace and waits until it forwards.
    pub fn start_agent(&self, agent: &Path, conf: &str, extra: &[&str]) -> Result<Proc> {
        self.start_agent_on(0, agent, conf, extra)
    }

    /// Starts `lvs-agent run` on director `index` (see `director_at`) and waits until it
    /// forwards. Each director's agent has its own config file and its own BPF maps.
    pub fn start_agent_on(&self, index: usize, agent: &Path, conf: &str, extra: &[&str]) -> Result<Proc> {
        let director = self.director_at(index);
        let (file, name) = match index {
            0 => ("keepalived.conf".to_string(), "lvs-agent".to_string()),
            _ => (format!("keepalived-{}.conf", director.name), format!("lvs-agent@{}", director.name)),
        };
        let path = self.dir.join(file);
        fs::write(&path, conf)?;
        let mut cmd = director.ns.cmd(agent.to_str().context("agent path")?);
        cmd.args(["run", "-f", path.to_str().context("path")?, "-i", director.iface]).args(extra);
        let mut proc = Proc::spawn(&name, &mut cmd)?;
        proc.wait_for_line("forwarding", Duration::from_secs(30))?;
        Ok(proc)
    }

    /// Starts the agent on the first director to outlive the caller (`cargo xtask lab
    /// --keep`): its output goes to `log`, and this returns its pid once it forwards.
    pub fn start_agent_detached(&self, agent: &Path, conf: &str, log: &Path) -> Result<u32> {
        let path = self.dir.join("keepalived.conf");
        fs::write(&path, conf)?;
        let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = self.director.ns.cmd(agent.to_str().context("agent path")?);
        cmd.args(["run", "-f", path.to_str().context("path")?, "-i", self.director.iface])
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut child = cmd.spawn().context("starting lvs-agent")?;
        // The log file is the only channel left: read it until the agent says it forwards
        // (bounded), or exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if fs::read_to_string(log).unwrap_or_default().contains("forwarding") {
                return Ok(child.id());
            }
            if let Some(status) = child.try_wait()? {
                bail!("lvs-agent exited ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("lvs-agent did not start forwarding within 30 s; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DrLab {
    fn drop(&mut self) {
        self.servers.clear();
        self.udp.clear();
        // Namespaces go with their guards after this; nothing was created in the root one.
        let _ = fs::remove_dir_all(&self.dir);
    }
}
