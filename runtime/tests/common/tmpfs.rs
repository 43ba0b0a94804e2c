//! A small tmpfs for tests of a full data disk (needs root to mount).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the test, unmounted when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size_bytes: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    pub fn available_bytes(&self) -> u64 {
        let stat = rustix::fs::statvfs(&self.dir).expect("statvfs");
        stat.f_bavail * stat.f_frsize
    }

    /// Writes a filler file at `path` until at most `free_bytes` remain.
    pub fn fill_until(&self, path: &Path, free_bytes: u64) {
        let mut file = std::fs::File::create(path).expect("filler");
        let chunk = vec![0xa5u8; 256 * 1024];
        while self.available_bytes() > free_bytes {
            let room = self.available_bytes() - free_bytes;
            let size = usize::try_from(room).map_or(chunk.len(), |room| room.min(chunk.len()));
            file.write_all(&chunk[..size]).expect("filler write");
        }
        file.sync_all().expect("filler sync");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// A tmpfs of `size_bytes` at `dir`, or `None` (with the reason printed,
/// naming `test`) where mounting is not permitted.
pub fn mount_or_skip(dir: &Path, size_bytes: u64, test: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, size_bytes) {
        Ok(disk) => Some(disk),
        Err(reason) => {
            eprintln!("SKIPPED {test}: cannot mount a tmpfs ({reason}); run as root");
            None
        }
    }
}
