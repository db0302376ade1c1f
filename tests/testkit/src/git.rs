//! Real git servers on loopback: `git daemon` (git://) and `git http-backend` behind
//! lighttpd (smart HTTP, set up as git's documentation shows), serving a bare repository
//! that a test commits to through a work tree, the way a user pushes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=shoal test",
            "-c",
            "user.email=test@shoal.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run git ({e}); run hack/test.sh, which installs it"));
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository `<root>/repos/cluster.git` and a work tree to commit and push from.
pub struct GitRepo {
    pub root: PathBuf,
    work: PathBuf,
}

impl GitRepo {
    pub fn new(root: &Path) -> GitRepo {
        let repos = root.join("repos");
        std::fs::create_dir_all(&repos).expect("repos dir");
        git(
            &repos,
            &["init", "-q", "--bare", "-b", "main", "cluster.git"],
        );
        let work = root.join("work");
        std::fs::create_dir_all(&work).expect("work dir");
        git(&work, &["init", "-q", "-b", "main"]);
        let bare = repos.join("cluster.git");
        git(
            &work,
            &["remote", "add", "origin", &bare.display().to_string()],
        );
        GitRepo {
            root: root.to_path_buf(),
            work,
        }
    }

    /// The folder the servers export.
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.work.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).expect("folder in the work tree");
        }
        std::fs::write(file, text).expect("write to the work tree");
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.work.join(path)).expect("remove from the work tree");
    }

    /// An annotated tag on the last commit, pushed.
    pub fn tag(&self, name: &str) {
        git(&self.work, &["tag", "-a", name, "-m", name]);
        git(&self.work, &["push", "-q", "origin", name]);
    }

    /// Commits everything and pushes to the bare repository; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// A server process killed on drop.
pub struct GitServer {
    child: Child,
    pub url: String,
    /// For ssh: the `GIT_SSH_COMMAND` a client needs (its key, this host's key trusted).
    pub ssh_command: Option<String>,
    _config: Option<tempfile::TempDir>,
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_listening(port: u16, what: &str) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_for_port(addr, Duration::from_secs(20)),
        "{what} did not start listening on {addr}"
    );
}

impl GitServer {
    /// `git daemon` exporting `repo`: `git://127.0.0.1:PORT/cluster.git`.
    pub fn daemon(repo: &GitRepo) -> GitServer {
        let port = free_port();
        let repos = repo.repos();
        // git-daemon itself, not `git daemon`: a git that runs its dashed commands as
        // children would leave the daemon behind when the test kills `git`.
        let exec_path = git(Path::new("/"), &["--exec-path"]);
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", repos.display()))
            .arg(&repos)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        wait_listening(port, "git daemon");
        GitServer {
            child,
            url: format!("git://127.0.0.1:{port}/cluster.git"),
            ssh_command: None,
            _config: None,
        }
    }

    /// `git http-backend` as CGI under lighttpd: `http://127.0.0.1:PORT/git/cluster.git`.
    pub fn http(repo: &GitRepo) -> GitServer {
        let port = free_port();
        let exec_path = git(Path::new("/"), &["--exec-path"]);
        let config = tempfile::tempdir().expect("lighttpd dir");
        let conf = config.path().join("lighttpd.conf");
        std::fs::write(
            &conf,
            format!(
                r#"server.document-root = "{root}"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{dir}/error.log"
server.modules = ("mod_alias", "mod_cgi", "mod_setenv")
alias.url = ("/git/" => "{exec_path}/git-http-backend/")
$HTTP["url"] =~ "^/git/" {{
    cgi.assign = ("" => "")
    setenv.add-environment = (
        "GIT_PROJECT_ROOT" => "{root}",
        "GIT_HTTP_EXPORT_ALL" => ""
    )
}}
"#,
                root = repo.repos().display(),
                dir = config.path().display(),
            ),
        )
        .expect("lighttpd config");
        let child = Command::new("lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start lighttpd ({e}); run hack/test.sh, which installs it")
            });
        wait_listening(port, "lighttpd");
        GitServer {
            child,
            url: format!("http://127.0.0.1:{port}/git/cluster.git"),
            ssh_command: None,
            _config: Some(config),
        }
    }

    /// OpenSSH's `sshd` with its own host and client keys, serving the repository as
    /// `ssh://root@127.0.0.1:PORT/<path>/cluster.git` to the key in `ssh_command`.
    pub fn ssh(repo: &GitRepo) -> GitServer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("sshd dir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(d.join(key))
                .output()
                .expect("ssh-keygen runs");
            assert!(out.status.success(), "ssh-keygen failed");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {d}/sshd.pid\n",
                d = d.display()
            ),
        )
        .expect("sshd_config");
        // sshd insists on its privilege separation folder.
        let _ = std::fs::create_dir_all("/run/sshd");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start sshd ({e}); run hack/test.sh, which installs openssh-server")
            });
        wait_listening(port, "sshd");
        GitServer {
            child,
            url: format!(
                "ssh://{user}@127.0.0.1:{port}{}/cluster.git",
                repo.repos().display()
            ),
            ssh_command: Some(format!(
                "ssh -i {}/client_key -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes",
                d.display()
            )),
            _config: Some(dir),
        }
    }
}
