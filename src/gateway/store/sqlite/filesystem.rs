//! Whether the SQLite file is on a network file system, where SQLite's
//! locks may not hold and its WAL's shared memory is not shared between
//! hosts (<https://www.sqlite.org/wal.html>, "Overview"). Read from
//! `statfs`'s file-system type on Linux; elsewhere nothing is known.

use std::path::Path;

/// The network and cluster file systems, by the magic number Linux's
/// `statfs` gives (`linux/magic.h`), and the name a warning gives them.
/// FUSE is left out: it is as often local (rootless containers' overlay)
/// as remote, and a warning that is usually wrong is ignored.
const NETWORK_FILESYSTEMS: [(u32, &str); 10] = [
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (
        0x0102_1997,
        "9p (a virtual machine's or WSL's shared folder)",
    ),
    (0x00C3_6400, "CephFS"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "AFS"),
    (0x7461_636F, "OCFS2"),
    (0x0116_1970, "GFS2"),
];

/// The name of the network file system with this `statfs` type, if it is one.
fn network_filesystem_named(magic: u32) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// The name of the network file system `path` is on, if it is on one
/// (and the system says which).
pub(super) fn network_filesystem(path: &Path) -> Option<&'static str> {
    #[cfg(target_os = "linux")]
    {
        let stat = rustix::fs::statfs(path).ok()?;
        // The magic numbers are 32 bits; `f_type` is a C long.
        network_filesystem_named(stat.f_type as u32)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, network_filesystem_named);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_file_systems_are_named_and_local_ones_are_not() {
        assert_eq!(network_filesystem_named(0x6969), Some("NFS"));
        assert_eq!(network_filesystem_named(0xFF53_4D42), Some("CIFS"));
        // ext4, xfs, btrfs, tmpfs, overlayfs, FUSE
        for local in [
            0xEF53,
            0x5846_5342,
            0x9123_683E,
            0x0102_1994,
            0x794C_7630,
            0x6573_5546,
        ] {
            assert_eq!(network_filesystem_named(local), None, "{local:#x}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_local_directory_is_not_a_network_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_filesystem(dir.path()), None);
    }
}
