//! ImageFolders, `root/<class>/<image>.png|jpg|jpeg`: how labeled faces are laid out on disk.
//!
//! The class order is the label order, and the trainer, the board's evaluation and the
//! workstation's dataset tools must agree on it, so there is one listing: the class folders
//! sorted by name (byte order); folders whose name starts with `.` are not classes; each
//! class's images are the files directly inside it with an image extension, sorted by name.
//! Needs the `std` feature.
//!
//! ```
//! use firmware_config::image_folder::list_image_folder;
//!
//! let root = std::env::temp_dir().join(format!("image-folder-doc-{}", std::process::id()));
//! for (class, file) in [("sad", "b.png"), ("happy", "z.jpg"), ("happy", "a.PNG"), (".git", "x.png")] {
//!     std::fs::create_dir_all(root.join(class))?;
//!     std::fs::write(root.join(class).join(file), b"")?;
//! }
//! let classes = list_image_folder(&root)?;
//! let names: Vec<&str> = classes.iter().map(|c| c.name.as_str()).collect();
//! assert_eq!(names, ["happy", "sad"]);
//! assert_eq!(classes[0].images, [root.join("happy/a.PNG"), root.join("happy/z.jpg")]);
//! std::fs::remove_dir_all(&root)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::string::String;
use std::vec::Vec;

/// File extensions of images (compared without regard to case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// `true` when `path` has an image extension.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One class of an ImageFolder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageClass {
    /// The folder's name: the class name.
    pub name: String,
    /// Its images, sorted by name (possibly none).
    pub images: Vec<PathBuf>,
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<io::Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// The image files directly inside `dir`, sorted by name.
pub fn list_images(dir: &Path) -> io::Result<Vec<PathBuf>> {
    Ok(sorted_entries(dir)?
        .into_iter()
        .filter(|p| is_image_file(p) && p.is_file())
        .collect())
}

/// Every image file under `dir`, at any depth, sorted by path (a folder's images before its
/// sub-folders' in name order). Hidden entries (names starting with `.`) are skipped.
pub fn list_images_recursive(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in sorted_entries(dir)? {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            out.extend(list_images_recursive(&path)?);
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(out)
}

/// The classes of the ImageFolder `root`, in label order (see the module docs). Classes
/// without images are listed too; what to make of them is the caller's decision. An error
/// inside a class folder names that folder.
pub fn list_image_folder(root: &Path) -> io::Result<Vec<ImageClass>> {
    let mut classes = Vec::new();
    for dir in sorted_entries(root)? {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || !dir.is_dir() {
            continue;
        }
        let images = list_images(&dir)
            .map_err(|e| io::Error::new(e.kind(), std::format!("{}: {e}", dir.display())))?;
        classes.push(ImageClass { name, images });
    }
    Ok(classes)
}
