//! The kernel features the LB and the agent rely on, with the Linux version
//! that brought each, and the check both run at start: a kernel older than
//! a feature it needs ends the start with one line that names the feature
//! and the version that has it (the README's table is this list).
use std::fmt;

/// Which binary needs a feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// `lb-user run`.
    Lb,
    /// `backend-agent`.
    Agent,
    Both,
}

impl User {
    fn needs(self, who: User) -> bool {
        self == User::Both || self == who
    }

    pub fn name(self) -> &'static str {
        match self {
            User::Lb => "lb-user",
            User::Agent => "backend-agent",
            User::Both => "both",
        }
    }
}

/// A Linux version, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// The version at the start of a kernel release string (`6.18.44-fc`).
    pub fn of_release(release: &str) -> Option<Self> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One kernel feature: what it is, what it is for, and since when.
#[derive(Clone, Copy, Debug)]
pub struct Feature {
    pub name: &'static str,
    pub used_for: &'static str,
    pub since: Version,
    pub user: User,
}

const fn feature(
    name: &'static str,
    used_for: &'static str,
    since: (u32, u32),
    user: User,
) -> Feature {
    Feature {
        name,
        used_for,
        since: Version::new(since.0, since.1),
        user,
    }
}

/// Every feature, oldest first.
pub const FEATURES: &[Feature] = &[
    feature(
        "bpf_fib_lookup in XDP",
        "next hops toward IPIP backends",
        (4, 18),
        User::Lb,
    ),
    feature(
        "BTF-defined maps",
        "maps whose fields bpftool names",
        (5, 2),
        User::Both,
    ),
    feature(
        "global variables in BPF",
        "settings fixed at load",
        (5, 2),
        User::Both,
    ),
    feature(
        "bpf_skb_adjust_room with encapsulation flags",
        "IPIP for GSO super-packets (tc), its removal on the backend",
        (5, 2),
        User::Both,
    ),
    feature(
        "mmapable arrays (BPF_F_MMAPABLE)",
        "the change count lb-user bumps",
        (5, 5),
        User::Lb,
    ),
    feature("bpf_jiffies64", "the coarse clock's tick", (5, 5), User::Lb),
    feature(
        "batch map operations",
        "reading the server list at scale",
        (5, 6),
        User::Lb,
    ),
    feature(
        "BPF ring buffer",
        "the data path's log records (aya-log)",
        (5, 8),
        User::Lb,
    ),
    feature(
        "XDP links (bpf_link)",
        "XDP that stays attached across restarts",
        (5, 9),
        User::Lb,
    ),
    feature(
        "bpf_ktime_get_coarse_ns",
        "announcement stamps",
        (5, 11),
        User::Lb,
    ),
    feature(
        "bpf_check_mtu",
        "telling a GSO super-packet from a wire frame",
        (5, 12),
        User::Lb,
    ),
    feature(
        "BPF atomic fetch-and-add",
        "the change count XDP bumps",
        (5, 12),
        User::Lb,
    ),
    feature(
        "TCX links",
        "tc programs owned by their process: the GSO program, the agent's decapsulation",
        (6, 6),
        User::Both,
    ),
];

/// The oldest kernel that has every feature `who` needs.
pub fn minimum(who: User) -> Version {
    FEATURES
        .iter()
        .filter(|f| f.user.needs(who))
        .map(|f| f.since)
        .max()
        .unwrap_or(Version::new(0, 0))
}

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read the kernel's release ({0}): is /proc mounted?")]
    Release(std::io::Error),
    #[error("cannot read a version in the kernel release {0:?}")]
    Unparsed(String),
    #[error(
        "this kernel ({release}) lacks {name}, which {user} needs for {used_for}: Linux {since} or later has it"
    )]
    Missing {
        release: String,
        name: &'static str,
        user: &'static str,
        used_for: &'static str,
        since: Version,
    },
}

/// The running kernel's release string.
pub fn release() -> Result<String, KernelError> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_owned())
        .map_err(KernelError::Release)
}

/// The features `who` needs that kernel `release` lacks, newest first.
pub fn missing(release: &str, who: User) -> Result<Vec<&'static Feature>, KernelError> {
    let version =
        Version::of_release(release).ok_or_else(|| KernelError::Unparsed(release.to_owned()))?;
    let mut lacking: Vec<&Feature> = FEATURES
        .iter()
        .filter(|f| f.user.needs(who) && f.since > version)
        .collect();
    lacking.sort_by_key(|f| std::cmp::Reverse(f.since));
    Ok(lacking)
}

/// Fails with the newest feature that `who` needs and this kernel lacks.
pub fn require(who: User) -> Result<(), KernelError> {
    let release = release()?;
    match missing(&release, who)?.first() {
        None => Ok(()),
        Some(f) => Err(KernelError::Missing {
            release,
            name: f.name,
            user: who.name(),
            used_for: f.used_for,
            since: f.since,
        }),
    }
}

/// The feature table with this kernel's verdict on each line (what
/// `lb-user check-kernel` prints).
pub fn report(release: &str) -> Result<String, KernelError> {
    let version =
        Version::of_release(release).ok_or_else(|| KernelError::Unparsed(release.to_owned()))?;
    let mut out = format!(
        "kernel {release}; lb-user needs Linux {}, backend-agent Linux {}\n",
        minimum(User::Lb),
        minimum(User::Agent)
    );
    for f in FEATURES {
        let verdict = if f.since <= version { "ok" } else { "MISSING" };
        out.push_str(&format!(
            "{verdict:<8} {:<46} Linux {:<5} {:<13} {}\n",
            f.name,
            f.since.to_string(),
            f.user.name(),
            f.used_for
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_start_of_a_release() {
        assert_eq!(
            Version::of_release("6.18.44-fc-v1147"),
            Some(Version::new(6, 18))
        );
        assert_eq!(Version::of_release("5.4.0"), Some(Version::new(5, 4)));
        assert_eq!(Version::of_release("6.6"), Some(Version::new(6, 6)));
        assert_eq!(Version::of_release("linux"), None);
    }

    #[test]
    fn an_old_kernel_is_refused_with_the_newest_feature_it_lacks() {
        assert!(missing("6.6.0", User::Lb).unwrap().is_empty());
        assert!(missing("6.18.44", User::Agent).unwrap().is_empty());
        let lacking = missing("5.15.0-generic", User::Lb).unwrap();
        assert_eq!(lacking[0].name, "TCX links");
        assert_eq!(lacking.len(), 1);
        let lacking = missing("5.10.0", User::Lb).unwrap();
        assert_eq!(lacking[0].since, Version::new(6, 6));
        assert!(lacking.iter().any(|f| f.name == "bpf_check_mtu"));
        assert!(matches!(
            missing("x", User::Lb),
            Err(KernelError::Unparsed(_))
        ));
        assert_eq!(minimum(User::Lb), Version::new(6, 6));
        assert_eq!(minimum(User::Agent), Version::new(6, 6));
    }

    #[test]
    fn the_readme_names_every_feature_with_its_version() {
        let readme = include_str!("../../README.md");
        for f in FEATURES {
            let row = format!("| {} | {} |", f.name, f.since);
            assert!(readme.contains(&row), "README lacks the row `{row}`");
        }
    }
}
