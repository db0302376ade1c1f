//! The OCI runtime spec (config.json) of a container: the image's config merged with
//! what the task asks for, under the secure defaults trusted runtimes apply (Docker's):
//! its 14 default capabilities, no_new_privs, masked and read-only /proc paths, all
//! devices denied but the standard set, a seccomp filter, and the namespaces of a
//! container. Pure: paths in, a `Spec` out.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxResourcesBuilder,
    LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};
use shoal_api::ContainerSpec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command to run: the image has no Entrypoint or Cmd and the task gives none")]
    NoCommand,
    #[error("user {0:?} is not in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("group {0:?} is not in the image's /etc/group")]
    UnknownGroup(String),
    #[error("invalid runtime spec: {0}")]
    Build(String),
}

fn build_err(e: impl std::fmt::Display) -> SpecError {
    SpecError::Build(e.to_string())
}

/// What a task asks of its container, over the image's defaults, with what the agent
/// resolved for it (the hostname, mounts as host paths, the network namespace).
#[derive(Debug, Clone, Default)]
pub struct ContainerRequest {
    /// The container as the task declares it: command, entrypoint, env, workdir,
    /// user and resource limits are read from here; its mounts are resolved below.
    pub container: ContainerSpec,
    pub hostname: String,
    pub terminal: bool,
    pub mounts: Vec<ContainerMount>,
    /// The network namespace to join (the node network's); None: a new, empty one.
    pub netns: Option<PathBuf>,
}

impl ContainerRequest {
    /// CPUs (1.5 = one and a half); None: unlimited.
    fn cpu_limit(&self) -> Option<f64> {
        let limits = self.container.resources.limits.as_ref()?;
        Some(limits.cpu).filter(|c| *c > 0.0)
    }

    /// Bytes; None: unlimited.
    fn memory_limit(&self) -> Option<u64> {
        let limits = self.container.resources.limits.as_ref()?;
        Some(limits.memory.0).filter(|m| *m > 0)
    }
}

/// A mount the agent has resolved: a host path to bind (a bind mount's source, or a
/// named volume's directory), or a fresh tmpfs.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerMount {
    /// None: a tmpfs.
    pub source: Option<PathBuf>,
    pub target: String,
    pub read_only: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
}

fn mount_of(m: &ContainerMount) -> Result<oci_spec::runtime::Mount, SpecError> {
    let mut options: Vec<String> = Vec::new();
    let b = MountBuilder::default().destination(&m.target);
    let b = match &m.source {
        Some(source) => {
            options.extend(["rbind".into(), "rprivate".into()]);
            b.typ("bind").source(source)
        }
        None => {
            // Docker's --tmpfs defaults.
            options.extend(["nosuid", "nodev", "noexec", "mode=1777"].map(String::from));
            if let Some(size) = m.size {
                options.push(format!("size={size}"));
            }
            b.typ("tmpfs").source("tmpfs")
        }
    };
    if m.read_only {
        options.push("ro".into());
    }
    b.options(options).build().map_err(build_err)
}

/// Docker's default capability set: the 14 a container gets unless told otherwise.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Syscalls refused with EPERM: the ones Docker's default profile keeps from containers
/// without extra capabilities (kernel modules, mounts, namespaces, tracing, clocks,
/// keyrings, reboot, BPF, ...). Everything else is allowed.
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The process's argv: the task's entrypoint and command (its arguments); the command
/// alone; or the image's Entrypoint and Cmd.
fn args(config: &ImageConfiguration, req: &ContainerRequest) -> Result<Vec<String>, SpecError> {
    let image = config.config().as_ref();
    let args = match &req.container.entrypoint {
        Some(e) => e.iter().chain(&req.container.command).cloned().collect(),
        None if !req.container.command.is_empty() => req.container.command.clone(),
        None => {
            let mut args = image
                .and_then(|c| c.entrypoint().clone())
                .unwrap_or_default();
            args.extend(image.and_then(|c| c.cmd().clone()).unwrap_or_default());
            args
        }
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// The image's environment with the task's on top; PATH always set.
fn env(config: &ImageConfiguration, req: &ContainerRequest) -> Vec<String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let image = config.config().as_ref().and_then(|c| c.env().clone());
    for kv in image.unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        vars.insert(k.to_string(), v.to_string());
    }
    vars.extend(req.container.env.clone());
    vars.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    vars.entry("HOSTNAME".into())
        .or_insert_with(|| req.hostname.clone());
    vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The entry of a passwd- or group-style file of the rootfs whose name (or, given a
/// number, id) is `who`: (id, primary gid; for groups the gid twice).
fn lookup(rootfs: &Path, file: &str, who: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.first() != Some(&who) && f.get(2) != Some(&who) {
            return None;
        }
        let id = f.get(2)?.parse().ok()?;
        Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id)))
    })
}

/// uid and gid for the image's or the task's `user`, resolved in the rootfs as Docker
/// does: a number needs no passwd entry (its gid is then 0), a name does.
pub fn user(rootfs: &Path, spec: Option<&str>) -> Result<(u32, u32), SpecError> {
    let spec = spec.unwrap_or("").trim();
    if spec.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match (lookup(rootfs, "etc/passwd", u), u.parse::<u32>()) {
        (Some(found), _) => found,
        (None, Ok(uid)) => (uid, 0),
        (None, Err(_)) => return Err(SpecError::UnknownUser(u.into())),
    };
    let gid = match g {
        None => primary,
        Some(g) => match (lookup(rootfs, "etc/group", g), g.parse::<u32>()) {
            (Some((gid, _)), _) => gid,
            (None, Ok(gid)) => gid,
            (None, Err(_)) => return Err(SpecError::UnknownGroup(g.into())),
        },
    };
    Ok((uid, gid))
}

/// The runtime spec for a container whose root filesystem is at `rootfs` (mounted).
pub fn runtime_spec(
    config: &ImageConfiguration,
    req: &ContainerRequest,
    rootfs: &Path,
) -> Result<Spec, SpecError> {
    let image = config.config().as_ref();
    let cwd = req
        .container
        .workdir
        .clone()
        .or_else(|| image.and_then(|c| c.working_dir().clone()))
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let user_spec = req
        .container
        .user
        .clone()
        .or_else(|| image.and_then(|c| c.user().clone()));
    let (uid, gid) = user(rootfs, user_spec.as_deref())?;
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(build_err)?;
    let process = ProcessBuilder::default()
        .terminal(req.terminal)
        .args(args(config, req)?)
        .env(env(config, req))
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(uid)
                .gid(gid)
                .build()
                .map_err(build_err)?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(build_err)?;

    let mut resources = LinuxResourcesBuilder::default().devices(devices()?);
    if let Some(bytes) = req.memory_limit() {
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes as i64)
                .build()
                .map_err(build_err)?,
        );
    }
    if let Some(cpus) = req.cpu_limit() {
        let period = 100_000u64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((cpus * period as f64) as i64)
                .build()
                .map_err(build_err)?,
        );
    }
    let defaults = oci_spec::runtime::Linux::default();
    let mut namespaces = defaults.namespaces().clone().unwrap_or_default();
    if let Some(path) = &req.netns {
        for ns in namespaces.iter_mut() {
            if ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network {
                ns.set_path(Some(path.clone()));
            }
        }
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .resources(resources.build().map_err(build_err)?)
        .seccomp(seccomp()?)
        .build()
        .map_err(build_err)?;
    let mut spec = Spec::default();
    spec.set_process(Some(process))
        .set_root(Some(
            RootBuilder::default()
                .path(rootfs)
                .readonly(false)
                .build()
                .map_err(build_err)?,
        ))
        .set_hostname(Some(req.hostname.clone()))
        .set_linux(Some(linux));
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in &req.mounts {
        mounts.push(mount_of(m)?);
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

/// Every device denied, then the standard set (as Docker and runc allow them).
fn devices() -> Result<Vec<oci_spec::runtime::LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access("rwm");
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().map_err(build_err)
    };
    let c = LinuxDeviceType::C;
    Ok(vec![
        rule(false, LinuxDeviceType::A, None, None)?,
        rule(true, c, Some(1), Some(3))?, // null
        rule(true, c, Some(1), Some(5))?, // zero
        rule(true, c, Some(1), Some(7))?, // full
        rule(true, c, Some(1), Some(8))?, // random
        rule(true, c, Some(1), Some(9))?, // urandom
        rule(true, c, Some(5), Some(0))?, // tty
        rule(true, c, Some(5), Some(2))?, // ptmx
        rule(true, c, Some(136), None)?,  // pts
    ])
}

fn seccomp() -> Result<oci_spec::runtime::LinuxSeccomp, SpecError> {
    let denied = LinuxSyscallBuilder::default()
        .names(
            DENIED_SYSCALLS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(libc::EPERM as u32)
        .build()
        .map_err(build_err)?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(vec![denied])
        .build()
        .map_err(build_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(json: &str) -> ImageConfiguration {
        serde_json::from_str(json).expect("config")
    }

    const BUSYBOX: &str = r#"{"architecture":"amd64","os":"linux",
        "config":{"Env":["PATH=/bin","MODE=image"],"Entrypoint":["/bin/tini","--"],"Cmd":["sh"],"WorkingDir":"/srv","User":"app"},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("etc")).expect("etc");
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        dir
    }

    #[test]
    fn command_entrypoint_and_cmd_combine_as_in_docker() {
        let c = image(BUSYBOX);
        let req = ContainerRequest::default();
        assert_eq!(args(&c, &req).expect("args"), ["/bin/tini", "--", "sh"]);
        let req = ContainerRequest {
            container: ContainerSpec {
                entrypoint: Some(vec!["/bin/env".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            args(&c, &req).expect("args"),
            ["/bin/env"],
            "Cmd is dropped too"
        );
        let req = ContainerRequest {
            container: ContainerSpec {
                command: vec!["echo".into(), "hi".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(args(&c, &req).expect("args"), ["echo", "hi"]);
        let req = ContainerRequest {
            container: ContainerSpec {
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                command: vec!["echo hi".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            args(&c, &req).expect("args"),
            ["/bin/sh", "-c", "echo hi"],
            "with an entrypoint, the command is its arguments"
        );
        let bare = image(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        assert!(matches!(
            args(&bare, &ContainerRequest::default()),
            Err(SpecError::NoCommand)
        ));
    }

    #[test]
    fn mounts_follow_the_defaults_binds_and_tmpfs_as_docker_makes_them() {
        let root = rootfs();
        let req = ContainerRequest {
            container: ContainerSpec {
                command: vec!["true".into()],
                ..Default::default()
            },
            mounts: vec![
                ContainerMount {
                    source: Some("/srv/data".into()),
                    target: "/data".into(),
                    read_only: true,
                    size: None,
                },
                ContainerMount {
                    source: None,
                    target: "/scratch".into(),
                    read_only: false,
                    size: Some(1 << 20),
                },
            ],
            ..Default::default()
        };
        let spec = runtime_spec(&image(BUSYBOX), &req, root.path()).expect("spec");
        let mounts = spec.mounts().clone().unwrap_or_default();
        let at = |d: &str| {
            mounts
                .iter()
                .find(|m| m.destination() == Path::new(d))
                .unwrap_or_else(|| panic!("no mount at {d}"))
        };
        assert_eq!(at("/proc").typ().as_deref(), Some("proc"), "defaults stay");
        let data = at("/data");
        assert_eq!(data.typ().as_deref(), Some("bind"));
        assert_eq!(data.source().as_deref(), Some(Path::new("/srv/data")));
        let opts = data.options().clone().unwrap_or_default();
        assert!(opts.contains(&"rbind".to_string()) && opts.contains(&"ro".to_string()));
        let scratch = at("/scratch");
        assert_eq!(scratch.typ().as_deref(), Some("tmpfs"));
        let opts = scratch.options().clone().unwrap_or_default();
        assert!(opts.contains(&"size=1048576".to_string()), "{opts:?}");
        assert!(opts.contains(&"noexec".to_string()) && !opts.contains(&"ro".to_string()));
    }

    #[test]
    fn env_workdir_and_user_come_from_the_image_unless_the_task_says() {
        let root = rootfs();
        let c = image(BUSYBOX);
        let req = ContainerRequest {
            container: ContainerSpec {
                env: [("MODE".to_string(), "task".to_string())].into(),
                ..Default::default()
            },
            hostname: "h".into(),
            ..Default::default()
        };
        let spec = runtime_spec(&c, &req, root.path()).expect("spec");
        let p = spec.process().as_ref().expect("process");
        let env = p.env().clone().unwrap_or_default();
        assert!(env.contains(&"MODE=task".to_string()), "{env:?}");
        assert!(env.contains(&"PATH=/bin".to_string()), "{env:?}");
        assert_eq!(p.cwd(), Path::new("/srv"));
        assert_eq!((p.user().uid(), p.user().gid()), (1000, 1001));
        assert_eq!(p.no_new_privileges(), Some(true));
    }

    #[test]
    fn users_resolve_by_name_or_number() {
        let root = rootfs();
        assert_eq!(user(root.path(), None).expect("root"), (0, 0));
        assert_eq!(user(root.path(), Some("app")).expect("app"), (1000, 1001));
        assert_eq!(
            user(root.path(), Some("1000:staff")).expect("app"),
            (1000, 50)
        );
        assert_eq!(user(root.path(), Some("4242")).expect("number"), (4242, 0));
        assert!(matches!(
            user(root.path(), Some("ghost")),
            Err(SpecError::UnknownUser(_))
        ));
        assert!(matches!(
            user(root.path(), Some("app:ghosts")),
            Err(SpecError::UnknownGroup(_))
        ));
    }
}
