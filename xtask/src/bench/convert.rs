//! `cargo xtask bench convert`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::{compare, measure};

#[derive(clap::Args)]
pub struct Args {
    /// Size of the disk image, in GiB.
    #[arg(long, default_value_t = 4)]
    size_gib: u64,
    /// How full the filesystem is, as a fraction.
    #[arg(long, default_value_t = 0.4)]
    fill: f64,
    /// Timed runs per tool; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the fixture and outputs live (the fixture is reused between runs).
    #[arg(long, default_value = "target/bench/convert")]
    dir: PathBuf,
    /// Only the comparison on XFS and btrfs, where ours shares extents.
    #[arg(long)]
    shared_only: bool,
}

const SKIP_SECTORS: u64 = 63;
const SKIP: u64 = SKIP_SECTORS * 512;

struct Fixture {
    disk: PathBuf,
    qcow2: PathBuf,
    /// The partition's bytes as a file of its own: the `cp` limit's input.
    bare: PathBuf,
    part_len: u64,
}

pub fn run(args: Args) -> Result<()> {
    let sh = Shell::new()?;
    std::fs::create_dir_all(&args.dir)?;
    let fx = fixture(&sh, &args)?;
    if !args.shared_only {
        sector_63(&sh, &args, &fx)?;
    }
    if crate::stage::is_root() {
        for kind in ["xfs", "btrfs"] {
            shared(&sh, &args, &fx, kind)?;
        }
    } else {
        println!("\non XFS and btrfs (reflinks): needs root, for the loop devices");
    }
    Ok(())
}

/// The usual case: a partition at sector 63 (no block boundary) on this
/// machine's filesystem, ours against dd, qemu-img and cp.
fn sector_63(sh: &Shell, args: &Args, fx: &Fixture) -> Result<()> {
    let out = args.dir.join("out.img");
    let exe = std::env::current_exe()?;
    let json = images::qemu::range_source(&fx.disk, "raw", SKIP, fx.part_len);
    let (disk, qcow2, bare, n) = (
        fx.disk.display().to_string(),
        fx.qcow2.display().to_string(),
        fx.bare.display().to_string(),
        fx.part_len,
    );
    let o = out.display().to_string();
    let ours = exe.display().to_string();
    let tools: Vec<(&str, Vec<String>)> = vec![
        (
            "ours: cargo xtask convert",
            vec![
                ours.clone(),
                "convert".into(),
                "--force".into(),
                disk.clone(),
                o.clone(),
            ],
        ),
        ("dd bs=4M skip_bytes,count_bytes", dd(&disk, &o, SKIP, n)),
        // qemu-img dd counts `count` from the start of the input, not from `skip`.
        (
            "qemu-img dd",
            vec![
                "qemu-img".into(),
                "dd".into(),
                "-f".into(),
                "raw".into(),
                "-O".into(),
                "raw".into(),
                "bs=512".into(),
                format!("if={disk}"),
                format!("of={o}"),
                format!("skip={SKIP_SECTORS}"),
                format!("count={}", SKIP_SECTORS + n / 512),
            ],
        ),
        (
            "qemu-img convert json:raw offset",
            qemu_img_convert(json, &o),
        ),
        (
            "cp --sparse=always (limit)",
            vec![
                "cp".into(),
                "--sparse=always".into(),
                bare.clone(),
                o.clone(),
            ],
        ),
        (
            "ours, qcow2 input",
            vec![ours, "convert".into(), "--force".into(), qcow2, o.clone()],
        ),
    ];
    println!(
        "disk {} GiB, partition at sector 63, {} bytes, filesystem {:.0}% full; median of {} runs",
        args.size_gib,
        n,
        args.fill * 100.0,
        args.runs
    );
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "tool", "seconds", "+ sync", "MB/s", "peak RSS", "allocated"
    );
    let mut medians = Vec::new();
    for (name, argv) in &tools {
        // qemu-img dd needs bs=512 for a sector-63 offset and crawls: once is enough.
        let runs = if name.starts_with("qemu-img dd") {
            1
        } else {
            args.runs
        };
        let (median, rss) = time_median(sh, argv, runs, &out, &args.dir)?;
        let meta = std::fs::metadata(&out)?;
        if meta.len() != n {
            bail!("{name} wrote {} bytes, not the partition's {n}", meta.len());
        }
        if name.starts_with("ours") {
            compare(&out, &fx.bare)
                .with_context(|| format!("{name} output differs from the partition"))?;
        }
        println!(
            "{:<34} {:>9.3} {:>9.3} {:>9.0} {:>6} MiB {:>8} MiB",
            name,
            median.0,
            median.1,
            n as f64 / median.0 / 1e6,
            rss / 1024,
            (meta.blocks() * 512) >> 20
        );
        medians.push((median.0, median.1, rss));
    }
    let ratio = |i: usize, durable: bool| {
        let pick = |m: &(f64, f64, u64)| if durable { m.1 } else { m.0 };
        pick(&medians[i]) / pick(&medians[0])
    };
    println!();
    println!("ratios (page cache / durable after sync); above 1 means ours is faster");
    println!(
        "dd / ours               = {:5.2}x / {:5.2}x  (goal >= 2)",
        ratio(1, false),
        ratio(1, true)
    );
    println!(
        "qemu-img dd / ours      = {:5.2}x / {:5.2}x",
        ratio(2, false),
        ratio(2, true)
    );
    println!(
        "qemu-img convert / ours = {:5.2}x / {:5.2}x  (goal >= 1)",
        ratio(3, false),
        ratio(3, true)
    );
    println!(
        "cp --sparse / ours      = {:5.2}x / {:5.2}x  (goal >= 0.67)",
        ratio(4, false),
        ratio(4, true)
    );
    println!(
        "ours qcow2 / ours raw   = {:5.2}x / {:5.2}x  (time: qcow2 goes through qemu-img)",
        ratio(5, false),
        ratio(5, true)
    );
    println!(
        "peak RSS of ours        = {} MiB (goal < 64)",
        medians[0].2 / 1024
    );
    let _ = std::fs::remove_file(&out);
    Ok(())
}

/// Where a filesystem can share extents (XFS, btrfs): a filesystem of
/// `kind` made in a file and loop-mounted, holding the same partition at
/// sector 2048 (a block boundary); ours
/// against dd, qemu-img convert and `cp --reflink=always` of the bare
/// partition, all writing on that filesystem.
fn shared(sh: &Shell, args: &Args, fx: &Fixture, kind: &str) -> Result<()> {
    let image = args.dir.join(format!("{kind}.fs"));
    let mnt = args.dir.join(kind);
    let _ = cmd!(sh, "umount {mnt}")
        .quiet()
        .ignore_status()
        .ignore_stderr()
        .run();
    let _ = std::fs::remove_file(&image);
    File::create(&image)?.set_len(3 * (args.size_gib << 30))?;
    cmd!(sh, "mkfs.{kind} -q -f {image}").run()?;
    std::fs::create_dir_all(&mnt)?;
    cmd!(sh, "mount -o loop {image} {mnt}").run()?;
    let result = shared_in(sh, args, fx, kind, &mnt);
    cmd!(sh, "umount {mnt}").run()?;
    std::fs::remove_file(&image)?;
    result
}

fn shared_in(
    sh: &Shell,
    args: &Args,
    fx: &Fixture,
    kind: &str,
    mnt: &std::path::Path,
) -> Result<()> {
    const START: u64 = 2048 * 512;
    let (disk, bare, out) = (
        mnt.join("disk.img"),
        mnt.join("partition.img"),
        mnt.join("out.img"),
    );
    let n = fx.part_len;
    let src = &fx.bare;
    cmd!(sh, "cp --sparse=always {src} {bare}").run()?;
    File::create(&disk)?.set_len(START + n)?;
    let sectors = n / 512;
    cmd!(sh, "sfdisk -q {disk}")
        .stdin(format!("start=2048, size={sectors}, type=83\n"))
        .run()?;
    let seek = START.to_string();
    cmd!(
        sh,
        "dd if={bare} of={disk} bs=4M seek={seek} oflag=seek_bytes conv=notrunc,sparse status=none"
    )
    .run()?;
    let (d, b, o) = (
        disk.display().to_string(),
        bare.display().to_string(),
        out.display().to_string(),
    );
    let exe = std::env::current_exe()?.display().to_string();
    let json = images::qemu::range_source(&disk, "raw", START, n);
    let tools: Vec<(&str, Vec<String>)> = vec![
        (
            "ours: cargo xtask convert",
            vec![
                exe,
                "convert".into(),
                "--force".into(),
                d.clone(),
                o.clone(),
            ],
        ),
        ("dd bs=4M skip_bytes,count_bytes", dd(&d, &o, START, n)),
        (
            "qemu-img convert json:raw offset",
            qemu_img_convert(json, &o),
        ),
        (
            "cp --reflink=always (bare)",
            vec!["cp".into(), "--reflink=always".into(), b, o.clone()],
        ),
    ];
    println!("\non {kind}, partition at sector 2048 (a block boundary), the same filesystem; median of {} runs", args.runs);
    println!(
        "{:<34} {:>9} {:>9} {:>12}",
        "tool", "seconds", "+ sync", "allocated"
    );
    let mut medians = Vec::new();
    for (name, argv) in &tools {
        let (median, _) = time_median(sh, argv, args.runs, &out, &args.dir)?;
        if name.starts_with("ours") {
            compare(&out, &bare)
                .with_context(|| format!("{name} on {kind}: the output differs"))?;
        }
        let meta = std::fs::metadata(&out)?;
        println!(
            "{:<34} {:>9.3} {:>9.3} {:>8} MiB",
            name,
            median.0,
            median.1,
            (meta.blocks() * 512) >> 20
        );
        medians.push(median);
    }
    let ours = medians[0].1.max(1e-6);
    println!(
        "durable: dd / ours = {:.0}x, qemu-img convert / ours = {:.0}x, cp --reflink / ours = {:.2}x (goal: ours <= 0.2 s: {:.3} s)",
        medians[1].1 / ours,
        medians[2].1 / ours,
        medians[3].1 / ours,
        medians[0].1
    );
    Ok(())
}

/// The tool run `runs` times, each writing `out` anew after a sync: the
/// median of (seconds, seconds + the sync that writes back what it left
/// dirty, part of its cost), and its peak RSS in KiB.
fn time_median(
    sh: &Shell,
    argv: &[String],
    runs: usize,
    out: &std::path::Path,
    dir: &std::path::Path,
) -> Result<((f64, f64), u64)> {
    let mut times = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let _ = std::fs::remove_file(out);
        cmd!(sh, "sync").quiet().run()?;
        let (secs, max_rss) = measure(&argv[0], &argv[1..], dir)?;
        let (sync_secs, _) = measure("sync", &[], dir)?;
        times.push((secs, secs + sync_secs));
        rss = rss.max(max_rss);
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok((times[times.len() / 2], rss))
}

/// dd extracting `count` bytes at byte `skip` of `input` into `output`.
fn dd(input: &str, output: &str, skip: u64, count: u64) -> Vec<String> {
    vec![
        "dd".into(),
        format!("if={input}"),
        format!("of={output}"),
        "bs=4M".into(),
        "iflag=skip_bytes,count_bytes".into(),
        format!("skip={skip}"),
        format!("count={count}"),
    ]
}

/// qemu-img convert of a `json:` range source (`images::qemu::range_source`).
fn qemu_img_convert(source: String, output: &str) -> Vec<String> {
    ["qemu-img", "convert", "-O", "raw"]
        .map(String::from)
        .into_iter()
        .chain([source, output.to_string()])
        .collect()
}

/// Builds (once) a disk with an MBR partition at sector 63 holding an ext4
/// filesystem `fill` full of incompressible data, plus its qcow2 twin.
fn fixture(sh: &Shell, args: &Args) -> Result<Fixture> {
    let dir = &args.dir;
    let disk_len = args.size_gib << 30;
    let part_len = disk_len - SKIP;
    let fx = Fixture {
        disk: dir.join("disk.img"),
        qcow2: dir.join("disk.qcow2"),
        bare: dir.join("partition.img"),
        part_len,
    };
    let stamp = dir.join("fixture.done");
    let want = format!("{} {}\n", args.size_gib, args.fill);
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        return Ok(fx);
    }
    let _ = std::fs::remove_file(&stamp);
    tracing::info!("bench: building the fixture in {} (once)", dir.display());
    let content = dir.join("content");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(&content)?;
    let file_len = 64u64 << 20;
    let files = ((part_len as f64 * args.fill) as u64).div_ceil(file_len);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..files {
        let mut w = BufWriter::new(File::create(content.join(format!("data{i:04}")))?);
        for _ in 0..file_len / buf.len() as u64 {
            for word in buf.chunks_exact_mut(8) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                word.copy_from_slice(&rng.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        w.flush()?;
    }
    let (bare, disk, qcow2) = (&fx.bare, &fx.disk, &fx.qcow2);
    let _ = std::fs::remove_file(bare);
    File::create(bare)?.set_len(part_len)?;
    cmd!(sh, "mke2fs -q -F -t ext4 -d {content} {bare}").run()?;
    std::fs::remove_dir_all(&content)?;
    let _ = std::fs::remove_file(disk);
    File::create(disk)?.set_len(disk_len)?;
    cmd!(sh, "sfdisk -q {disk}")
        .stdin(format!("start={SKIP_SECTORS}, type=83\n"))
        .run()?;
    let skip = SKIP.to_string();
    cmd!(
        sh,
        "dd if={bare} of={disk} bs=4M seek={skip} oflag=seek_bytes conv=notrunc,sparse status=none"
    )
    .run()?;
    let _ = std::fs::remove_file(qcow2);
    cmd!(sh, "qemu-img convert -f raw -O qcow2 {disk} {qcow2}").run()?;
    std::fs::write(&stamp, want)?;
    Ok(fx)
}
