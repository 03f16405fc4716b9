//! Files the user names: folders created with a clear error, reports replaced whole.

use crate::ui::usage_error;
use std::path::Path;

/// Creates the output folder, with a clear error when it cannot be.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| usage_error(format!("cannot create output folder {}: {e}", dir.display()), None))
}

/// Writes `bytes` to a temporary name beside `path` and renames it, so a reader (or a crash)
/// never sees half a file.
pub fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| usage_error(format!("cannot write {}: {e}", tmp.display()), None))?;
    std::fs::rename(&tmp, path).map_err(|e| usage_error(format!("cannot write {}: {e}", path.display()), None))?;
    Ok(())
}
