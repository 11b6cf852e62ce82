//! From the bootstrap tarball to the finished root tree: overlays, hooks,
//! the generated configuration, root's credentials, and the removal of
//! everything that must be unique to each machine.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::generate;
use crate::stage::run_logged;
use recipe::Recipe;

/// Credentials for root, from the command line.
#[derive(Default)]
pub struct Credentials {
    pub authorized_keys: Option<String>,
    pub password_hash: Option<String>,
}

pub struct Customize<'a> {
    pub name: &'a str,
    pub recipe: &'a Recipe,
    /// Where overlays and hooks are looked up, in order.
    pub search: &'a [PathBuf],
    pub credentials: &'a Credentials,
    /// The archive the image was built from, for its apt sources.
    pub mirror: &'a str,
    pub tree: &'a Path,
    pub log: &'a Path,
    pub sde: u64,
}

impl Customize<'_> {
    pub fn unpack(&self, bootstrap: &Path) -> Result<()> {
        if self.tree.exists() {
            std::fs::remove_dir_all(self.tree)
                .with_context(|| format!("cannot remove the old tree {}", self.tree.display()))?;
        }
        std::fs::create_dir_all(self.tree)?;
        run_logged(
            Command::new("tar")
                .args(["--extract", "--preserve-permissions", "--same-owner"])
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*"])
                .arg("--file")
                .arg(bootstrap)
                .arg("--directory")
                .arg(self.tree),
            self.log,
        )
    }

    pub fn overlays(&self) -> Result<usize> {
        let mut copied = 0;
        for name in &self.recipe.overlays {
            let dir = locate(self.search, "overlays", name)?;
            for (rel, path) in overlay_files(&dir)? {
                let dest = self.tree.join(&rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if dest.is_symlink() || dest.is_file() {
                    std::fs::remove_file(&dest)?;
                }
                let meta = std::fs::symlink_metadata(&path)?;
                if meta.file_type().is_symlink() {
                    symlink(std::fs::read_link(&path)?, &dest)?;
                } else {
                    std::fs::copy(&path, &dest)
                        .with_context(|| format!("cannot copy {}", path.display()))?;
                    // Git keeps only the executable bit; the rest is ours.
                    let mode = if meta.permissions().mode() & 0o111 != 0 {
                        0o755
                    } else {
                        0o644
                    };
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
                }
                copied += 1;
            }
        }
        Ok(copied)
    }

    pub fn hooks(&self) -> Result<()> {
        for name in &self.recipe.hooks {
            let hook = locate(self.search, "hooks", name)?;
            let script = std::fs::read(&hook)
                .with_context(|| format!("cannot read the hook {}", hook.display()))?;
            let inside = self.tree.join(".colinux-hook");
            std::fs::write(&inside, script)?;
            let log = self.log.with_file_name(format!("hook-{name}.log"));
            let result = self.in_root(&["/bin/sh", "-eu", "/.colinux-hook"], &log);
            std::fs::remove_file(&inside)?;
            if let Err(e) = result {
                let output = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "the hook {} failed: {}\nits output:\n{}",
                    hook.display(),
                    e.root_cause(),
                    output.trim_end()
                );
            }
        }
        Ok(())
    }

    /// Runs a program inside the root: its own mount and PID namespaces (so
    /// the /proc it gets vanishes with it, even if we are killed) and chroot.
    fn in_root(&self, argv: &[&str], log: &Path) -> Result<()> {
        std::fs::write(log, "")?;
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--pid", "--fork", "--propagation", "private"])
            .args([
                "sh",
                "-c",
                "mount -t proc proc \"$0/proc\" && exec chroot \"$0\" \"$@\"",
            ])
            .arg(self.tree)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LC_ALL", "C.UTF-8")
            .env("SOURCE_DATE_EPOCH", self.sde.to_string())
            .env("COLINUX_IMAGE", self.name)
            .env("COLINUX_ARCH", &self.recipe.arch);
        run_logged(&mut cmd, log)
    }

    pub fn configure(&self) -> Result<()> {
        let keyring = self.tree.join(
            self.recipe
                .keyring
                .strip_prefix("/")
                .unwrap_or(&self.recipe.keyring),
        );
        if !keyring.is_file() {
            bail!(
                "the image has no {}, which its apt sources name as the archive key: add the package that ships it to the recipe, or point keyring at the image's own",
                self.recipe.keyring.display()
            );
        }
        let one_line = self.tree.join("etc/apt/sources.list");
        if one_line.exists() {
            std::fs::remove_file(one_line)?;
        }
        for file in generate::files(self.name, self.recipe, self.mirror) {
            let path = self.tree.join(&file.path);
            std::fs::create_dir_all(path.parent().expect("files live in directories"))?;
            write_replacing(&path, file.text.as_bytes(), file.mode)?;
        }
        // Keep the kernel's names (eth0, as coLinux had) rather than
        // systemd's predictable ones (enp0s3).
        replace_with_symlink(
            &self.tree.join("etc/systemd/network/99-default.link"),
            "/dev/null",
        )?;
        let resolved = self.tree.join("usr/lib/systemd/systemd-resolved").exists()
            || self.tree.join("lib/systemd/systemd-resolved").exists();
        let resolv = self.tree.join("etc/resolv.conf");
        if resolved {
            replace_with_symlink(&resolv, "../run/systemd/resolve/stub-resolv.conf")?;
        } else {
            let dns: Vec<String> = self
                .recipe
                .network
                .values()
                .flat_map(|i| i.dns.iter().map(|d| format!("nameserver {d}\n")))
                .collect();
            let text = if dns.is_empty() {
                "nameserver 10.0.2.3\n".to_string()
            } else {
                dns.concat()
            };
            write_replacing(&resolv, text.as_bytes(), 0o644)?;
        }
        // Only the recipe's consoles get a getty (Debian enables tty1, which
        // a guest without a virtual terminal does not have).
        let wants = self.tree.join("etc/systemd/system/getty.target.wants");
        if wants.is_dir() {
            for entry in std::fs::read_dir(&wants)? {
                std::fs::remove_file(entry?.path())?;
            }
        }
        let mut enable = vec!["systemctl", "enable"];
        let units = generate::units_to_enable(self.recipe);
        enable.extend(units.iter().map(String::as_str));
        self.in_root(&enable, &self.log.with_file_name("systemctl.log"))
            .context("cannot enable the image's units")
    }

    pub fn credentials(&self) -> Result<()> {
        let shadow_path = self.tree.join("etc/shadow");
        let shadow = std::fs::read_to_string(&shadow_path)
            .with_context(|| format!("cannot read {}", shadow_path.display()))?;
        let shadow =
            generate::shadow_with_root(&shadow, self.credentials.password_hash.as_deref())?;
        write_replacing(&shadow_path, shadow.as_bytes(), 0o640)?;
        if let Some(keys) = &self.credentials.authorized_keys {
            let ssh = self.tree.join("root/.ssh");
            std::fs::create_dir_all(&ssh)?;
            std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))?;
            write_replacing(&ssh.join("authorized_keys"), keys.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    /// Removes what must differ between machines made from one image.
    pub fn forget_identity(&self) -> Result<usize> {
        let mut removed = 0;
        let ssh = self.tree.join("etc/ssh");
        if ssh.is_dir() {
            for entry in std::fs::read_dir(&ssh)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                    std::fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        // Empty, not missing: systemd then makes one at boot and treats the
        // boot as the first.
        write_replacing(&self.tree.join("etc/machine-id"), b"", 0o444)?;
        for unique in [
            "var/lib/dbus/machine-id",
            "var/lib/systemd/random-seed",
            "var/lib/systemd/credential.secret",
        ] {
            let path = self.tree.join(unique);
            if path.is_symlink() || path.exists() {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The files of an overlay, sorted, as (path relative to the overlay, path).
fn overlay_files(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .expect("under the overlay")
                    .to_path_buf();
                files.push((rel, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// `dirs/<kind>/<name>` in the first of `dirs` that has it.
pub fn locate(dirs: &[PathBuf], kind: &str, name: &str) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = dirs.iter().map(|d| d.join(kind).join(name)).collect();
    match candidates.iter().find(|p| p.exists()) {
        Some(found) => Ok(found.clone()),
        None => bail!(
            "the recipe names {kind} {name:?}, but {} does not exist",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" nor ")
        ),
    }
}

/// The overlay files and hooks of a recipe, for the cache key.
pub fn inputs(search: &[PathBuf], recipe: &Recipe) -> Result<Vec<PathBuf>> {
    let mut all = Vec::new();
    for name in &recipe.overlays {
        let dir = locate(search, "overlays", name)?;
        all.extend(overlay_files(&dir)?.into_iter().map(|(_, p)| p));
    }
    for name in &recipe.hooks {
        all.push(locate(search, "hooks", name)?);
    }
    Ok(all)
}

fn write_replacing(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    if path.is_symlink() {
        std::fs::remove_file(path)?;
    }
    std::fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn replace_with_symlink(path: &Path, target: &str) -> Result<()> {
    if path.is_symlink() || path.exists() {
        std::fs::remove_file(path)?;
    }
    std::fs::create_dir_all(path.parent().expect("in a directory"))?;
    symlink(target, path).with_context(|| format!("cannot link {}", path.display()))
}
