//! `cargo xtask convert`, driven as users drive it, on disks made by the real
//! tools (sfdisk, fdisk, sgdisk, mke2fs -d, qemu-img). Every extraction is
//! compared byte for byte with what `dd` gives at the right offset.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use harness::{assert_fsck_clean, assert_one_line_error, Tmpfs};

use tempfile::TempDir;

const MIB: u64 = 1 << 20;

fn xtask(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::null())
        .output()
        .expect("xtask runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sh(program: &str, args: &[&dyn AsRef<std::ffi::OsStr>], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args.iter().map(|a| a.as_ref()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (run `cargo xtask setup`)"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ext4 filesystem image of `mib` MiB with some files, one of them
/// incompressible so the image has real data spread over it.
fn ext4(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let content = dir.join(format!("{name}.content"));
    fs::create_dir_all(content.join("etc")).unwrap();
    fs::write(
        content.join("etc/fstab"),
        "/dev/cobd0 / ext4 defaults 0 1\n",
    )
    .unwrap();
    let mut x = 0x1234_5678_9abc_def0u64 ^ mib;
    let noise: Vec<u8> = (0..(mib * MIB / 4))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(content.join("noise.bin"), noise).unwrap();
    let image = dir.join(name);
    fs::File::create(&image)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
    sh(
        "mke2fs",
        &[
            &"-q", &"-F", &"-t", &"ext4", &"-L", &name, &"-d", &content, &image,
        ],
        None,
    );
    image
}

fn blank(path: &Path, len: u64) {
    fs::File::create(path).unwrap().set_len(len).unwrap();
}

/// Copies `src` into `disk` at byte `offset`, as a user's dd would.
fn embed(src: &Path, disk: &Path, offset: u64) {
    let seek = format!("seek={offset}");
    sh(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", disk.display()),
            &"bs=1M",
            &seek,
            &"oflag=seek_bytes",
            &"conv=notrunc,sparse",
            &"status=none",
        ],
        None,
    );
}

/// What `dd` extracts: the reference every conversion must equal.
fn dd_extract(disk: &Path, offset: u64, len: u64) -> Vec<u8> {
    let out = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .args(["bs=4M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout.len() as u64, len, "dd came up short");
    out.stdout
}

/// Converts `disk` (with extra args) and checks the result against dd.
fn convert_matches_dd(disk: &Path, extra: &[&str], offset: u64, len: u64) -> PathBuf {
    let out_path = disk.with_extension("out.ext4");
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert"];
    args.extend(extra.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    args.push(&disk);
    args.push(&out_path);
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "convert {}: {}",
        disk.display(),
        stderr(&out)
    );
    let got = fs::read(&out_path).unwrap();
    assert_eq!(got.len() as u64, len, "output size");
    assert!(
        got == dd_extract(disk, offset, len),
        "output differs from dd's extraction"
    );
    assert_fsck_clean(&out_path);
    out_path
}

/// Asserts the command failed with `needle` in its one-line error and left
/// no output and no temporary file behind.
fn assert_fails_cleanly(out: &Output, needle: &str, output: &Path) {
    assert_one_line_error(out, needle);
    assert!(!output.exists(), "{} was left behind", output.display());
    assert_no_temporary_files(output.parent().unwrap());
}

fn assert_no_temporary_files(dir: &Path) {
    let leftovers: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn mbr_partition_at_sector_63() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 24);
    let disk = t.path().join("disk.img");
    blank(&disk, 40 * MIB);
    sh(
        "sfdisk",
        &[&"-q", &disk],
        Some(&format!("start=63, size={}, type=83\n", 24 * 2048)),
    );
    embed(&fs_img, &disk, 63 * 512);
    let out = convert_matches_dd(&disk, &[], 63 * 512, 24 * MIB);
    assert!(fs::read(&out).unwrap() == fs::read(&fs_img).unwrap());
    // Sparse: the zero blocks of the filesystem did not become data.
    let allocated = fs::metadata(&out).unwrap().blocks() * 512;
    assert!(
        allocated < 16 * MIB,
        "output is not sparse: {allocated} bytes allocated"
    );
}

#[test]
fn mbr_partition_at_sector_2048_beside_swap() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 16);
    let disk = t.path().join("disk.img");
    blank(&disk, 40 * MIB);
    sh(
        "sfdisk",
        &[&"-q", &disk],
        Some("start=2048, size=16M, type=83\nstart=36864, type=82\n"),
    );
    embed(&fs_img, &disk, MIB);
    let swap = t.path().join("swap.img");
    blank(&swap, 4 * MIB);
    sh("mkswap", &[&swap], None);
    embed(&swap, &disk, 36864 * 512);
    // The swap partition holds no filesystem, so partition 1 is the default.
    convert_matches_dd(&disk, &[], MIB, 16 * MIB);
}

#[test]
fn logical_partition_in_an_extended_partition() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "home", 12);
    let disk = t.path().join("disk.img");
    blank(&disk, 48 * MIB);
    // 1: vfat; 2: extended holding 5 (ext4) and 6 (empty).
    let script = "start=2048, size=8M, type=c\nstart=18432, type=5\nstart=20480, size=12M, type=83\nstart=47104, type=83\n";
    sh("sfdisk", &[&"-q", &disk], Some(script));
    let vfat = t.path().join("vfat.img");
    blank(&vfat, 8 * MIB);
    sh("mkfs.vfat", &[&vfat], None);
    embed(&vfat, &disk, MIB);
    embed(&fs_img, &disk, 20480 * 512);
    let list = xtask(&[&"convert", &"--list", &disk]);
    let table = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        table.contains("vfat") && table.contains("ext4 \"home\""),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.trim_start().starts_with("5 ")),
        "{table}"
    );
    convert_matches_dd(&disk, &[], 20480 * 512, 12 * MIB);
    // And the vfat one on request, with a warning that cobd root needs ext*.
    let out_path = t.path().join("vfat.out");
    let out = xtask(&[&"convert", &"-p", &"1", &disk, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs ext*"), "{}", stderr(&out));
    assert!(fs::read(&out_path).unwrap() == dd_extract(&disk, MIB, 8 * MIB));
}

#[test]
fn gpt_with_512_byte_sectors() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 16);
    let disk = t.path().join("disk.img");
    blank(&disk, 40 * MIB);
    sh(
        "sgdisk",
        &[
            &"-o",
            &"-n",
            &"1:2048:+4M",
            &"-t",
            &"1:ef00",
            &"-n",
            &"2:0:+16M",
            &"-t",
            &"2:8300",
            &disk,
        ],
        None,
    );
    embed(&fs_img, &disk, (2048 + 8192) * 512);
    convert_matches_dd(&disk, &[], (2048 + 8192) * 512, 16 * MIB);
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 16);
    let disk = t.path().join("disk.img");
    blank(&disk, 40 * MIB);
    sh(
        "fdisk",
        &[&"-b", &"4096", &disk],
        Some("g\nn\n1\n256\n+16M\nw\n"),
    );
    embed(&fs_img, &disk, 256 * 4096);
    let list = xtask(&[&"convert", &"--list", &disk]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("4096-byte sectors"));
    convert_matches_dd(&disk, &[], 256 * 4096, 16 * MIB);
}

#[test]
fn qemu_container_formats_are_read_through_qemu_img() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 16);
    let raw = t.path().join("disk.img");
    blank(&raw, 32 * MIB);
    sh(
        "sfdisk",
        &[&"-q", &raw],
        Some(&format!("start=63, size={}, type=83\n", 16 * 2048)),
    );
    embed(&fs_img, &raw, 63 * 512);
    let want = dd_extract(&raw, 63 * 512, 16 * MIB);
    for format in ["qcow2", "vmdk", "vdi", "vhdx"] {
        let image = t.path().join(format!("disk.{format}"));
        sh(
            "qemu-img",
            &[&"convert", &"-f", &"raw", &"-O", &format, &raw, &image],
            None,
        );
        let out_path = t.path().join(format!("{format}.ext4"));
        let out = xtask(&[&"convert", &image, &out_path]);
        assert!(out.status.success(), "{format}: {}", stderr(&out));
        assert!(
            fs::read(&out_path).unwrap() == want,
            "{format}: differs from dd of the raw disk"
        );
        assert_fsck_clean(&out_path);
    }
}

#[test]
fn bare_filesystem_is_copied_whole() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 8);
    let out_path = t.path().join("copy.ext4");
    let out = xtask(&[&"convert", &fs_img, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("already a bare filesystem"),
        "{}",
        stderr(&out)
    );
    assert!(fs::read(&out_path).unwrap() == fs::read(&fs_img).unwrap());
}

#[test]
fn to_disk_then_convert_gives_back_the_same_bytes() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 12);
    let original = fs::read(&fs_img).unwrap();
    let cases: [(&str, &[&str], u64); 5] = [
        ("mbr.img", &[], MIB),
        ("legacy.img", &["--legacy-63"], 63 * 512),
        ("gpt.img", &["--gpt"], MIB),
        ("gpt4k.img", &["--gpt", "--sector-size", "4096"], MIB),
        ("disk.qcow2", &[], MIB),
    ];
    for (name, flags, offset) in cases {
        let disk = t.path().join(name);
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert", &"--to-disk"];
        args.extend(flags.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
        args.push(&fs_img);
        args.push(&disk);
        let out = xtask(&args);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        if name.ends_with(".qcow2") {
            let info = Command::new("qemu-img")
                .args(["info", "--output=json"])
                .arg(&disk)
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&info.stdout).contains("\"format\": \"qcow2\""),
                "{name} is not qcow2"
            );
        } else {
            // The real partitioning tools agree with the table we wrote.
            let dump = Command::new("sfdisk")
                .arg("--json")
                .arg(&disk)
                .output()
                .unwrap();
            assert!(dump.status.success(), "{name}: sfdisk cannot read it");
            if flags.contains(&"--gpt") {
                let verify = Command::new("sgdisk")
                    .arg("-v")
                    .arg(&disk)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&verify.stdout);
                assert!(
                    text.contains("No problems found"),
                    "{name}: sgdisk -v: {text}"
                );
            }
            assert!(
                fs::read(&disk).unwrap()[offset as usize..][..original.len()] == original[..],
                "{name}: partition bytes"
            );
        }
        let back = t.path().join(format!("{name}.back"));
        let out = xtask(&[&"convert", &disk, &back]);
        assert!(out.status.success(), "{name} back: {}", stderr(&out));
        assert!(
            fs::read(&back).unwrap() == original,
            "{name}: round trip changed the bytes"
        );
    }
}

#[test]
fn corrupt_primary_gpt_uses_the_backup_and_says_so() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 8);
    let disk = t.path().join("disk.img");
    let out = xtask(&[&"convert", &"--to-disk", &"--gpt", &fs_img, &disk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bytes = fs::read(&disk).unwrap();
    bytes[512 + 0x30] ^= 0x55; // inside the header: its CRC no longer matches
    fs::write(&disk, &bytes).unwrap();
    let out_path = t.path().join("out.ext4");
    let out = xtask(&[&"convert", &disk, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("using the backup GPT"),
        "{}",
        stderr(&out)
    );
    assert!(fs::read(&out_path).unwrap() == fs::read(&fs_img).unwrap());
}

/// Each bad input gets a one-line error naming the problem, and no output.
#[test]
fn bad_inputs_fail_cleanly() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let out_path = dir.join("out.ext4");
    let fs_img = ext4(dir, "root", 8);
    let convert = |input: &Path| xtask(&[&"convert", &input, &out_path]);

    // A zero-length file, and a directory.
    let empty = dir.join("empty.img");
    fs::write(&empty, b"").unwrap();
    assert_fails_cleanly(&convert(&empty), "empty.img: is empty (0 bytes)", &out_path);
    assert_fails_cleanly(&convert(dir), "is a directory, not a disk image", &out_path);

    // A missing file.
    assert_fails_cleanly(
        &convert(&dir.join("nope.img")),
        "nope.img: cannot open it: No such file",
        &out_path,
    );

    // Neither a table nor a filesystem.
    let junk = dir.join("junk.img");
    fs::write(&junk, vec![0x5a; 65536]).unwrap();
    assert_fails_cleanly(
        &convert(&junk),
        "no partition table and no filesystem",
        &out_path,
    );

    // A disk cut short inside its partition: a truncated image.
    let mbr_disk = dir.join("mbr.img");
    let out = xtask(&[&"convert", &"--to-disk", &fs_img, &mbr_disk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let truncated = dir.join("truncated.img");
    fs::copy(&mbr_disk, &truncated).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(4 * MIB)
        .unwrap();
    assert_fails_cleanly(
        &convert(&truncated),
        "partition 1 ends at byte 9437184, past the end of the image (4194304 bytes)",
        &out_path,
    );

    // A table whose partition claims more than the file holds.
    let mut bytes = fs::read(&mbr_disk).unwrap();
    bytes[446 + 12..446 + 16].copy_from_slice(&100_000u32.to_le_bytes());
    let past_end = dir.join("past-end.img");
    fs::write(&past_end, &bytes).unwrap();
    assert_fails_cleanly(&convert(&past_end), "past the end of the image", &out_path);

    // A partition smaller than the filesystem it holds (dd with the wrong count).
    bytes[446 + 12..446 + 16].copy_from_slice(&8000u32.to_le_bytes());
    let short = dir.join("short.img");
    fs::write(&short, &bytes).unwrap();
    assert_fails_cleanly(&convert(&short), "the ext4 filesystem in partition 1 claims 8388608 bytes but the partition holds only 4096000", &out_path);

    // Overlapping partitions.
    let overlap = dir.join("overlap.img");
    blank(&overlap, 16 * MIB);
    sh(
        "sfdisk",
        &[&"-q", &overlap],
        Some("start=2048, size=8M, type=83\nstart=18432, size=4M, type=83\n"),
    );
    let mut bytes = fs::read(&overlap).unwrap();
    bytes[446 + 16 + 8..446 + 16 + 12].copy_from_slice(&10000u32.to_le_bytes());
    fs::write(&overlap, &bytes).unwrap();
    assert_fails_cleanly(
        &convert(&overlap),
        "partitions 1 (bytes 1048576..9437184) and 2 (bytes 5120000..9314304) overlap",
        &out_path,
    );

    // Both GPT copies corrupt.
    let gpt_disk = dir.join("gpt.img");
    let out = xtask(&[&"convert", &"--to-disk", &"--gpt", &fs_img, &gpt_disk]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut bytes = fs::read(&gpt_disk).unwrap();
    let last = bytes.len() - 512;
    bytes[512 + 0x30] ^= 1;
    bytes[last + 0x30] ^= 1;
    let corrupt = dir.join("corrupt-gpt.img");
    fs::write(&corrupt, &bytes).unwrap();
    assert_fails_cleanly(
        &convert(&corrupt),
        "its GPT is corrupt: primary: header CRC mismatch at LBA 1; backup: header CRC mismatch",
        &out_path,
    );

    // A protective MBR with no GPT behind it.
    bytes[512..1024].fill(0);
    bytes[last..].fill(0);
    let protective = dir.join("protective.img");
    fs::write(&protective, &bytes).unwrap();
    assert_fails_cleanly(
        &convert(&protective),
        "protective MBR (type 0xee) but no valid GPT",
        &out_path,
    );

    // A GPT cut short inside its entry array.
    let tiny_gpt = dir.join("tiny-gpt.img");
    fs::write(&tiny_gpt, &fs::read(&gpt_disk).unwrap()[..4096]).unwrap();
    assert_fails_cleanly(
        &convert(&tiny_gpt),
        "truncated: the GPT partition entries at LBA 2",
        &out_path,
    );

    // A partition number that does not exist.
    let out = xtask(&[&"convert", &"--partition", &"7", &mbr_disk, &out_path]);
    assert_fails_cleanly(&out, "has no partition 7 (it has partitions 1)", &out_path);
}

#[test]
fn unreadable_input_fails_cleanly() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 8);
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&fs_img, fs::Permissions::from_mode(0o000)).unwrap();
    let out_path = t.path().join("out.ext4");
    // SAFETY: geteuid has no preconditions.
    let mut cmd = if unsafe { libc::geteuid() } == 0 {
        // root reads anything: drop to nobody, as a user would be.
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_xtask"),
        ]);
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
    };
    let out = cmd
        .arg("convert")
        .arg(&fs_img)
        .arg(&out_path)
        .output()
        .unwrap();
    assert_fails_cleanly(&out, "root: cannot open it: Permission denied", &out_path);
}

#[test]
fn several_linux_partitions_ask_for_a_choice() {
    let t = TempDir::new().unwrap();
    let a = ext4(t.path(), "alpha", 8);
    let b = ext4(t.path(), "beta", 8);
    let disk = t.path().join("disk.img");
    blank(&disk, 24 * MIB);
    sh(
        "sfdisk",
        &[&"-q", &disk],
        Some("start=2048, size=8M, type=83\nstart=18432, size=8M, type=83\n"),
    );
    embed(&a, &disk, MIB);
    embed(&b, &disk, 18432 * 512);
    let out_path = t.path().join("out.ext4");
    let out = xtask(&[&"convert", &disk, &out_path]);
    assert_fails_cleanly(
        &out,
        "2 partitions hold a Linux filesystem (1, 2): choose one with --partition N",
        &out_path,
    );
    // The table is shown so the user can choose.
    assert!(stderr(&out).contains("ext4 \"beta\""), "{}", stderr(&out));
    convert_matches_dd(&disk, &["--partition", "2"], 18432 * 512, 8 * MIB);
}

#[test]
fn existing_output_needs_force() {
    let t = TempDir::new().unwrap();
    let fs_img = ext4(t.path(), "root", 8);
    let out_path = t.path().join("out.ext4");
    fs::write(&out_path, b"precious").unwrap();
    let out = xtask(&[&"convert", &fs_img, &out_path]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already exists; pass --force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&out_path).unwrap(), b"precious");
    let out = xtask(&[&"convert", &"--force", &fs_img, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(&out_path).unwrap() == fs::read(&fs_img).unwrap());
}

#[test]
fn help_is_accurate() {
    let out = xtask(&[&"--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for stage in ["setup", "convert", "bench", "test"] {
        assert!(text.contains(stage), "--help does not list {stage}: {text}");
    }
    let out = xtask(&[&"convert", &"--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--list",
        "--partition",
        "--force",
        "--to-disk",
        "--gpt",
        "--sector-size",
        "--legacy-63",
        "--format",
        "--overwrite-device",
    ] {
        assert!(
            text.contains(flag),
            "convert --help does not document {flag}"
        );
    }
}

/// Asserts the command was refused with `needle` in its one-line error, left
/// every file in `untouched` with the bytes it had, and no temporary file in
/// `dir`.
fn assert_refused(out: &Output, needle: &str, untouched: &[(&Path, &[u8])], dir: &Path) {
    assert_one_line_error(out, needle);
    for (path, bytes) in untouched {
        assert!(
            fs::read(path).unwrap() == *bytes,
            "{} was changed",
            path.display()
        );
    }
    assert_no_temporary_files(dir);
}

/// An MBR disk of `mib` MiB whose partition 1 is exactly `fs_img`, at 1 MiB.
fn mbr_disk(fs_img: &Path, disk: &Path, mib: u64) {
    blank(disk, mib * MIB);
    let sectors = fs::metadata(fs_img).unwrap().len() / 512;
    let script = format!("start=2048, size={sectors}, type=83\n");
    sh("sfdisk", &[&"-q", &disk], Some(&script));
    embed(fs_img, disk, MIB);
}

#[test]
fn output_that_is_the_input_is_refused_whatever_force_says() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let fs_img = ext4(dir, "root", 8);
    let disk = dir.join("disk.img");
    mbr_disk(&fs_img, &disk, 12);
    let disk_bytes = fs::read(&disk).unwrap();
    let fs_bytes = fs::read(&fs_img).unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    let via_dotdot = dir.join("sub/../disk.img");
    let link = dir.join("link.img");
    std::os::unix::fs::symlink("disk.img", &link).unwrap();
    let hard = dir.join("hard.img");
    fs::hard_link(&disk, &hard).unwrap();
    for output in [&disk, &via_dotdot, &link, &hard] {
        for force in [&[][..], &["--force"][..]] {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert"];
            args.extend(force.iter().map(|f| f as &dyn AsRef<std::ffi::OsStr>));
            args.push(&disk);
            args.push(output);
            assert_refused(
                &xtask(&args),
                "disk.img (the same file): writing it would destroy the input; choose another output (--force does not change this)",
                &[(&disk, &disk_bytes)],
                dir,
            );
        }
    }
    // The input named through a link, the output by its own name.
    let out = xtask(&[&"convert", &"-f", &link, &disk]);
    assert_refused(&out, "is the input", &[(&disk, &disk_bytes)], dir);
    // --to-disk follows the same rule.
    let out = xtask(&[&"convert", &"--to-disk", &"-f", &fs_img, &fs_img]);
    assert_refused(&out, "root: is the input", &[(&fs_img, &fs_bytes)], dir);
    let fs_link = dir.join("fs-link");
    std::os::unix::fs::symlink(&fs_img, &fs_link).unwrap();
    let out = xtask(&[&"convert", &"--to-disk", &"-f", &fs_img, &fs_link]);
    assert_refused(&out, "fs-link: is the input", &[(&fs_img, &fs_bytes)], dir);
}

#[test]
fn output_in_the_inputs_backing_chain_is_refused() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let fs_img = ext4(dir, "root", 8);
    let base = dir.join("base.img");
    mbr_disk(&fs_img, &base, 12);
    // base.img <- mid.qcow2 <- top.qcow2, named relative to their directory.
    sh(
        "qemu-img",
        &[
            &"create",
            &"-q",
            &"-f",
            &"qcow2",
            &"-b",
            &"base.img",
            &"-F",
            &"raw",
            &dir.join("mid.qcow2"),
        ],
        None,
    );
    sh(
        "qemu-img",
        &[
            &"create",
            &"-q",
            &"-f",
            &"qcow2",
            &"-b",
            &"mid.qcow2",
            &"-F",
            &"qcow2",
            &dir.join("top.qcow2"),
        ],
        None,
    );
    let top = dir.join("top.qcow2");
    let mid = dir.join("mid.qcow2");
    let before: Vec<(PathBuf, Vec<u8>)> = [&base, &mid, &top]
        .iter()
        .map(|p| (p.to_path_buf(), fs::read(p).unwrap()))
        .collect();
    let untouched: Vec<(&Path, &[u8])> =
        before.iter().map(|(p, b)| (p.as_path(), &b[..])).collect();
    let base_link = dir.join("base-link");
    std::os::unix::fs::symlink(&base, &base_link).unwrap();
    for (output, needle) in [
        (&mid, "mid.qcow2: is the backing file of"),
        (&base, "base.img: is the backing file of"),
        (&base_link, "base-link: is the backing file of"),
        (&top, "top.qcow2: is the input"),
    ] {
        let out = xtask(&[&"convert", &"--force", &top, output]);
        assert_refused(&out, needle, &untouched, dir);
        assert!(
            stderr(&out).contains("writing it would destroy the input"),
            "{}",
            stderr(&out)
        );
    }
    // Another output is fine, and holds the filesystem.
    let out_path = dir.join("out.ext4");
    let out = xtask(&[&"convert", &top, &out_path]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(&out_path).unwrap() == fs::read(&fs_img).unwrap());
}

#[test]
fn character_devices_fifos_and_dangling_links_are_refused() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let fs_img = ext4(dir, "root", 8);
    let fs_bytes = fs::read(&fs_img).unwrap();
    let null = Path::new("/dev/null");
    for flags in [&[][..], &["--force"], &["--overwrite-device"]] {
        for to_disk in [&[][..], &["--to-disk"]] {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert"];
            args.extend(
                to_disk
                    .iter()
                    .chain(flags)
                    .map(|f| f as &dyn AsRef<std::ffi::OsStr>),
            );
            args.push(&fs_img);
            args.push(&null);
            assert_refused(
                &xtask(&args),
                "/dev/null: is a character device; the output must be a regular file or a block device",
                &[(&fs_img, &fs_bytes)],
                dir,
            );
            assert!(fs::metadata(null).unwrap().file_type().is_char_device());
        }
    }
    let fifo = dir.join("fifo");
    sh("mkfifo", &[&fifo], None);
    let out = xtask(&[&"convert", &"-f", &fs_img, &fifo]);
    assert_refused(
        &out,
        "fifo: is a FIFO; the output must be",
        &[(&fs_img, &fs_bytes)],
        dir,
    );
    assert!(fs::metadata(&fifo).unwrap().file_type().is_fifo());

    let dangling = dir.join("dangling");
    std::os::unix::fs::symlink("nowhere.ext4", &dangling).unwrap();
    let out = xtask(&[&"convert", &"-f", &fs_img, &dangling]);
    assert_refused(
        &out,
        "dangling: is a symbolic link to nowhere.ext4, which does not exist",
        &[(&fs_img, &fs_bytes)],
        dir,
    );
    assert!(!dir.join("nowhere.ext4").exists());
}

#[test]
fn a_link_output_is_written_through_to_its_target() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let fs_img = ext4(dir, "root", 8);
    let fs_bytes = fs::read(&fs_img).unwrap();
    // The link and its target in different directories: the temporary file
    // goes beside the target, so the rename stays within one filesystem.
    fs::create_dir(dir.join("images")).unwrap();
    let target = dir.join("images/root.ext4");
    fs::write(&target, b"old").unwrap();
    let link = dir.join("root_fs.ext4");
    std::os::unix::fs::symlink("images/root.ext4", &link).unwrap();
    let out = xtask(&[&"convert", &fs_img, &link]);
    assert_refused(
        &out,
        "root_fs.ext4: already exists; pass --force",
        &[(&target, b"old"), (&fs_img, &fs_bytes)],
        &dir.join("images"),
    );
    let out = xtask(&[&"convert", &"--force", &fs_img, &link]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("images/root.ext4"));
    assert!(fs::read(&target).unwrap() == fs_bytes);
    // --to-disk likewise.
    let disk = dir.join("images/disk.img");
    fs::write(&disk, b"old").unwrap();
    let disk_link = dir.join("disk-link.img");
    std::os::unix::fs::symlink(&disk, &disk_link).unwrap();
    let out = xtask(&[&"convert", &"--to-disk", &"-f", &fs_img, &disk_link]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(&disk_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read(&disk).unwrap()[MIB as usize..][..fs_bytes.len()] == fs_bytes[..]);
    assert_no_temporary_files(dir);
    assert_no_temporary_files(&dir.join("images"));
}

/// A loop device over a file, detached when dropped.
struct Loop(PathBuf);

impl Loop {
    /// `None` where this machine cannot make one: not root, or no loop
    /// devices in this container. As root with /dev/loop-control, failing
    /// to make one fails the test rather than hiding it.
    fn over(file: &Path) -> Option<Loop> {
        if !harness::as_root("a loop device (the block-device checks)") {
            return None;
        }
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("no /dev/loop-control in this container: block-device checks skipped");
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup runs");
        assert!(out.status.success(), "losetup: {}", stderr(&out));
        Some(Loop(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim(),
        )))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A file of `len` bytes of 0xaa: old contents that must not show through.
fn filled(path: &Path, len: u64) -> Vec<u8> {
    let bytes = vec![0xaa; len as usize];
    fs::write(path, &bytes).unwrap();
    bytes
}

/// Writing onto a real block device (a loop device over a file, which the
/// test then reads): in place, only with --overwrite-device, size checked.
#[test]
fn block_device_output_is_written_in_place_with_overwrite_device() {
    let t = TempDir::new().unwrap();
    let dir = t.path();
    let fs_img = ext4(dir, "root", 8);
    let fs_bytes = fs::read(&fs_img).unwrap();
    let disk = dir.join("disk.img");
    mbr_disk(&fs_img, &disk, 12);
    let backing = dir.join("device.img");
    let old = filled(&backing, 12 * MIB);
    let Some(dev) = Loop::over(&backing) else {
        return;
    };
    let dev = dev.0.as_path();

    // Without its own flag, --force or not, the device is left alone.
    for force in [&[][..], &["--force"]] {
        for to_disk in [&[][..], &["--to-disk"]] {
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert"];
            args.extend(
                to_disk
                    .iter()
                    .chain(force)
                    .map(|f| f as &dyn AsRef<std::ffi::OsStr>),
            );
            args.push(if to_disk.is_empty() { &disk } else { &fs_img });
            args.push(&dev);
            assert_refused(
                &xtask(&args),
                "is a block device; pass --overwrite-device to write the image onto it (--force does not)",
                &[(&backing, &old)],
                dir,
            );
        }
    }

    // A loop device over the input is the input.
    let disk_bytes = fs::read(&disk).unwrap();
    let over_input = Loop::over(&disk).expect("a second loop device");
    let out = xtask(&[&"convert", &"--overwrite-device", &disk, &over_input.0]);
    assert_refused(&out, "is a loop device over", &[(&disk, &disk_bytes)], dir);
    drop(over_input);

    // The partition lands at the device's first byte; its zero blocks are
    // written as zeros; the rest of the device keeps its old bytes. A link
    // to the device (as in /dev/disk/by-id) is written through.
    let link = dir.join("by-id");
    std::os::unix::fs::symlink(dev, &link).unwrap();
    let out = xtask(&[&"convert", &"--overwrite-device", &disk, &link]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let got = fs::read(&backing).unwrap();
    assert!(got[..fs_bytes.len()] == fs_bytes[..], "partition bytes");
    assert!(
        got[fs_bytes.len()..] == old[fs_bytes.len()..],
        "past the image"
    );

    // The device now holds the filesystem: mounted, it is refused (where this machine lets us mount).
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount").arg(dev).arg(&mnt).output().unwrap();
    if mounted.status.success() {
        let out = xtask(&[&"convert", &"--overwrite-device", &disk, &dev]);
        let umount = Command::new("umount").arg(&mnt).status().unwrap();
        assert!(umount.success(), "umount {}", mnt.display());
        let before = fs::read(&backing).unwrap();
        assert_refused(
            &out,
            "is in use (mounted, or held by another program); unmount it first",
            &[(&backing, &before)],
            dir,
        );
    } else {
        eprintln!("mount: {}: mounted-device check skipped", stderr(&mounted));
    }

    // Through qemu-img too (a qcow2 input).
    filled(&backing, 12 * MIB);
    let qcow2 = dir.join("disk.qcow2");
    sh(
        "qemu-img",
        &[&"convert", &"-f", &"raw", &"-O", &"qcow2", &disk, &qcow2],
        None,
    );
    let out = xtask(&[&"convert", &"--overwrite-device", &qcow2, &dev]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = fs::read(&backing).unwrap();
    assert!(
        got[..fs_bytes.len()] == fs_bytes[..],
        "qcow2: partition bytes"
    );
    assert!(
        got[fs_bytes.len()..] == old[fs_bytes.len()..],
        "qcow2: past the image"
    );

    // --to-disk: a raw disk the partitioning tools read; qcow2 is refused.
    let before = filled(&backing, 12 * MIB);
    let out = xtask(&[
        &"convert",
        &"--to-disk",
        &"--format",
        &"qcow2",
        &"--overwrite-device",
        &fs_img,
        &dev,
    ]);
    assert_refused(
        &out,
        "is a block device, which takes a raw disk, not qcow2",
        &[(&backing, &before)],
        dir,
    );
    let out = xtask(&[
        &"convert",
        &"--to-disk",
        &"--overwrite-device",
        &fs_img,
        &dev,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(dev)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dump.stdout)
            .contains("start=        2048, size=       16384, type=83"),
        "{}",
        String::from_utf8_lossy(&dump.stdout)
    );
    let got = fs::read(&backing).unwrap();
    assert!(
        got[MIB as usize..][..fs_bytes.len()] == fs_bytes[..],
        "to-disk: partition bytes"
    );
    assert!(
        got[512..MIB as usize].iter().all(|&b| b == 0),
        "to-disk: old bytes between the table and the partition"
    );

    // A device too small for the image is refused before anything is written.
    let small = dir.join("small.img");
    let small_old = filled(&small, 4 * MIB);
    let Some(small_dev) = Loop::over(&small) else {
        return;
    };
    let out = xtask(&[&"convert", &"--overwrite-device", &disk, &small_dev.0]);
    assert_refused(
        &out,
        "is 4194304 bytes, too small for the 8388608-byte image",
        &[(&small, &small_old)],
        dir,
    );
    let out = xtask(&[
        &"convert",
        &"--to-disk",
        &"--overwrite-device",
        &fs_img,
        &small_dev.0,
    ]);
    assert_refused(&out, "too small for the", &[(&small, &small_old)], dir);
}

/// A bare ext4 image followed by 128 MiB of data: copying it takes long
/// enough for another program to change something midway.
fn slow_input(dir: &Path) -> PathBuf {
    use std::io::Write;
    let input = ext4(dir, "root", 8);
    let mut file = fs::OpenOptions::new().append(true).open(&input).unwrap();
    let block = vec![0x5a; MIB as usize];
    for _ in 0..128 {
        file.write_all(&block).unwrap();
    }
    input
}

/// Runs `convert INPUT OUTPUT`, stops it (SIGSTOP) once its temporary
/// output holds data, so the copy is under way, runs `meanwhile` as
/// another program would, and lets it go on to its end.
fn convert_changing_midway(input: &Path, output: &Path, meanwhile: impl FnOnce()) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("convert")
        .arg(input)
        .arg(output)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xtask runs");
    let pid = child.id() as libc::pid_t;
    let copying = || {
        fs::read_dir(output.parent().unwrap()).unwrap().any(|e| {
            let e = e.unwrap();
            e.file_name().to_string_lossy().ends_with(".partial")
                && e.metadata().is_ok_and(|m| m.blocks() > 0)
        })
    };
    let mut child = child;
    while !copying() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "convert ended before the copy was seen under way"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // SAFETY: signals to our own child, which has not been waited for.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    meanwhile();
    // SAFETY: as above; the child is still ours.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    child.wait_with_output().unwrap()
}

/// A source shortened by another program while convert reads it (a mapped
/// source would kill convert with SIGBUS here): a one-line error naming
/// the input, and no output.
#[test]
fn a_source_truncated_midway_fails_cleanly() {
    let t = TempDir::new().unwrap();
    let input = slow_input(t.path());
    let output = t.path().join("out.ext4");
    let out = convert_changing_midway(&input, &output, || {
        let other = fs::OpenOptions::new().write(true).open(&input).unwrap();
        other.set_len(4 * MIB).unwrap();
    });
    let needle = format!(
        "{}: cannot read it: it shrank to {} bytes while being read",
        input.display(),
        4 * MIB
    );
    assert_fails_cleanly(&out, &needle, &output);
}

/// The output's disk has too little space for the data: refused before
/// anything is written, with both numbers, and the old output stays.
#[test]
fn a_disk_too_small_is_refused_up_front_and_the_old_output_stays() {
    let t = TempDir::new().unwrap();
    let input = ext4(t.path(), "root", 64); // 16 MiB of incompressible data
    let Some(small) = Tmpfs::mount(&t.path().join("small"), 8 * MIB) else {
        return;
    };
    let output = small.path().join("root.ext4");
    fs::write(&output, "the user's old image").unwrap();
    let out = xtask(&[&"convert", &"--force", &input, &output]);
    assert_one_line_error(
        &out,
        &format!(
            "{}: no space left on {} (needed about ",
            output.display(),
            small.path().display()
        ),
    );
    assert!(stderr(&out).contains(", free 8.0 MiB)"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&output).unwrap(), "the user's old image");
    assert_no_temporary_files(small.path());
}

/// The check passed, then another program filled the disk: our own
/// writes hit ENOSPC and say so in the same words.
#[test]
fn a_disk_filled_midway_fails_cleanly() {
    use std::io::Write;
    let t = TempDir::new().unwrap();
    let input = slow_input(t.path());
    let Some(small) = Tmpfs::mount(&t.path().join("small"), 160 * MIB) else {
        return;
    };
    let output = small.path().join("root.ext4");
    let out = convert_changing_midway(&input, &output, || {
        let mut filler = fs::File::create(small.path().join("filler")).unwrap();
        let block = vec![1u8; MIB as usize];
        while filler.write_all(&block).is_ok() {}
    });
    let needle = format!(
        "{}: no space left on {}",
        output.display(),
        small.path().display()
    );
    assert_fails_cleanly(&out, &needle, &output);
}

/// A compressed qcow2 takes far less space than the data it holds, so the
/// estimate passes and qemu-img finds the disk full: the same error.
#[test]
fn a_compressed_qcow2_that_outgrows_the_disk_fails_cleanly() {
    let t = TempDir::new().unwrap();
    let content = t.path().join("content");
    fs::create_dir(&content).unwrap();
    fs::write(content.join("text"), "coLinux ".repeat(3 << 20)).unwrap();
    let raw = t.path().join("root.img");
    blank(&raw, 40 * MIB);
    sh(
        "mke2fs",
        &[&"-q", &"-F", &"-t", &"ext4", &"-d", &content, &raw],
        None,
    );
    let qcow2 = t.path().join("root.qcow2");
    sh(
        "qemu-img",
        &[
            &"convert", &"-c", &"-f", &"raw", &"-O", &"qcow2", &raw, &qcow2,
        ],
        None,
    );
    let Some(small) = Tmpfs::mount(&t.path().join("small"), 8 * MIB) else {
        return;
    };
    let output = small.path().join("root.ext4");
    let out = xtask(&[&"convert", &qcow2, &output]);
    let needle = format!(
        "{}: no space left on {}",
        output.display(),
        small.path().display()
    );
    assert_fails_cleanly(&out, &needle, &output);
}

/// A filesystem of `kind` (xfs or btrfs: both share extents) made in a
/// file and mounted over a loop device; unmounted when dropped.
struct Mounted {
    dir: PathBuf,
    _device: Loop,
}

impl Mounted {
    fn new(kind: &str, image: &Path, mib: u64) -> Option<Mounted> {
        blank(image, mib * MIB);
        sh(&format!("mkfs.{kind}"), &[&"-q", &"-f", &image], None);
        let device = Loop::over(image)?;
        let dir = image.with_extension("mnt");
        fs::create_dir_all(&dir).unwrap();
        sh("mount", &[&device.0, &dir], None);
        Some(Mounted {
            dir,
            _device: device,
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

/// How many of `file`'s extents `filefrag -v` flags as shared.
fn shared_extents(file: &Path) -> usize {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "filefrag: {}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("shared"))
        .count()
}

/// On XFS and btrfs a partition on a block boundary is shared with the
/// output (a reflink: no data copied, no space used); at sector 63 it is
/// copied as everywhere else. Either way the output is dd's extraction.
#[test]
fn on_xfs_and_btrfs_an_aligned_partition_is_shared_not_copied() {
    let t = tempfile::tempdir().unwrap();
    // mkfs.xfs wants 300 MiB at least; the files are sparse.
    for kind in ["xfs", "btrfs"] {
        let Some(fs_mount) = Mounted::new(kind, &t.path().join(format!("{kind}.img")), 512) else {
            return;
        };
        let dir = &fs_mount.dir;
        let root = ext4(dir, "root", 48);
        let fs_len = fs::metadata(&root).unwrap().len();
        let aligned = dir.join("aligned.img");
        mbr_disk(&root, &aligned, 64);
        let before = used_bytes(dir);
        let out = convert_matches_dd(&aligned, &[], MIB, fs_len);
        assert!(
            shared_extents(&out) > 0,
            "{kind}: no shared extent in the output"
        );
        assert!(
            used_bytes(dir) < before + 4 * MIB,
            "{kind}: the shared output took space"
        );
        let said = stderr(&xtask(&[&"convert", &"--force", &aligned, &out]));
        assert!(said.contains("a reflink, no data copied"), "{kind}: {said}");

        // Sector 63 is no block boundary: a copy.
        let odd = dir.join("odd.img");
        blank(&odd, 64 * MIB);
        let sectors = fs_len / 512;
        sh(
            "sfdisk",
            &[&"-q", &odd],
            Some(&format!("start=63, size={sectors}, type=83\n")),
        );
        embed(&root, &odd, 63 * 512);
        let copied = convert_matches_dd(&odd, &[], 63 * 512, fs_len);
        assert_eq!(shared_extents(&copied), 0, "{kind}: sector 63 shared");
    }
}

/// Bytes in use on the filesystem holding `dir`.
fn used_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=used", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df prints the bytes used")
}
