//! A real Samba file server (smbd) speaking SMB1 (NT1) in a namespace a test made, and smbclient
//! logins to it from another. Accounts live in the server's own files: nss_wrapper gives smbd the
//! Unix users Samba needs without touching the machine's /etc/passwd. smbd runs until the
//! namespace guard is dropped; everything it writes stays in its [`TempDir`].

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::workspace::TempDir;

/// Where Debian puts nss_wrapper (package libnss-wrapper), per architecture.
fn nss_wrapper() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("libnss_wrapper.so"))
        .find(|lib| lib.exists())
}

/// Whether smbd, pdbedit, smbclient and nss_wrapper are here (setup.sh installs them).
pub fn installed() -> bool {
    let tool = |name: &str| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ["smbd", "pdbedit", "smbclient"].into_iter().all(tool) && nss_wrapper().is_some()
}

/// How smbclient logs in over SMB1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Extended security: NTLMSSP inside SPNEGO (smbclient's default).
    Spnego,
    /// `client use spnego = no`: smbclient then drops extended security altogether and sends
    /// the account and domain in clear beside the LM and NTLMv2 responses.
    WithoutExtendedSecurity,
}

/// smbd on 445 and 139 (NetBIOS session service), SMB1 allowed, one share named `pub`.
pub struct Samba {
    dir: TempDir,
    pub address: Ipv4Addr,
    pub workgroup: String,
}

impl Samba {
    /// Starts smbd in `ns` on `address` with `accounts` (user, password) and waits until it
    /// listens on both ports.
    pub fn start_nt1(
        ns: &Netns,
        address: Ipv4Addr,
        workgroup: &str,
        accounts: &[(&str, &str)],
    ) -> Samba {
        let dir = TempDir::new("samba");
        let d = dir.path();
        for sub in [
            "private", "lock", "state", "cache", "pid", "ncalrpc", "binddns", "share", "client",
        ] {
            std::fs::create_dir_all(d.join(sub)).expect("samba dirs");
        }
        // smbd needs its guest account (`nobody`) even with guests refused.
        let mut passwd = String::from(
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n",
        );
        for (uid, (user, _)) in (2001..).zip(accounts) {
            passwd.push_str(&format!("{user}:x:{uid}:2000::/nonexistent:/bin/false\n"));
        }
        std::fs::write(d.join("passwd"), passwd).expect("passwd");
        std::fs::write(
            d.join("group"),
            "root:x:0:\nnogroup:x:65534:\nusers:x:2000:\n",
        )
        .expect("group");
        let p = |sub: &str| d.join(sub).display().to_string();
        // NT1 and `raw NTLMv2 auth` let Samba 4.17 accept SMB1 logins with and without
        // extended security; `disable netbios` keeps nmbd's name service out of the capture.
        let conf = format!(
            "[global]\n\
             netbios name = FILESRV\n\
             workgroup = {workgroup}\n\
             server role = standalone server\n\
             security = user\n\
             map to guest = never\n\
             passdb backend = tdbsam:{private}/passdb.tdb\n\
             private dir = {private}\n\
             lock directory = {lock}\n\
             state directory = {state}\n\
             cache directory = {cache}\n\
             pid directory = {pid}\n\
             ncalrpc dir = {ncalrpc}\n\
             binddns dir = {binddns}\n\
             log file = {log}\n\
             interfaces = {address}/24\n\
             bind interfaces only = yes\n\
             smb ports = 445 139\n\
             disable netbios = yes\n\
             server min protocol = NT1\n\
             ntlm auth = yes\n\
             raw NTLMv2 auth = yes\n\
             load printers = no\n\
             printcap name = /dev/null\n\
             disable spoolss = yes\n\
             [pub]\n\
             path = {share}\n\
             read only = yes\n",
            private = p("private"),
            lock = p("lock"),
            state = p("state"),
            cache = p("cache"),
            pid = p("pid"),
            ncalrpc = p("ncalrpc"),
            binddns = p("binddns"),
            log = p("smbd.log"),
            share = p("share"),
        );
        std::fs::write(d.join("smb.conf"), conf).expect("smb.conf");
        let samba = Samba {
            dir,
            address,
            workgroup: workgroup.to_string(),
        };
        for (user, password) in accounts {
            samba.add_account(user, password);
        }
        let preload = samba.nss_env();
        let conf = samba.conf();
        let mut args: Vec<&str> = preload.iter().map(String::as_str).collect();
        args.extend(["smbd", "--foreground", "--no-process-group", "-s", &conf]);
        ns.spawn("env", &args).expect("smbd starts");
        samba.wait_listening(ns);
        samba
    }

    fn conf(&self) -> String {
        self.dir.path().join("smb.conf").display().to_string()
    }

    /// The environment that makes smbd and pdbedit see this server's accounts.
    fn nss_env(&self) -> Vec<String> {
        let lib = nss_wrapper().expect("nss_wrapper");
        let d = self.dir.path();
        vec![
            format!("LD_PRELOAD={}", lib.display()),
            format!("NSS_WRAPPER_PASSWD={}", d.join("passwd").display()),
            format!("NSS_WRAPPER_GROUP={}", d.join("group").display()),
        ]
    }

    fn add_account(&self, user: &str, password: &str) {
        let mut pdbedit = Command::new("env")
            .args(self.nss_env())
            .args(["pdbedit", "-s", &self.conf(), "-t", "-a", "-u", user])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pdbedit");
        use std::io::Write;
        let mut stdin = pdbedit.stdin.take().expect("stdin");
        writeln!(stdin, "{password}\n{password}").expect("password");
        drop(stdin);
        let out = pdbedit.wait_with_output().expect("pdbedit ends");
        assert!(
            out.status.success(),
            "pdbedit {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_listening(&self, ns: &Netns) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listening = ns.run("ss", &["-ltnH"]).unwrap_or_default();
            let on = |port: u16| listening.contains(&format!("{}:{port} ", self.address));
            if on(445) && on(139) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "smbd did not listen on 445 and 139: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// smbd's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smbd.log")).unwrap_or_default()
    }

    /// smbclient from `ns`, as `workstation`, limited to SMB1, lists the `pub` share on `port`
    /// with `security`. `Ok` when the login and listing worked, else smbclient's error (e.g.
    /// `NT_STATUS_LOGON_FAILURE`).
    pub fn login(
        &self,
        ns: &Netns,
        workstation: &str,
        port: u16,
        security: Security,
        user: &str,
        password: &str,
    ) -> Result<(), String> {
        let client = self.dir.path().join("client");
        let client_conf = client.join(format!("{workstation}.conf"));
        let dirs = client.display();
        // smbclient keeps its state in these directories instead of the machine's.
        let conf = format!(
            "[global]\n\
             netbios name = {workstation}\n\
             client use kerberos = off\n\
             lock directory = {dirs}\n\
             state directory = {dirs}\n\
             cache directory = {dirs}\n\
             private dir = {dirs}\n"
        );
        std::fs::write(&client_conf, conf).expect("client conf");
        let spnego = match security {
            Security::Spnego => "yes",
            Security::WithoutExtendedSecurity => "no",
        };
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name(), "smbclient"])
            .arg("-s")
            .arg(&client_conf)
            .args([
                "--option=client min protocol=NT1",
                "--option=client max protocol=NT1",
                &format!("--option=client use spnego={spnego}"),
                "--port",
                &port.to_string(),
                "-U",
                &format!("{}\\{user}%{password}", self.workgroup),
                &format!("//{}/pub", self.address),
                "-c",
                "ls",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("smbclient runs");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}
