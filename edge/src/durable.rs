//! Writes that survive a power cut: a file replaced atomically, and the fsync of a folder that
//! makes a created, renamed or removed entry in it permanent.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Makes the entries of `dir` durable (files created, renamed or removed in it).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename, then syncs the folder:
/// after a crash the file holds either the old or the new bytes.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    file.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))?;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Bytes an unprivileged writer may still use on the file system that holds `path`.
#[cfg(target_os = "linux")]
pub fn free_bytes(path: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| Error::invalid(path.display().to_string(), e.to_string()))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and statvfs writes
    // one `struct statvfs` into the memory `stat` owns; it is read only when the call succeeds.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return Err(Error::io(
                "measuring free space of",
                path,
                std::io::Error::last_os_error(),
            ));
        }
        stat.assume_init()
    };
    // u64 here, u32 on some 32-bit boards.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// Bytes free on the file system that holds `path` (not measured off Linux: unlimited).
#[cfg(not(target_os = "linux"))]
pub fn free_bytes(_path: &Path) -> Result<u64> {
    Ok(u64::MAX)
}
